"""Where a run's tasks run: the closed scheduler type, the one rule from what users pass to a
variant (``geounet.distributed.schedulers.choose_scheduler``), and what each variant opens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from geounet.distributed import cluster, schedulers
from geounet.distributed.local import InProcess
from geounet.distributed.schedulers import (
    SCHEDULER_ENV,
    Default,
    GivenClient,
    LocalProcesses,
    Remote,
    Synchronous,
    Threads,
    choose_scheduler,
)
from geounet.errors import InputError


class _FakeClient:
    """Anything with ``submit`` is taken for a ``distributed.Client`` (none is imported)."""

    def submit(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("never called")


FAKE = _FakeClient()


@pytest.fixture(autouse=True)
def _no_configured_address(monkeypatch: pytest.MonkeyPatch) -> None:
    import dask

    monkeypatch.delenv(SCHEDULER_ENV, raising=False)
    monkeypatch.setitem(dask.config.config, "scheduler-address", None)


@pytest.mark.parametrize(("client", "workers", "expected", "here"), [
    (None, None, Default(), True),
    (None, 3, LocalProcesses(3), True),
    ("threads", None, Threads(), True),
    ("threads", 2, Threads(2), True),
    ("synchronous", None, Synchronous(), True),
    ("synchronous", 1, Synchronous(), True),
    ("synchronous", 2, Synchronous(), True),  # one task at a time whatever the count
    ("tcp://10.0.0.5:8786", None, Remote("tcp://10.0.0.5:8786"), False),
    ("127.0.0.1:8786", None, Remote("127.0.0.1:8786"), False),
    (FAKE, None, GivenClient(FAKE), False),
    (LocalProcesses(4), None, LocalProcesses(4), True),
    (Threads(2), None, Threads(2), True),
    (Default(), 2, LocalProcesses(2), True),
])
def test_each_accepted_input_is_its_variant(client: Any, workers: int | None, expected: Any,
                                            here: bool) -> None:
    chosen = choose_scheduler(client, workers)
    assert chosen == expected and type(chosen) is type(expected)
    assert chosen.runs_here is here


def test_a_configured_address_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    import dask

    monkeypatch.setitem(dask.config.config, "scheduler-address", "tcp://cfg:8786")
    assert choose_scheduler() == Remote("tcp://cfg:8786", "Dask's scheduler-address config")
    monkeypatch.setenv(SCHEDULER_ENV, "tcp://env:8786")  # the variable wins over the config
    assert choose_scheduler() == Remote("tcp://env:8786", SCHEDULER_ENV)
    assert choose_scheduler("threads") == Threads()  # an explicit choice wins over both
    with pytest.raises(InputError, match=f"workers=2 cannot be combined.*{SCHEDULER_ENV}"):
        choose_scheduler(None, 2)


@pytest.mark.parametrize(("client", "workers", "message"), [
    ("thread", None, r"client='thread' is neither a scheduler address.*tcp://host:8786"
                     r".*'threads'"),
    (None, 0, r"workers=0 .*is not positive; use 1 or more worker processes"),
    (None, -2, r"workers=-2 .*is not positive"),
    (None, True, r"workers=True .*is not positive"),
    (None, "2", r"workers='2' .*is not positive"),
    ("threads", 0, r"workers=0 .*is not positive"),
    (4, None, r"client=4 is not a scheduler; pass a distributed.Client, a scheduler address"),
    ("tcp://h:8786", 2, r"workers=2 cannot be combined with the scheduler address "
                        r"'tcp://h:8786'.*drop --workers"),
    (FAKE, 2, r"workers=2 cannot be combined with a distributed.Client"),
    (LocalProcesses(2), 3, r"workers=3 and client=LocalProcesses\(workers=2\) both size"),
])
def test_mistakes_name_the_value_the_rule_and_the_fix(client: Any, workers: Any,
                                                      message: str) -> None:
    with pytest.raises(InputError, match=message):
        choose_scheduler(client, workers)


def test_variants_check_their_own_counts() -> None:
    for make in (lambda: LocalProcesses(0), lambda: Threads(0), lambda: Remote("nowhere")):
        with pytest.raises(InputError):
            make()


def test_in_process_variants_open_as_they_are() -> None:
    """Threads and Synchronous run in this process with the count given (no cluster, no
    process-wide setting touched)."""
    with cluster.scheduler(Threads(3), tasks=5) as on:
        assert on == InProcess(3) and on.slots == 3
    with cluster.scheduler("threads", workers=2, tasks=5) as on:
        assert on == InProcess(2)
    with cluster.scheduler(Synchronous(), tasks=5) as on:
        assert on == InProcess(synchronous=True) and on.slots == 1
    with cluster.scheduler(GivenClient(FAKE)) as on:
        assert on is FAKE


def test_public_entry_points_refuse_a_mistaken_scheduler_before_work(tmp_path: Path) -> None:
    """A misspelt scheduler or a zero worker count is a clear error from predict, segment and
    run_batch before anything is written."""
    import geounet
    from geounet.batch.job import run_batch
    from geounet.testing import write_scene

    scene = write_scene(tmp_path / "s.tif", 64, 64)
    calls = [
        lambda: geounet.predict(scene, tmp_path / "p.zarr", client="thread"),
        lambda: geounet.segment(scene, tmp_path / "o.gpkg", workers=0),
        lambda: run_batch([scene], tmp_path / "out", client="thread"),
        lambda: run_batch([scene], tmp_path / "out", client="threads", workers=0),
    ]
    for call in calls:
        with pytest.raises(InputError, match="client='thread'|workers=0"):
            call()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]


def test_every_variant_is_handled_where_the_run_opens() -> None:
    """The closed set is the one the orchestration switches on: adding a variant without a
    case in ``cluster.scheduler`` fails here."""
    import inspect
    import typing

    variants = set(typing.get_args(schedulers.Scheduler))
    assert variants == {Default, Threads, Synchronous, LocalProcesses, Remote, GivenClient}
    source = inspect.getsource(cluster.scheduler)
    assert all(f"case {v.__name__}(" in source for v in variants)
