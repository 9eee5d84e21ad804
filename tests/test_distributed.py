"""Standardizing a folder tree on a Dask cluster gives the bytes of the local run on the same torch thread count, and
resumes the same way."""

from __future__ import annotations

import pickle
import shutil

import pytest

from diffusionct.errors import InputError


def _tree(tiny_data, root):
    for case in (0, 1, 2):
        shutil.copytree(tiny_data.parent / f"case_{case:03d}" / "2mm" / "sim_b30", root / f"case{case}" / "b30")
    return root


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_local_cluster_of_two_workers_writes_the_local_bytes(tiny_data, tiny_model, tmp_path):
    pytest.importorskip("distributed")
    from diffusionct.standardize_runs import run_standardize

    import torch

    tree = _tree(tiny_data, tmp_path / "tree")
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // 2))  # what each of local:2's workers runs on
    try:
        local = run_standardize(tree, tmp_path / "local", model_dir=tiny_model, device="cpu", seed=2)
    finally:
        torch.set_num_threads(threads)
    remote = run_standardize(tree, tmp_path / "dask", model_dir=tiny_model, device="cpu", seed=2, scheduler="local:2")
    assert [r.output.relative_to(tmp_path / "dask") for r in remote] == [r.output.relative_to(tmp_path / "local") for r in local]
    assert len(remote) == 3 and not any(r.skipped for r in remote)
    assert _files(tmp_path / "dask") == _files(tmp_path / "local")
    shutil.rmtree(remote[1].output)  # a stopped run: the cluster run resumes like the local one
    again = run_standardize(tree, tmp_path / "dask", model_dir=tiny_model, device="cpu", seed=2, scheduler="local:2")
    assert [r.skipped for r in again] == [True, False, True]
    assert _files(tmp_path / "dask") == _files(tmp_path / "local")


def test_bad_scheduler_is_a_clean_error(tiny_data, tiny_model, tmp_path):
    pytest.importorskip("distributed")
    from diffusionct.errors import DiffusionCTError
    from diffusionct.standardize_runs import run_standardize

    tree = _tree(tiny_data, tmp_path / "tree")
    with pytest.raises(DiffusionCTError, match="--scheduler must be an address"):
        run_standardize(tree, tmp_path / "out", model_dir=tiny_model, device="cpu", scheduler="somewhere")
    assert not (tmp_path / "out").exists()


def test_input_error_survives_pickling():
    error = pickle.loads(pickle.dumps(InputError("/data/x.dcm", "truncated")))
    assert isinstance(error, InputError) and str(error) == "/data/x.dcm: truncated" and error.problem == "truncated"


def test_local_workers_share_the_cores_instead_of_each_taking_them_all(tiny_data, tiny_model, tmp_path, monkeypatch):
    """local:N divides the planner's torch threads among the N worker processes; a cluster's address keeps them."""
    import torch

    import diffusionct.distributed as distributed
    from diffusionct.errors import DiffusionCTError
    from diffusionct.standardize_runs import run_standardize

    seen = {}
    monkeypatch.setattr(distributed, "run_on_cluster", lambda jobs, scheduler, task: seen.setdefault(scheduler, jobs) and [])
    tree = _tree(tiny_data, tmp_path / "tree")
    threads = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        for scheduler in ("local:2", "local:8", "tcp://127.0.0.1:8786"):
            run_standardize(tree, tmp_path / scheduler.replace(":", "_").replace("/", ""), model_dir=tiny_model, device="cpu",
                            scheduler=scheduler)
    finally:
        torch.set_num_threads(threads)
    assert [{job.torch_threads for job in seen[s]} for s in ("local:2", "local:8", "tcp://127.0.0.1:8786")] == [{2}, {1}, {4}]
    with pytest.raises(DiffusionCTError, match="local:N needs a number"):
        run_standardize(tree, tmp_path / "bad", model_dir=tiny_model, device="cpu", scheduler="local:x")
