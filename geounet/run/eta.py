"""How long a run will take: a measured warm-up, then the rate the run itself shows.

A run (``predict``, ``segment``, ``batch``) first computes one chunk alone, the one nearest
the scene centre (where nodata is least likely, and a full chunk: its tiles outweigh the
first forward's one-off cost better than an edge chunk's few would), as a normal chunk task: its output is written to the store like any other, so no tile is computed
twice and the tiling stays exact (ARCHITECTURE invariant 1). Its task reports how many tiles
the model ran and how long they took (``tiles``, ``compute_seconds``: the model load is not
counted); :class:`RunClock` turns that into seconds per tile and an ETA for the remaining
tiles over the tasks that run at once (``slots``). Once a whole wave of chunks has finished
(``slots`` chunks), the ETA comes from the run's own wall-clock rate instead. The ETA is in
the plan line (:func:`geounet.run.planning.describe_plan`) and goes to the progress callback
with every update (:data:`ProgressCallback`).

The cost of the warm-up: while it runs, the other ``slots - 1`` task slots wait, at most the
time of one chunk; nothing with one slot (one thread, CUDA).
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from geounet.engine.tiling import ChunkWindow, TileGrid

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, int, "float | None"], None]
"""``progress(chunks_done, chunks_total, pixels_computed, eta_seconds)``, called as chunks
finish. Chunks resumed from an earlier run count as done, their pixels are not in
``pixels_computed`` (so a rate from it is this run's). ``eta_seconds`` is the estimated time
left (None until the warm-up has been measured, 0.0 when every chunk is done). A callback of
three parameters (the form before the ETA) is still accepted: it is called without it."""

WARMUP_TRIES = 3
"""Chunks tried one by one for the warm-up until one runs the model (others may be nodata)."""


@dataclass(frozen=True)
class WarmUp:
    """The measured warm-up: ``tiles`` model tiles in ``seconds`` (one task, model loaded)."""

    tiles: int
    seconds: float

    @property
    def seconds_per_tile(self) -> float:
        return self.seconds / self.tiles


def format_seconds(seconds: float) -> str:
    """``"0.4 s"``, ``"12 s"``, ``"3 min 05 s"``, ``"2 h 07 min"``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def chunk_tiles(grid: TileGrid, chunk: ChunkWindow) -> int:
    """Tiles ``chunk`` runs (the tiles whose core it owns; each tile of the grid once)."""
    return len(grid.tiles(chunk))


def warmup_order(grid: TileGrid, chunks: Sequence[ChunkWindow]) -> list[ChunkWindow]:
    """``chunks`` with the :data:`WARMUP_TRIES` warm-up candidates first (nearest the scene
    centre first), the others after them in their own (row-major) order."""
    cy, cx = grid.height / 2.0, grid.width / 2.0

    def key(chunk: ChunkWindow) -> tuple[float, int, int]:
        my, mx = chunk.y0 + chunk.height / 2.0, chunk.x0 + chunk.width / 2.0
        return math.hypot(my - cy, mx - cx), chunk.y0, chunk.x0

    first = sorted(chunks, key=key)[:WARMUP_TRIES]
    return first + [c for c in chunks if c not in first]


def task_slots(on: Any) -> int:
    """How many chunk tasks run at once on ``on`` (what ``cluster.scheduler`` yielded: in this
    process, or a ``distributed.Client``; None before any)."""
    from geounet.distributed.local import InProcess

    match on:
        case None:
            return 1
        case InProcess():
            return on.slots
    nthreads = getattr(on, "nthreads", None)
    if callable(nthreads):
        return max(1, sum(int(n) for n in nthreads().values()))
    return 1


def progress_reporter(callback: Callable[..., Any] | None) -> ProgressCallback | None:
    """``callback`` as a four-argument :data:`ProgressCallback`; one of three parameters
    (``done, total, pixels``) is called without the ETA."""
    if callback is None:
        return None
    try:
        inspect.signature(callback).bind(0, 0, 0, None)
    except TypeError:
        return lambda done, total, pixels, eta: callback(done, total, pixels)
    except ValueError:  # no signature to inspect (a builtin): assume the current form
        pass
    return callback


class RunClock:
    """The ETA of a run of chunk tasks: from the warm-up, then from the run's own rate.

    Counts are planned tiles (:func:`chunk_tiles`): a chunk that turns out to be nodata runs
    none and finishes at once, which the rate then shows.
    """

    def __init__(self, slots: int) -> None:
        self.slots = max(1, int(slots))
        self.warmup: WarmUp | None = None
        self.start: float | None = None
        self.done_tiles = 0
        self.done_chunks = 0

    def measure(self, record: dict[str, Any]) -> bool:
        """Take a finished warm-up chunk's record; whether it measured anything (it ran tiles)."""
        tiles = int(record.get("tiles", 0))
        seconds = float(record.get("compute_seconds", record.get("seconds", 0.0)))
        if tiles <= 0 or seconds <= 0:
            return False
        self.warmup = WarmUp(tiles, seconds)
        return True

    def begin(self) -> None:
        """The chunks after the warm-up start now."""
        self.start = time.perf_counter()

    def finished(self, tiles: int) -> None:
        """A chunk of ``tiles`` planned tiles finished after :meth:`begin`."""
        self.done_tiles += tiles
        self.done_chunks += 1

    def eta(self, remaining_tiles: int, remaining_chunks: int) -> float | None:
        """Seconds left for ``remaining_tiles`` in ``remaining_chunks``; None if unknown."""
        if remaining_chunks <= 0:
            return 0.0
        if self.start is not None and self.done_chunks >= self.slots and self.done_tiles > 0:
            elapsed = time.perf_counter() - self.start
            return remaining_tiles * elapsed / self.done_tiles
        if self.warmup is None:
            return None
        waves = math.ceil(remaining_chunks / self.slots)
        return waves * remaining_tiles / remaining_chunks * self.warmup.seconds_per_tile

    def describe(self, remaining_tiles: int, remaining_chunks: int) -> str:
        """``"ETA 3 min 05 s (warm-up: ...)"`` for the plan line."""
        eta = self.eta(remaining_tiles, remaining_chunks)
        if self.warmup is None or eta is None:
            return "ETA unknown until chunks finish (the warm-up chunks were all nodata)"
        w = self.warmup
        return (f"ETA {format_seconds(eta)} (warm-up: {w.tiles} tile(s) in "
                f"{format_seconds(w.seconds)}, {w.seconds_per_tile:.3g} s/tile, "
                f"{self.slots} task(s) at once)")


class RunProgress:
    """One run's progress: chunks done, pixels computed, the ETA, reported to ``callback``.

    ``done`` counts chunks resumed from an earlier run (they are done but not timed);
    ``tiles`` is the planned tiles of the chunks still to compute.
    """

    def __init__(self, callback: Callable[..., Any] | None, total: int, done: int,
                 tiles: int, slots: int) -> None:
        self.callback = progress_reporter(callback)
        self.total, self.done, self.pixels = total, done, 0
        self.remaining_tiles, self.remaining_chunks = tiles, total - done
        self.clock = RunClock(slots)

    def eta(self) -> float | None:
        return self.clock.eta(self.remaining_tiles, self.remaining_chunks)

    def report(self) -> None:
        if self.callback is not None:
            self.callback(self.done, self.total, self.pixels, self.eta())

    def chunk_done(self, record: dict[str, Any]) -> None:
        """Count a finished chunk task's record (``pixels``, ``planned_tiles``)."""
        tiles = int(record.get("planned_tiles", 0))
        self.done += 1
        self.pixels += int(record["pixels"])
        self.remaining_tiles -= tiles
        self.remaining_chunks -= 1
        if self.clock.start is not None:
            self.clock.finished(tiles)
        self.report()

    def plan_eta(self) -> str:
        """The ETA part of the plan line."""
        if self.remaining_chunks <= 0 and self.clock.warmup is None:
            return "ETA 0 s (nothing left to compute)"
        return self.clock.describe(self.remaining_tiles, self.remaining_chunks)


class JobProgress:
    """A batch's progress over all its scenes, and its warm-up.

    Chunks and tiles of scenes not planned yet are estimated by the mean of the planned ones.
    The warm-up is the job's first chunk task(s), run alone (:attr:`warming`: the batch keeps
    one task in flight); the plan lines of the scenes planned before it ends wait for its ETA
    (:meth:`log_plan`).
    """

    def __init__(self, callback: Callable[..., Any] | None, scenes: int) -> None:
        self.callback = progress_reporter(callback)
        self.scenes = scenes
        self.planned = self.known = self.done = self.pixels = 0
        self.tiles = 0  # planned tiles of the planned scenes' chunks still to compute
        self.remaining = 0  # ... and those chunks
        self.clock = RunClock(1)
        self.warming = True
        self.tries = 0
        self.waiting: list[tuple[Callable[[str], str], int, int]] = []

    def scene_planned(self, chunks: int = 0, done: int = 0, tiles: int = 0) -> None:
        """A scene was planned (or failed / was skipped: its ``chunks`` all ``done``)."""
        self.planned += 1
        self.known += chunks
        self.done += done
        self.tiles += tiles
        self.remaining += chunks - done

    def _estimate(self) -> tuple[int, int, int]:
        """(total chunks, remaining tiles, remaining chunks), unplanned scenes estimated."""
        unplanned = self.scenes - self.planned
        share = unplanned / max(1, self.planned)
        return (self.known + round(self.known * share), self.tiles + round(self.tiles * share),
                self.remaining + round(self.remaining * share))

    def report(self) -> None:
        if self.callback is None:
            return
        total, tiles, chunks = self._estimate()
        self.callback(self.done, total, self.pixels,
                      self.clock.eta(tiles, chunks) if not self.warming else None)

    def chunk_done(self, record: dict[str, Any]) -> None:
        """Count a finished chunk task; end the warm-up when it measured or ran out of tries."""
        tiles = int(record.get("planned_tiles", 0))
        self.done += 1
        self.pixels += int(record["pixels"])
        self.tiles -= tiles
        self.remaining -= 1
        if not self.warming:
            self.clock.finished(tiles)
            self.report()
            return
        self.tries += 1
        if self.clock.measure(record) or self.tries >= WARMUP_TRIES:
            self.warming = False
            self.clock.begin()
        self.report()
        if not self.warming:
            for line, scene_tiles, scene_chunks in self.waiting:
                log.info("%s", line(self.clock.describe(scene_tiles, scene_chunks)))
            self.waiting = []

    def log_plan(self, line: Callable[[str], str], tiles: int, chunks: int) -> None:
        """Log a scene's plan line (``line(eta)``) now, or once the warm-up has measured."""
        if self.warming:
            self.waiting.append((line, tiles, chunks))
        else:
            log.info("%s", line(self.clock.describe(tiles, chunks)))
