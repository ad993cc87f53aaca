"""The one place geounet creates a Dask client or cluster, and runs a list of chunk tasks on it.

A local run is a cluster of one machine: worker processes on this host, each with a share of
the cores for torch. A remote run connects to a ``dask.distributed`` scheduler by address and
runs the very same tasks. For tests and debugging, Dask's threaded or synchronous scheduler
runs them in this process.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, Sequence, Union, get_args

from geounet.errors import InputError

if TYPE_CHECKING:
    from dask.delayed import Delayed
    from distributed import Client

log = logging.getLogger(__name__)

LocalScheduler = Literal["threads", "synchronous"]
"""In-process Dask schedulers, for tests and debugging (the model is loaded once per process)."""

SchedulerLike = Union["Client", str, None]
"""What ``client=`` accepts: a ``distributed.Client``, a scheduler address
(``tcp://host:8786``), ``"threads"`` / ``"synchronous"``, or None for a local cluster."""


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
    threads. Returns that number.

    Examples
    --------
    >>> configure_threads(threads_per_worker=1, workers=1) >= 1
    True
    """
    import torch

    if threads_per_worker < 1 or workers < 1:
        raise InputError(
            f"threads_per_worker {threads_per_worker} / workers {workers} must be >= 1."
        )
    threads = torch_threads_per_worker(workers, threads_per_worker)
    torch.set_num_threads(threads)
    log.debug("torch threads set to %d", threads)
    return threads


def get_client(
    workers: int | None = None,
    threads_per_worker: int = 1,
    address: str | None = None,
    *,
    device: str = "auto",
) -> Client:
    """Create a ``distributed.Client``: on a new local cluster, or connected to ``address``.

    Parameters
    ----------
    workers : worker processes of the local cluster (default: :func:`default_workers`).
    threads_per_worker : Dask threads per worker; each gets
        ``cores // (workers * threads_per_worker)`` torch threads.
    address : a running scheduler (``tcp://host:8786``); its workers keep their own settings.
    device : the compute device, used to pick the default worker count.

    Examples
    --------
    >>> client = get_client(workers=2)  # doctest: +SKIP
    >>> client.close(); client.cluster.close()  # doctest: +SKIP
    """
    from distributed import Client, LocalCluster

    if address is not None:
        log.info("connecting to Dask scheduler %s", address)
        try:
            return Client(address, timeout="30s")
        except (OSError, TimeoutError) as exc:
            raise InputError(
                f"cannot reach the Dask scheduler at {address!r} ({exc}); check the address "
                "(e.g. tcp://host:8786) and that the scheduler is running."
            ) from exc
    if workers is not None and workers < 1:
        raise InputError(f"workers={workers} is not positive; use 1 or more worker processes.")
    if threads_per_worker < 1:
        raise InputError(
            f"threads_per_worker={threads_per_worker} is not positive; use 1 or more."
        )
    workers = workers or default_workers(device)
    torch_threads = torch_threads_per_worker(workers, threads_per_worker)
    log.info(
        "starting a local cluster: %d worker process(es) x %d thread(s), %d torch thread(s) each",
        workers, threads_per_worker, torch_threads,
    )
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=threads_per_worker,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
        env={"OMP_NUM_THREADS": str(torch_threads), "MKL_NUM_THREADS": str(torch_threads)},
    )
    client = Client(cluster)
    client.run(configure_threads, threads_per_worker, workers)  # OMP_NUM_THREADS covers restarts
    return client


@contextlib.contextmanager
def scheduler(
    client: SchedulerLike = None,
    *,
    workers: int | None = None,
    device: str = "auto",
    tasks: int | None = None,
) -> Iterator[Client | LocalScheduler]:
    """Yield what :func:`run_tasks` runs on; a cluster or client made here is closed on exit.

    ``client`` may be a ``distributed.Client`` (used as is, left open), a scheduler address,
    ``"threads"`` / ``"synchronous"`` (in-process), or None (a new local cluster). A new local
    cluster gets ``workers`` processes, by default :func:`default_workers` but never more than
    ``tasks`` (an idle worker would only take cores from the busy ones' torch threads).
    When that leaves one worker and ``workers`` was not given (a scene of one chunk, or a CUDA
    run), the same delayed chunk tasks run in this process (``"synchronous"``, torch threads =
    cores): no worker process to start, no second model load, and the loaded model is reused
    by the next run in this process (issue 11: fixed cost per run).
    """
    if client is None or (isinstance(client, str) and client not in get_args(LocalScheduler)):
        if workers is None and client is None and tasks is not None:
            if max(1, min(default_workers(device), tasks)) == 1:
                configure_threads(1, 1)
                yield "synchronous"
                return
            workers = max(1, min(default_workers(device), tasks))
        made = get_client(workers=workers, address=client, device=device)
        try:
            yield made
        finally:
            cluster = made.cluster
            made.close()
            if cluster is not None:
                cluster.close()
        return
    yield client


def run_tasks(
    tasks: Sequence[Delayed],
    on: Client | LocalScheduler,
    *,
    workers: int | None = None,
    on_result: Callable[[Any], None] | None = None,
) -> list[Any]:
    """Compute independent Dask tasks and call ``on_result`` as each one finishes.

    Results are returned in completion order. On the first failing task the others are
    cancelled and its exception is raised.
    """
    if not tasks:
        return []
    results: list[Any] = []

    def record(value: Any) -> None:
        results.append(value)
        if on_result is not None:
            on_result(value)

    if isinstance(on, str):
        import dask
        from dask.callbacks import Callback

        keys = {task.key for task in tasks}

        class _Done(Callback):
            def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, id: Any) -> None:
                if key in keys:
                    record(result)

        kwargs: dict[str, Any] = {"scheduler": on}
        if on == "threads":
            kwargs["num_workers"] = workers or 1
        with _Done():
            dask.compute(*tasks, **kwargs)
        return results

    from distributed import as_completed

    futures = on.compute(list(tasks))
    try:
        for future in as_completed(futures):
            record(future.result())
    except BaseException:
        on.cancel(futures)
        raise
    return results
