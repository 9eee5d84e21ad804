"""Training in two processes (torchrun's DistributedDataParallel, gloo on CPU): the processes hold the same weights
at the end, and one model folder is written, of those weights."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys

import pytest
import torch

from tests.model_fixtures import TINY_OVERRIDES, tiny_config, tiny_data  # noqa: F401 (a fixture)


def _digest(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _trained_network(method) -> torch.nn.Module:
    return method.network if hasattr(method, "network") else method.model.unet


def _train_as_rank(rank: int, port: int, method_name: str, data, run_dir, out_dir, overwrite: bool) -> None:
    import torch.distributed as dist

    from diffusionct.train.loop import init_distributed
    from diffusionct.train.methods import train_method

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    assert init_distributed()
    try:
        method = train_method(method_name, data, run_dir, tiny_config(), torch.device("cpu"), overwrite=overwrite)
        (out_dir / f"rank{rank}.txt").write_text(_digest(_trained_network(method)))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("method_name, overwrite", [("residual-cnn", False), ("diffusionct", True)])
def test_two_processes_train_one_model(tiny_data, tmp_path, method_name, overwrite):  # noqa: F811 (the fixture)
    """With --overwrite over an earlier run (its checkpoint, which a process must not resume from) too."""
    from diffusionct.methods.registry import load_method
    from diffusionct.train.methods import train_method

    run_dir = tmp_path / "run"
    if overwrite:
        train_method(method_name, tiny_data, run_dir, tiny_config("seed=1"), torch.device("cpu"))
    torch.multiprocessing.spawn(_train_as_rank, args=(_free_port(), method_name, tiny_data, run_dir, tmp_path, overwrite),
                                nprocs=2)
    digests = [(tmp_path / f"rank{rank}.txt").read_text() for rank in (0, 1)]
    assert digests[0] == digests[1]  # gradients averaged across the processes: one set of weights
    assert _digest(_trained_network(load_method(run_dir))) == digests[0]  # the folder holds them
    assert load_method(run_dir).config.seed == 0
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # the earlier run, set aside, is gone


def test_torchrun_trains_with_the_gradients_averaged(tiny_data, tmp_path):  # noqa: F811 (the fixture)
    """The command as a user starts it: torchrun, two CPU processes."""
    from diffusionct.methods.store import load_model
    from diffusionct.train.recipe import train

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
               "-m", "diffusionct.cli", "train", "--data", str(tiny_data), "-o", str(tmp_path / "ddp"), "--device", "cpu"]
    for item in TINY_OVERRIDES:
        command += ["--set", item]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    model = load_model(tmp_path / "ddp")
    # rank 0 draws the same crops as a single process: equal weights would mean no gradient was averaged
    single = train(tiny_data, tmp_path / "single", tiny_config(), phase="all")
    ddp, alone = model.autoencoder.state_dict(), single.autoencoder.state_dict()
    assert any(not torch.allclose(ddp[k], alone[k]) for k in ddp if ddp[k].is_floating_point())
