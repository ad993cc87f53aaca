"""The one place geounet creates a Dask client or cluster, and runs a list of chunk tasks on it.

A local run is a cluster of one machine: worker processes on this host, each with a share of
the cores for torch. A remote run connects to a ``dask.distributed`` scheduler by address and
runs the very same tasks. For tests and debugging, Dask's threaded or synchronous scheduler
runs them in this process.

Which one a run uses (:func:`resolve`): an explicit scheduler address, else the standard
``DASK_SCHEDULER_ADDRESS`` environment variable (or Dask's ``scheduler-address`` config), else
a local cluster of ``workers`` processes. An address and a worker count together are refused:
a remote cluster's size is set where its workers start. At connect the client, scheduler and
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
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Union, get_args

from geounet.distributed.versions import VERSION_PACKAGES, check_versions  # noqa: F401 - re-exported
from geounet.errors import ClusterError, GeounetError, InputError, TransientError

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

LocalScheduler = Literal["threads", "synchronous"]
"""In-process Dask schedulers, for tests and debugging (the model is loaded once per process)."""

SchedulerLike = Union["Client", str, None]
"""What ``client=`` accepts: a ``distributed.Client``, a scheduler address
(``tcp://host:8786``), ``"threads"`` / ``"synchronous"``, or None for a local cluster."""


SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
"""The standard environment variable naming a running scheduler (Dask config ``scheduler-address``)."""


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


def configured_address() -> str | None:
    """The scheduler address set in the environment (``DASK_SCHEDULER_ADDRESS``) or in Dask's
    config (``scheduler-address``), or None."""
    value = os.environ.get(SCHEDULER_ENV, "").strip()
    if value:
        return value
    import dask

    configured = dask.config.get("scheduler-address", None)
    return str(configured).strip() or None if configured else None


def is_in_process(client: SchedulerLike) -> bool:
    """Whether ``client`` names an in-process scheduler (``"threads"`` / ``"synchronous"``)."""
    return isinstance(client, str) and client in get_args(LocalScheduler)


def resolve(client: SchedulerLike = None, workers: int | None = None) -> SchedulerLike:
    """What a run will use: ``client`` as given, else the configured address, else None (a
    local cluster).

    Raises
    ------
    InputError
        A scheduler address and a worker count together (the remote cluster's size is set
        where its workers are started), or a worker count below 1.
    """
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise InputError(f"workers={workers} is not positive; use 1 or more worker processes.")
    if client is not None and not isinstance(client, str):
        source = "a distributed.Client"
    elif client is not None and not is_in_process(client):
        source = f"the scheduler address {client!r}"
    elif client is None and configured_address() is not None:
        client = configured_address()
        source = (f"the scheduler address {client!r} from {SCHEDULER_ENV}"
                  if os.environ.get(SCHEDULER_ENV, "").strip()
                  else f"the scheduler address {client!r} from Dask's scheduler-address config")
    else:
        return client
    if workers is not None:
        raise InputError(
            f"workers={workers} cannot be combined with {source}: the worker count sets the "
            "size of a local cluster, and a running scheduler's workers are started where it "
            f"runs; drop --workers (workers=), or drop the address (unset {SCHEDULER_ENV}) to "
            "run a local cluster."
        )
    return client


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
        resolve(address, workers)
        return connect(address)
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
    _log_dashboard(client)
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
    ``"threads"`` / ``"synchronous"`` (in-process), or None: the address in
    ``DASK_SCHEDULER_ADDRESS`` if set, else this machine. On this machine, ``workers`` given
    makes a local cluster of that many worker processes. Without ``workers`` and
    with ``tasks`` given (a ``predict`` / ``segment`` run), the same chunk tasks run in this
    process on Dask's threaded scheduler: :func:`default_workers` threads, at most ``tasks``,
    with ``cores // threads`` torch threads each (``"synchronous"`` when that is one thread:
    a scene of one chunk, or a CUDA run). No worker process to start, no torch import and
    model load per worker, and the loaded model is reused by the next run in this process
    (issue 11: fixed cost per run; ``benchmarks/bench_fixed.py``). torch, GDAL and the Zarr
    codecs release the GIL, so threads overlap like processes. Without ``tasks`` (a batch of
    scenes) a local cluster of :func:`default_workers` processes is made.

    Examples
    --------
    >>> with scheduler(workers=2) as client:  # doctest: +SKIP
    ...     run_tasks(run_chunk_task, chunk_tasks, client)
    """
    client = resolve(client, workers)
    if client is None and workers is None and tasks is not None:
        threads = max(1, min(default_workers(device), tasks))
        torch_threads = configure_threads(threads_per_worker=threads, workers=1)
        log.info("running in this process: %d Dask thread(s) x %d torch thread(s) "
                 "(--workers N for a local cluster of worker processes)", threads, torch_threads)
        if threads == 1:
            yield "synchronous"
            return
        import dask

        with dask.config.set(num_workers=threads):
            yield "threads"
        return
    if client is None or (isinstance(client, str) and not is_in_process(client)):
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


def ship_model(on: Client | LocalScheduler, path: str | os.PathLike[str],
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
    from geounet.distributed.worker import file_sha256

    sha256 = sha256 or file_sha256(path)
    if isinstance(on, str):
        return sha256
    name = f"geounet-model-{sha256[:16]}"
    known: set[str] = getattr(on, "_geounet_models", set())
    if name in known:
        return sha256
    with open(path, "rb") as handle:
        data = handle.read()
    if file_sha256_bytes(data) != sha256:
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

            from geounet.distributed.worker import file_sha256, register_shipped

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


def file_sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    import hashlib

    return hashlib.sha256(data).hexdigest()


def run_tasks(
    fn: Callable[[Any], Any],
    args: Sequence[Any],
    on: Client | LocalScheduler,
    *,
    keys: Sequence[str] | None = None,
    workers: int | None = None,
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

    if isinstance(on, str):
        import dask
        from dask.callbacks import Callback

        wanted = set(keys)

        class _Done(Callback):
            def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, id: Any) -> None:
                if key in wanted:
                    record(result)

        call = dask.delayed(fn, pure=False)
        tasks = [call(dask.delayed(arg, name=f"{key}-arg", traverse=False), dask_key_name=key)
                 for arg, key in zip(args, keys)]
        import dask.local
        import dask.threaded

        # the scheduler function itself, not its name: a name makes dask import distributed
        # (0.3 s) to look for a default client
        get = dask.threaded.get if on == "threads" else dask.local.get_sync
        kwargs: dict[str, Any] = {"scheduler": get}
        if on == "threads":  # workers given, else what scheduler() set, else one thread
            kwargs["num_workers"] = workers or dask.config.get("num_workers", None) or 1
        with _Done():
            dask.compute(*tasks, **kwargs)
        return results

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
    return results


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
