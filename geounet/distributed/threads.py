"""The torch-thread rules of a run: cores, worker counts and torch threads per Dask thread.

Every place that runs chunks sizes its threads here, so Dask threads x torch threads never
exceed the cores: local worker processes (:func:`configure_threads`, run on each by
:func:`geounet.distributed.cluster.get_client`), workers of a remote cluster
(:func:`set_torch_threads`, run by the model's worker plugin) and the in-process threaded
scheduler (:func:`geounet.distributed.cluster.scheduler`, which restores the previous count
on exit). Nothing here imports ``distributed``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from geounet.errors import InputError

log = logging.getLogger(__name__)


def available_cores() -> int:
    """Cores this process may use (CPU affinity where the OS reports it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_workers(device: str = "auto") -> int:
    """Worker processes of a local cluster: one per CUDA run, else one per core, at most 4
    (each gets cores // workers torch threads).

    On the 2-core development machine 2 workers x 1 torch thread segmented a 4096² scene
    16-19% faster than 1 worker x 2 threads (``benchmarks/bench_threads.py``): chunk I/O,
    normalization and writing overlap with the other worker's forward pass, and one-thread
    convolutions scale better than two threads splitting one. The cap bounds memory (each
    worker holds the model and its chunk's buffers).

    Examples
    --------
    >>> default_workers("cuda:0")
    1
    """
    if device.startswith("cuda"):
        return 1
    return max(1, min(4, available_cores()))


def torch_threads_per_worker(workers: int, threads_per_worker: int = 1) -> int:
    """Torch threads each worker thread gets so that workers never oversubscribe the cores."""
    return max(1, available_cores() // max(1, workers * threads_per_worker))



def configure_threads(threads_per_worker: int = 1, workers: int = 1) -> int:
    """Set torch's intra-op threads so Dask threads x torch threads <= the cores.

    Call once in each worker process (:func:`get_client` runs it on every worker). With
    ``workers`` worker processes of ``threads_per_worker`` Dask threads each on a machine
    with ``C`` cores, every task gets ``max(1, C // (workers * threads_per_worker))`` torch
    threads (:func:`set_torch_threads`'s rule; ``OMP_NUM_THREADS`` is not consulted). Returns
    that number.

    Examples
    --------
    >>> configure_threads(threads_per_worker=1, workers=1) >= 1
    True
    """
    if threads_per_worker < 1 or workers < 1:
        raise InputError(
            f"threads_per_worker {threads_per_worker} / workers {workers} must be >= 1."
        )
    # not OMP_NUM_THREADS here: a LocalCluster's nanny leaves OMP_NUM_THREADS=1 in the
    # client process, which would starve the in-process ("synchronous") runs
    threads = set_torch_threads(workers * threads_per_worker, honour_env=False)
    log.debug("torch threads set to %d", threads)
    return threads



def set_torch_threads(host_threads: int, *, honour_env: bool = True) -> int:
    """Give each Dask thread ``cores // host_threads`` torch threads; return that number.

    Run on a worker (by :class:`GeounetPlugin`, and by :func:`get_client` on a local
    cluster). With ``honour_env``, ``OMP_NUM_THREADS`` set on the worker (a user's explicit
    choice, or the local cluster's) wins. The one torch-thread rule of geounet.
    """
    import torch

    explicit = os.environ.get("OMP_NUM_THREADS", "")
    threads = (int(explicit) if honour_env and explicit.isdigit() and int(explicit) > 0
               else torch_threads_per_worker(host_threads))
    torch.set_num_threads(threads)
    return threads


@contextlib.contextmanager
def environment_kept() -> Iterator[None]:
    """Restore this process's environment variables on exit: a local cluster's nanny sets
    ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and
    ``MALLOC_TRIM_THRESHOLD_`` for its workers in the process that starts it."""
    before = dict(os.environ)
    try:
        yield
    finally:
        for name in set(os.environ) - set(before):
            del os.environ[name]
        for name, value in before.items():
            if os.environ.get(name) != value:
                os.environ[name] = value
