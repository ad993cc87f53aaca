"""Where a run's tasks run: the closed set of schedulers, and the one rule that turns what a
caller passes into one of them.

Users pass ``client=`` (None, ``"threads"``, ``"synchronous"``, a scheduler address, a
``distributed.Client``, or one of the variants below) and ``workers=`` (a count); the CLI
passes ``--workers``, ``--scheduler ADDRESS`` and ``--in-process``; the environment may name a
scheduler (``DASK_SCHEDULER_ADDRESS``, or Dask's ``scheduler-address`` config).
:func:`choose_scheduler` turns them into one :data:`Scheduler` (or raises the user's mistake),
and the orchestration switches on its type (:func:`geounet.distributed.cluster.scheduler`,
:func:`geounet.distributed.cluster.job_client`). Nothing here imports ``distributed``.

Examples
--------
>>> choose_scheduler("threads", workers=2)
Threads(threads=2)
>>> choose_scheduler(None, workers=3)
LocalProcesses(workers=3)
>>> choose_scheduler("tcp://10.0.0.5:8786").runs_here
False
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar

from geounet.errors import InputError, option

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
"""The standard environment variable naming a running scheduler (Dask config ``scheduler-address``)."""


@dataclass(frozen=True)
class Default:
    """This machine, sized by geounet (``client=None``, no address configured): a scene runs
    on Dask's threaded scheduler in this process, one thread per default worker at most the
    chunks (synchronous for one thread); a batch on a local cluster of default worker
    processes (:func:`geounet.distributed.threads.default_workers`)."""

    runs_here: ClassVar[bool] = True


@dataclass(frozen=True)
class Threads:
    """Dask's threaded scheduler in this process (``client="threads"``) with ``threads``
    threads (``workers=``); None: Dask's ``num_workers`` config, else one. A batch runs on a
    one-worker cluster inside this process with that many threads."""

    threads: int | None = None
    runs_here: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.threads is not None:
            _check_count(self.threads, "threads")


@dataclass(frozen=True)
class Synchronous:
    """Every task in this thread, one after the other (``client="synchronous"``; debugging)."""

    runs_here: ClassVar[bool] = True


@dataclass(frozen=True)
class LocalProcesses:
    """A local cluster of ``workers`` worker processes on this machine (``workers=N``,
    ``--workers N``)."""

    workers: int
    runs_here: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_count(self.workers, "worker processes")


@dataclass(frozen=True)
class Remote:
    """A running ``dask.distributed`` scheduler at ``address`` (``tcp://host:8786``), given
    or configured (``origin`` says where it came from, for messages)."""

    address: str
    origin: str = ""
    runs_here: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if ":" not in self.address:  # tcp://host:port, host:port, inproc://..., ucx://...
            source = f" (from {self.origin})" if self.origin else ""
            raise InputError(
                f"client={self.address!r}{source} is neither a scheduler address (such as "
                "tcp://host:8786) nor an in-process scheduler ('threads', 'synchronous'); pass "
                f"{option('client', 'tcp://host:8786', flag='--scheduler')}, client='threads' "
                "(--in-process), or no client to run on this machine."
            )

    def describe(self) -> str:
        """The address and where it came from, for messages."""
        text = f"the scheduler address {self.address!r}"
        return f"{text} from {self.origin}" if self.origin else text


@dataclass(frozen=True)
class GivenClient:
    """A ``distributed.Client`` the caller made: used as it is and left open."""

    client: Any
    runs_here: ClassVar[bool] = False


Scheduler = Default | Threads | Synchronous | LocalProcesses | Remote | GivenClient
"""Where a run's tasks run: one of a closed set of variants (:func:`choose_scheduler`)."""

SchedulerLike = Any
"""What ``client=`` accepts (a :data:`Scheduler` or what :func:`choose_scheduler` turns into
one; ``Any`` because a ``distributed.Client`` is not imported here): None (this machine, or ``DASK_SCHEDULER_ADDRESS``),
``"threads"``, ``"synchronous"``, a scheduler address (``tcp://host:8786``), a
``distributed.Client``, or a :data:`Scheduler` variant."""

def configured_address() -> str | None:
    """The scheduler address set in the environment (``DASK_SCHEDULER_ADDRESS``) or in Dask's
    config (``scheduler-address``), or None."""
    value = os.environ.get(SCHEDULER_ENV, "").strip()
    if value:
        return value
    import dask

    configured = dask.config.get("scheduler-address", None)
    return str(configured).strip() or None if configured else None


def choose_scheduler(client: SchedulerLike = None, workers: int | None = None) -> Scheduler:
    """The one rule from what a caller passes to where its tasks run.

    ``client`` None: the configured address (``DASK_SCHEDULER_ADDRESS``, Dask's
    ``scheduler-address``) if any, else :class:`LocalProcesses` with ``workers`` given, else
    :class:`Default`. ``"threads"``: :class:`Threads` of ``workers`` threads;
    ``"synchronous"``: :class:`Synchronous`; another string: :class:`Remote`; a
    ``distributed.Client``: :class:`GivenClient`; a variant: itself.

    Raises
    ------
    InputError
        ``workers`` not a positive whole number; ``workers`` with an address or a client (a
        running scheduler's workers are started where it runs) or with a variant (which
        carries its own count; ``"synchronous"`` runs one task at a time whatever the count);
        a string that is neither
        ``"threads"``, ``"synchronous"`` nor an address; any other object.
    """
    if workers is not None:
        _check_count(workers, "worker processes")
    match client:
        case Default():
            chosen: Scheduler = client
        case Threads() | Synchronous() | LocalProcesses() | Remote() | GivenClient():
            if workers is not None:
                raise InputError(
                    f"workers={workers} and client={client!r} both size the run; give the "
                    "count once, in the variant (e.g. LocalProcesses(workers=4)) or as workers=."
                )
            return client
        case None:
            chosen = _configured() or Default()
        case "threads":
            chosen = Threads()
        case "synchronous":
            chosen = Synchronous()
        case str():
            chosen = Remote(client)
        case _ if callable(getattr(client, "submit", None)):
            chosen = GivenClient(client)
        case _:
            raise InputError(
                f"client={client!r} is not a scheduler; pass a distributed.Client, a scheduler "
                "address (tcp://host:8786), 'threads' or 'synchronous' (in this process), or "
                "None to run on this machine."
            )
    return _with_workers(chosen, workers)


def _configured() -> Remote | None:
    """The configured scheduler (environment or Dask config), or None."""
    address = configured_address()
    if address is None:
        return None
    origin = SCHEDULER_ENV if os.environ.get(SCHEDULER_ENV, "").strip() else (
        "Dask's scheduler-address config")
    return Remote(address, origin)


def _with_workers(chosen: Scheduler, workers: int | None) -> Scheduler:
    """``chosen`` sized by ``workers`` (None: as it is), or the mistake of combining them."""
    match chosen:
        case _ if workers is None:
            return chosen
        case Default():
            return LocalProcesses(workers)
        case Threads():
            return Threads(workers)
        case Synchronous():  # one task at a time whatever the count (as it always was)
            return chosen
        case Remote():
            source = chosen.describe()
        case _:
            source = "a distributed.Client"
    raise InputError(
        f"workers={workers} cannot be combined with {source}: the worker count sets the "
        "size of a local cluster, and a running scheduler's workers are started where it "
        f"runs; drop --workers (workers=), or drop the address (unset {SCHEDULER_ENV}) to "
        "run a local cluster."
    )


def _check_count(value: Any, what: str) -> None:
    """Raise the user's mistake unless ``value`` is a whole number of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(
            f"{option('workers', value)} is not positive; use 1 or more {what}."
        )
