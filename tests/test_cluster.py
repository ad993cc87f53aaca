"""The one place geounet makes a Dask cluster: worker counts and torch threads."""

from __future__ import annotations

import pytest

from geounet.distributed import cluster


def test_default_workers_one_per_core_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    for cores, expected in ((1, 1), (2, 2), (3, 3), (16, 4)):
        monkeypatch.setattr(cluster, "available_cores", lambda cores=cores: cores)
        assert cluster.default_workers("cpu") == expected
        assert cluster.default_workers("cuda:0") == 1
        workers = cluster.default_workers("cpu")
        assert workers * cluster.torch_threads_per_worker(workers) <= max(cores, workers)


def test_configure_threads_never_oversubscribes(monkeypatch) -> None:
    """One torch-thread rule for local and remote workers: cores // Dask threads (a worker's
    OMP_NUM_THREADS wins)."""
    import torch

    old = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        cores = cluster.available_cores()
        assert cluster.set_torch_threads(2) == max(1, cores // 2) == torch.get_num_threads()
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # on a worker: the user's choice wins
        assert cluster.set_torch_threads(2) == 1 == torch.get_num_threads()
        # in the client process it may be distributed's leftover: all cores in-process
        assert cluster.configure_threads(1, 1) == cores == torch.get_num_threads()
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert cluster.configure_threads(1, 1) == cores == torch.get_num_threads()
        n = cluster.configure_threads(threads_per_worker=2, workers=1)
        assert n == max(1, cores // 2) and n * 2 <= max(cores, 2)
        assert cluster.configure_threads(threads_per_worker=4, workers=4) == 1
    finally:
        torch.set_num_threads(old)


@pytest.mark.cluster
def test_local_cluster_never_has_more_workers_than_tasks() -> None:
    import torch

    with cluster.scheduler(None, workers=1, tasks=1) as client:
        assert len(client.scheduler_info()["workers"]) == 1
        threads = client.run(torch.get_num_threads)
        assert list(threads.values()) == [cluster.available_cores()]


def test_default_local_run_uses_threads_in_this_process() -> None:
    """Issue 11, fixed cost: a predict run without --workers runs its chunk tasks on Dask's
    threaded scheduler in this process, one thread per default worker (at most the tasks),
    each with cores // threads torch threads; no worker process starts."""
    import threading
    import time

    import torch

    old = torch.get_num_threads()
    expected = min(cluster.default_workers(), 5)
    seen: set[int] = set()

    def task(_: int) -> int:
        seen.add(threading.get_ident())
        time.sleep(0.2)
        return 1

    try:
        with cluster.scheduler(None, tasks=5) as on:
            assert on == ("threads" if expected > 1 else "synchronous")
            assert torch.get_num_threads() == max(1, cluster.available_cores() // expected)
            assert cluster.run_tasks(task, list(range(5)), on) == [1] * 5
        assert len(seen) == expected
    finally:
        torch.set_num_threads(old)


def test_one_worker_job_runs_in_process_without_a_cluster() -> None:
    """A local run that would get one worker process (one chunk) runs the same delayed tasks
    in this process: no LocalCluster start (issue 11, fixed cost), torch gets every core."""
    import torch

    old = torch.get_num_threads()
    try:
        with cluster.scheduler(None, tasks=1) as on:
            assert on == "synchronous"
            assert torch.get_num_threads() == cluster.available_cores()
            records = cluster.run_tasks(sum, [[1, 2]], on)
        assert records == [3]
    finally:
        torch.set_num_threads(old)
