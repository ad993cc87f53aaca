"""The one place geounet creates a Dask client or cluster, and runs a list of chunk tasks on it.

A local run is a cluster of one machine: worker processes on this host, each with a share of
the cores for torch. A remote run connects to a ``dask.distributed`` scheduler by address and
runs the very same tasks. For tests and debugging, Dask's threaded or synchronous scheduler
runs them in this process.

Which one a run uses is a :data:`~geounet.distributed.schedulers.Scheduler`, chosen once from
what the caller passed (:func:`~geounet.distributed.schedulers.choose_scheduler`: an explicit
scheduler address, else the standard ``DASK_SCHEDULER_ADDRESS`` environment variable (or Dask's
``scheduler-address`` config), else this machine); :func:`scheduler` and :func:`job_client`
switch on its type. At connect the client, scheduler and
worker versions are compared (:func:`check_versions`), and the model reaches every worker as
bytes (:func:`ship_model`: a worker plugin, :class:`GeounetPlugin`), never as a client path.

Failures: a task that raises a non-user error (:class:`~geounet.errors.TransientError`, any
other exception) is rerun by Dask up to :attr:`RetryPolicy.task_retries` times, and the task
itself retries its reads and writes with backoff (:attr:`RetryPolicy.attempts`). A lost
worker's tasks are rerun elsewhere by the scheduler (``distributed.scheduler.allowed-failures``).

Examples
--------
>>> with scheduler("tcp://127.0.0.1:8786") as client:  # doctest: +SKIP
...     sha = ship_model(client, "model.pt")
...     run_tasks(run_chunk_task, chunk_tasks, client)
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geounet.distributed.local import InProcess, in_this_process, run_in_process
from geounet.distributed.schedulers import (
    Default,
    GivenClient,
    LocalProcesses,
    Remote,
    SchedulerLike,
    Synchronous,
    Threads,
    choose_scheduler,
)
from geounet.distributed.threads import (
    configure_threads,
    default_workers,
    environment_kept,
    set_torch_threads,
    torch_threads_per_worker,
)
from geounet.distributed.versions import check_versions
from geounet.errors import ClusterError, GeounetError, InputError, TransientError

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class RetryPolicy:
    """How often transient failures are retried before a run stops (its chunks kept).

    Attributes
    ----------
    attempts : tries of one chunk's reads and writes inside its task (backoff between them).
    backoff : seconds before the second try, doubled for each further one.
    task_retries : reruns of a failed task by Dask (on any worker) after its own tries.
    """

    attempts: int = 3
    backoff: float = 0.5
    task_retries: int = 2

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based)."""
        return self.backoff * (2 ** (attempt - 1))


DEFAULT_RETRY = RetryPolicy()
"""The retry policy of every run (read at run time)."""


def connect(address: str, *, timeout: str = "30s") -> Client:
    """Connect to a running scheduler, check versions and log its dashboard link.

    Raises
    ------
    ClusterError
        The scheduler cannot be reached, or versions differ (see :func:`check_versions`).
    """
    from distributed import Client

    log.info("connecting to Dask scheduler %s", address)
    try:
        client = Client(address, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {address!r} ({exc}); check the address "
            "(e.g. tcp://host:8786) and that the scheduler is running."
        ) from exc
    try:
        check_versions(client)
        workers = client.scheduler_info(n_workers=-1).get("workers", {})
        log.info("scheduler %s: %d worker(s), %d thread(s)", address, len(workers),
                 sum(int(w.get("nthreads", 0)) for w in workers.values()))
        if not workers:
            log.warning("the scheduler at %s has no workers yet; tasks wait until one joins",
                        address)
        _log_dashboard(client)
    except BaseException:
        client.close()
        raise
    return client


def _log_dashboard(client: Client) -> None:
    try:
        has_dashboard = "dashboard" in client.scheduler_info(n_workers=0).get("services", {})
        link = client.dashboard_link if has_dashboard else None
    except (KeyError, AttributeError, TypeError):  # no dashboard (bokeh not installed)
        link = None
    if link:
        log.info("Dask dashboard: %s", link)


def get_client(
    workers: int | None = None,
    threads_per_worker: int = 1,
    address: str | None = None,
    *,
    device: str = "auto",
) -> Client:
    """Create a ``distributed.Client``: connected to ``address``, or on a new local cluster.

    Parameters
    ----------
    workers : worker processes of the local cluster (default: :func:`default_workers`).
        Refused together with an address.
    threads_per_worker : Dask threads per worker; each gets
        ``cores // (workers * threads_per_worker)`` torch threads.
    address : a running scheduler (``tcp://host:8786``); its workers keep their own settings
        (torch threads are set on them by :func:`ship_model`'s plugin).
    device : the compute device, used to pick the default worker count.

    Examples
    --------
    >>> client = get_client(workers=2)  # doctest: +SKIP
    >>> client.close(); client.cluster.close()  # doctest: +SKIP
    """
    from distributed import Client, LocalCluster

    if address is not None:
        choose_scheduler(address, workers)  # the mistake of a worker count with an address
        return connect(address)
    if workers is not None:
        LocalProcesses(workers)  # InputError unless a positive whole number
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
    _log_dashboard(client)
    return client


@contextlib.contextmanager
def scheduler(
    client: SchedulerLike = None,
    *,
    workers: int | None = None,
    device: str = "auto",
    tasks: int | None = None,
) -> Iterator[Client | InProcess]:
    """Yield what :func:`run_tasks` runs on; a cluster or client made here is closed on exit.

    ``client`` and ``workers`` are what the caller passed, or a
    :data:`~geounet.distributed.schedulers.Scheduler` already chosen from them
    (:func:`~geounet.distributed.schedulers.choose_scheduler`). By its type:

    - :class:`~geounet.distributed.schedulers.Default` with ``tasks`` given (a ``predict`` /
      ``segment`` run): the chunk tasks run in this process on Dask's threaded scheduler,
      :func:`default_workers` threads, at most ``tasks``, with ``cores // threads`` torch
      threads each (synchronous when that is one thread: a scene of one chunk, or a CUDA run).
      No worker process to start, no torch import and model load per worker, and the loaded
      model is reused by the next run in this process (issue 11: fixed cost per run;
      ``benchmarks/bench_fixed.py``). torch, GDAL and the Zarr codecs release the GIL, so
      threads overlap like processes. Without ``tasks`` (a batch of scenes): a local cluster
      of :func:`default_workers` processes.
    - :class:`~geounet.distributed.schedulers.LocalProcesses`: a local cluster of that many
      worker processes.
    - :class:`~geounet.distributed.schedulers.Threads` /
      :class:`~geounet.distributed.schedulers.Synchronous`: in this process, as they are.
    - :class:`~geounet.distributed.schedulers.Remote`: a client connected to the address.
    - :class:`~geounet.distributed.schedulers.GivenClient`: the caller's client, left open.

    Examples
    --------
    >>> with scheduler(workers=2) as client:  # doctest: +SKIP
    ...     run_tasks(run_chunk_task, chunk_tasks, client)
    """
    match choose_scheduler(client, workers):
        case Default() if tasks is not None:
            with in_this_process(max(1, min(default_workers(device), tasks))) as on:
                yield on
        case Default():
            with _made_client(None, None, device) as made:
                yield made
        case LocalProcesses(workers=count):
            with _made_client(count, None, device) as made:
                yield made
        case Remote(address=address):
            with _made_client(None, address, device) as made:
                yield made
        case Threads(threads=threads):
            yield InProcess(threads)
        case Synchronous():
            yield InProcess(synchronous=True)
        case GivenClient(client=given):
            yield given


@contextlib.contextmanager
def _made_client(workers: int | None, address: str | None, device: str) -> Iterator[Client]:
    """A client made here (:func:`get_client`), closed with its cluster on exit."""
    with environment_kept():  # a local cluster's nanny sets OMP_NUM_THREADS=1 here
        made = get_client(workers=workers, address=address, device=device)
        try:
            yield made
        finally:
            cluster = made.cluster
            made.close()
            if cluster is not None:
                cluster.close()


@contextlib.contextmanager
def job_client(client: SchedulerLike = None, *, workers: int | None = None,
               device: str = "auto") -> Iterator[Client]:
    """A ``distributed.Client`` for a whole batch (its futures need one): in-process
    schedulers run on a one-worker cluster inside this process
    (:func:`in_process_client`: ``Threads(n)`` with ``n`` threads, ``Synchronous`` with one),
    every other variant as :func:`scheduler` gives it without ``tasks``."""
    match choose_scheduler(client, workers):
        case Threads(threads=threads):
            with in_process_client(threads or 1) as made:
                yield made
        case Synchronous():
            with in_process_client(1) as made:
                yield made
        case chosen:
            with scheduler(chosen, device=device) as made:
                yield made


def ship_model(on: Client | InProcess, path: str | os.PathLike[str],
               sha256: str | None = None) -> str:
    """Make the checkpoint at ``path`` (a file on this machine) available on every worker.

    On a ``distributed.Client`` its bytes go to each worker once, by a worker plugin that also
    sets the worker's torch threads (workers joining later get it too); tasks then load the
    copy named by the returned SHA-256 (:func:`geounet.distributed.worker.model_path`). In-process
    schedulers read ``path`` directly. Registering the same model again is free.

    Returns
    -------
    str
        The checkpoint's SHA-256 (hex).
    """
    from geounet.model.checkpoint import file_sha256

    sha256 = sha256 or file_sha256(path)
    if isinstance(on, InProcess):  # tasks read ``path`` itself
        return sha256
    name = f"geounet-model-{sha256[:16]}"
    known: set[str] = getattr(on, "_geounet_models", set())
    if name in known:
        return sha256
    with open(path, "rb") as handle:
        data = handle.read()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise InputError(
            f"checkpoint {str(path)!r} changed while the run was being planned; keep the "
            "model file unchanged during a run and start again."
        )
    try:
        plugin = __getattr__("GeounetPlugin")(data, sha256, os.path.basename(str(path)))
        on.register_plugin(plugin, name=name)
    except Exception as exc:  # noqa: BLE001 - a worker that cannot load geounet
        raise ClusterError(
            f"the Dask workers could not install the model {os.path.basename(str(path))!r} "
            f"({type(exc).__name__}: {exc}); check that geounet is installed on every worker "
            "and that their local directory is writable."
        ) from exc
    known.add(name)
    with contextlib.suppress(AttributeError):
        on._geounet_models = known  # type: ignore[union-attr]
    log.debug("model %s (sha256 %s) shipped to the workers", path, sha256[:12])
    return sha256


def _host_threads(identity: dict[str, Any], host: str) -> int:
    workers = identity.get("workers", {}) if isinstance(identity, dict) else {}
    return sum(int(w.get("nthreads", 1)) for w in workers.values() if w.get("host") == host)


def _make_plugin_class() -> type:
    """Build :class:`GeounetPlugin` on first use, so importing this module does not import
    ``distributed`` (the class pickles by reference as ``geounet.distributed.cluster.GeounetPlugin``)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class GeounetPlugin(WorkerPlugin):
        """Ship a checkpoint's bytes to every worker (once) and set its torch threads.

        Parameters
        ----------
        data : the checkpoint file's bytes.
        sha256 : their SHA-256 (hex).
        name : the checkpoint's file name (for logs).
        """

        def __init__(self, data: bytes, sha256: str, name: str) -> None:
            self.data = data
            self.sha256 = sha256
            self.filename = name
            self.name = f"geounet-model-{sha256[:16]}"  # one plugin (and copy) per model

        async def setup(self, worker: Any) -> None:
            from pathlib import Path

            from geounet.distributed.worker import register_shipped
            from geounet.model.checkpoint import file_sha256

            folder = Path(worker.local_directory) / "geounet-models"
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{self.sha256}.pt"
            if not target.is_file() or file_sha256(target) != self.sha256:
                partial = folder / f".{target.name}.{os.getpid()}"
                partial.write_bytes(self.data)
                os.replace(partial, target)
            register_shipped(self.sha256, target)
            self.data = b""  # the worker keeps the file, not a second copy in memory
            log.debug("model %s (%s) shipped to %s", self.filename, self.sha256[:12], target)
            try:
                identity = await worker.scheduler.identity()
                host = worker.address.split("://")[-1].rsplit(":", 1)[0]
                host_threads = _host_threads(identity, host)
            except Exception:  # noqa: BLE001 - an older scheduler: count this worker alone
                host_threads = 0
            set_torch_threads(max(host_threads, int(worker.state.nthreads)))

    GeounetPlugin.__module__ = __name__
    GeounetPlugin.__qualname__ = "GeounetPlugin"
    return GeounetPlugin


def __getattr__(name: str) -> Any:
    if name == "GeounetPlugin":
        cls = _make_plugin_class()
        globals()["GeounetPlugin"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_tasks(
    fn: Callable[[Any], Any],
    args: Sequence[Any],
    on: Client | InProcess,
    *,
    keys: Sequence[str] | None = None,
    on_result: Callable[[Any], None] | None = None,
    retries: int | None = None,
) -> list[Any]:
    """Compute ``fn(arg)`` for every ``arg`` as independent Dask tasks and call ``on_result``
    as each one finishes.

    Results are returned in completion order. On the first failing task the others are
    cancelled and its exception is raised. On a ``distributed.Client`` a failing task is rerun
    up to ``retries`` times (default :data:`DEFAULT_RETRY`'s ``task_retries``) and a task whose
    workers keep dying raises :class:`~geounet.errors.TransientError`. A task may return a
    :class:`TaskFailure` for an error that must not be retried (a user error): it is raised
    here at once.

    The tasks go to the scheduler in one ``Client.map`` message, their results are fetched in
    the background as they finish, and ``dask.delayed`` never traverses the arguments (they
    are opaque, e.g. frozen dataclasses): the client's cost per task is about a pickle of
    ``arg`` (``benchmarks/bench_cluster.py``).

    Parameters
    ----------
    fn : a module-level function (pickled by reference).
    args : one argument per task.
    keys : one unique Dask key per task (default: ``fn``'s name and the task's index, with a
        random token).
    """
    if not args:
        return []
    if keys is None:
        import uuid

        token = uuid.uuid4().hex[:12]
        keys = [f"{getattr(fn, '__name__', 'task')}-{i}-{token}" for i in range(len(args))]
    if len(keys) != len(args):
        raise ValueError(f"{len(keys)} keys for {len(args)} tasks")
    results: list[Any] = []

    def record(value: Any) -> None:
        if isinstance(value, TaskFailure):
            raise value.error
        results.append(value)
        if on_result is not None:
            on_result(value)

    match on:
        case InProcess():
            run_in_process(fn, args, keys, on, record)
        case _:
            _run_on_client(fn, args, keys, on, retries, record)
    return results


def _run_on_client(fn: Callable[[Any], Any], args: Sequence[Any], keys: Sequence[str],
                   on: Client, retries: int | None, record: Callable[[Any], None]) -> None:
    """:func:`run_tasks` on a ``distributed.Client``: one ``Client.map``, results as they
    finish, the rest cancelled on the first failure."""
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    retries = DEFAULT_RETRY.task_retries if retries is None else retries
    futures = on.map(fn, list(args), key=list(keys), pure=False, retries=retries)
    try:
        try:  # results are fetched in the background as tasks finish
            for _future, value in as_completed(futures, with_results=True):
                record(value)
        except KilledWorker as exc:
            raise TransientError(
                f"the workers running a task died repeatedly ({exc}); check the workers' "
                "memory limits and logs, then resume the run."
            ) from exc
    except BaseException:
        on.cancel(futures)
        raise


@contextlib.contextmanager
def in_process_client(threads: int = 1) -> Iterator[Client]:
    """A ``distributed.Client`` on a one-worker cluster inside this process (``threads``
    threads): what ``"threads"``/``"synchronous"`` mean where futures are needed
    (:func:`geounet.batch.job.run_batch`). For tests and debugging."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=max(1, threads), processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        yield client


def completion_queue() -> Any:
    """An empty ``distributed.as_completed`` to which futures are added as they are submitted
    and which yields each as it finishes (the batch's bounded in-flight window)."""
    from distributed import as_completed

    return as_completed()


@dataclass(frozen=True)
class TaskFailure:
    """A task's user error, returned (not raised) so Dask does not retry it."""

    error: GeounetError
