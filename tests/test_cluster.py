"""The one place geounet makes a Dask cluster: worker counts and torch threads (and that a
run leaves this process's settings as it found them)."""

from __future__ import annotations

import pytest

from geounet.distributed import cluster, threads
from geounet.distributed.local import InProcess


def test_default_workers_one_per_core_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    for cores, expected in ((1, 1), (2, 2), (3, 3), (16, 4)):
        monkeypatch.setattr(threads, "available_cores", lambda cores=cores: cores)
        assert threads.default_workers("cpu") == expected
        assert threads.default_workers("cuda:0") == 1
        workers = threads.default_workers("cpu")
        assert workers * threads.torch_threads_per_worker(workers) <= max(cores, workers)


def test_configure_threads_never_oversubscribes(monkeypatch) -> None:
    """One torch-thread rule for local and remote workers: cores // Dask threads (a worker's
    OMP_NUM_THREADS wins)."""
    import torch

    old = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        cores = threads.available_cores()
        assert threads.set_torch_threads(2) == max(1, cores // 2) == torch.get_num_threads()
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # on a worker: the user's choice wins
        assert threads.set_torch_threads(2) == 1 == torch.get_num_threads()
        # in the client process it may be distributed's leftover: all cores in-process
        assert threads.configure_threads(1, 1) == cores == torch.get_num_threads()
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert threads.configure_threads(1, 1) == cores == torch.get_num_threads()
        n = threads.configure_threads(threads_per_worker=2, workers=1)
        assert n == max(1, cores // 2) and n * 2 <= max(cores, 2)
        assert threads.configure_threads(threads_per_worker=4, workers=4) == 1
    finally:
        torch.set_num_threads(old)


@pytest.mark.cluster
def test_local_cluster_never_has_more_workers_than_tasks() -> None:
    import torch

    with cluster.scheduler(None, workers=1, tasks=1) as client:
        assert len(client.scheduler_info()["workers"]) == 1
        counts = client.run(torch.get_num_threads)
        assert list(counts.values()) == [threads.available_cores()]


def test_default_local_run_uses_threads_in_this_process() -> None:
    """Issue 11, fixed cost: a predict run without --workers runs its chunk tasks on Dask's
    threaded scheduler in this process, one thread per default worker (at most the tasks),
    each with cores // threads torch threads; no worker process starts."""
    import threading
    import time

    import torch

    old = torch.get_num_threads()
    expected = min(threads.default_workers(), 5)
    seen: set[int] = set()

    def task(_: int) -> int:
        seen.add(threading.get_ident())
        time.sleep(0.2)
        return 1

    try:
        with cluster.scheduler(None, tasks=5) as on:
            assert on == (InProcess(expected) if expected > 1 else InProcess(synchronous=True))
            assert torch.get_num_threads() == max(1, threads.available_cores() // expected)
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
            assert on == InProcess(synchronous=True)
            assert torch.get_num_threads() == threads.available_cores()
            records = cluster.run_tasks(sum, [[1, 2]], on)
        assert records == [3]
    finally:
        torch.set_num_threads(old)


def _settings() -> tuple[int, dict, dict]:
    """This process's torch threads, Dask config and environment, as a run must leave them."""
    import copy
    import os

    import dask
    import torch

    return torch.get_num_threads(), copy.deepcopy(dask.config.config), dict(os.environ)


@pytest.mark.parametrize("tasks", [1, 5])
def test_in_process_run_restores_torch_threads_and_dask_config(tasks: int) -> None:
    """scheduler() sets cores // threads torch threads and Dask's num_workers for its run
    only: afterwards this process has its own settings back (issue 18, bounded state)."""
    import dask
    import torch

    old = torch.get_num_threads()
    odd = threads.available_cores() + 1  # more than any run picks
    torch.set_num_threads(odd)
    try:
        before = _settings()
        with cluster.scheduler(None, tasks=tasks) as on:
            inside = torch.get_num_threads(), dask.config.get("num_workers", None)
            assert cluster.run_tasks(sum, [[1, 2]] * tasks, on) == [3] * tasks
        expected = min(threads.default_workers(), tasks)
        assert inside[0] == max(1, threads.available_cores() // expected) != odd
        assert inside[1] == (expected if expected > 1 else None)
        assert _settings() == before
    finally:
        torch.set_num_threads(old)


@pytest.mark.cluster
def test_local_cluster_leaves_this_process_environment_unchanged() -> None:
    """A local cluster's nanny sets OMP_NUM_THREADS=1 (and friends) in the process that starts
    it; scheduler() puts the environment, torch threads and Dask config back on exit."""
    import distributed  # noqa: F401  (its defaults join Dask's config on import)

    before = _settings()
    with cluster.scheduler(None, workers=1) as client:
        assert cluster.run_tasks(sum, [[1, 2]], client) == [3]
    assert _settings() == before
