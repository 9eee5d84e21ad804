"""Standardizing many series (or describing many tumours) on a Dask cluster: one task per series or tumour.

    diffusionct standardize -i TREE -o OUT --scheduler tcp://HOST:PORT   # an existing cluster
    diffusionct standardize -i TREE -o OUT --scheduler local:4           # 4 worker processes on this machine
    diffusionct features --batch cases.csv -o features.csv --scheduler tcp://HOST:PORT

Every task writes its series atomically with its completion record, exactly as a local run does, so a stopped run
resumes; a failing series fails the command with its error. Each task runs torch on the thread count the planner
chose, so outputs are the bytes of a local run on that many threads: for ``local:N`` this machine's threads divided
among the N workers (N processes of all threads each oversubscribed the cores: 2 workers on 2 cores ran 2x slower
than one), for a cluster's address the planner's own count.
Workers must see the input and output paths (a shared file system on a cluster).
"""

from __future__ import annotations

import logging
from typing import Callable

from diffusionct.errors import DiffusionCTError

log = logging.getLogger(__name__)


def local_workers(scheduler: str | None) -> int | None:
    """N of ``local:N`` (worker processes on this machine), None for no scheduler or a cluster's address."""
    if scheduler is None or not scheduler.startswith("local:"):
        return None
    workers = scheduler.split(":", 1)[1]
    if not workers.isdigit() or int(workers) < 1:
        raise DiffusionCTError(f"--scheduler local:N needs a number of workers N >= 1, got '{scheduler}'")
    return int(workers)


def _client(scheduler: str):
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise DiffusionCTError("--scheduler needs Dask: pip install 'dask[distributed]'") from None
    workers = local_workers(scheduler)
    if workers is not None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        return Client(cluster), cluster
    if not scheduler.startswith(("tcp://", "tls://", "ucx://", "inproc://")):
        raise DiffusionCTError(f"--scheduler must be an address such as tcp://HOST:8786 or local:N, got '{scheduler}'")
    try:
        return Client(scheduler, timeout="30s"), None
    except OSError as exc:
        raise DiffusionCTError(f"cannot reach the Dask scheduler at {scheduler} ({exc})") from None


def run_on_cluster(jobs: list, scheduler: str, task: Callable, unit: str = "series") -> list:
    """``task(job)`` for every job, computed on the cluster (``task`` is pickled to the workers: a module-level
    function, or a partial of one). The caller passes its own task, so this module imports nothing of it; ``unit``
    names the jobs in the log and the progress bar."""
    from distributed import as_completed
    from tqdm import tqdm

    client, cluster = _client(scheduler)
    try:
        log.info("%d %s on %d Dask workers (%s)", len(jobs), unit, len(client.scheduler_info()["workers"]), scheduler)
        futures = client.map(task, jobs, pure=False)
        results = []
        with tqdm(total=len(futures), desc=unit, unit=unit, disable=None) as bar:
            for future in as_completed(futures):
                results.append(future.result())  # re-raises a worker's error here
                bar.update()
        return results
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
