"""The ETA (issue 22, item 1): a measured warm-up chunk whose output is kept, the plan line
with the ETA before the other chunks on predict, segment and batch, the ETA in every progress
event after the warm-up, and the test-time augmentation counted in the plan's model pixels.
Asserts on log records and progress events, never on timing values."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest

import geounet
from geounet.batch.job import run_batch
from geounet.run import eta as eta_module
from geounet.run.eta import RunClock, format_seconds, progress_reporter, warmup_order
from geounet.run.planning import describe_plan, plan_prediction
from geounet.testing import write_scene

FAST: dict[str, Any] = {"precision": "fp32", "chunk_size": 64}


class _Events(logging.Handler):
    """Log records and progress events in the order they happened."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.events: list[tuple[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append(("log", record.getMessage()))

    def progress(self, done: int, total: int, pixels: int, eta: float | None) -> None:
        self.events.append(("progress", (done, total, eta)))

    def plans(self) -> list[tuple[int, str]]:
        return [(i, m) for i, (kind, m) in enumerate(self.events)
                if kind == "log" and m.startswith("plan:")]

    def progress_events(self) -> list[tuple[int, tuple[int, int, float | None]]]:
        return [(i, e) for i, (kind, e) in enumerate(self.events) if kind == "progress"]


@pytest.fixture
def events() -> Any:
    handler = _Events()
    logger = logging.getLogger("geounet")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def records(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every chunk task's record as the client takes it."""
    seen: list[dict[str, Any]] = []
    original = eta_module.RunProgress.chunk_done

    def chunk_done(self: Any, record: dict[str, Any]) -> None:
        seen.append(dict(record))
        original(self, record)

    monkeypatch.setattr(eta_module.RunProgress, "chunk_done", chunk_done)
    return seen


def _check_run(events: _Events, chunks: int) -> None:
    """One plan line with a measured ETA, logged after the warm-up chunk and before the
    others; every progress event after it carries an ETA, the last 0."""
    plans = events.plans()
    assert len(plans) == 1, plans
    at, line = plans[0]
    assert re.search(r"; ETA [\d.]+ s \(warm-up: \d+ tile\(s\) in [\d.]+ s, ", line), line
    progress = events.progress_events()
    before = [e for i, e in progress if i < at]
    after = [e for i, e in progress if i > at]
    assert [done for done, _, _ in before] == [0, 1]  # the start, then the warm-up chunk
    assert before[0][2] is None  # nothing measured before the warm-up
    assert len(after) == chunks - 1
    assert all(eta is not None and eta >= 0 for _, _, eta in after), after
    assert after[-1][0] == chunks and after[-1][2] == 0.0


@pytest.mark.parametrize("run", ["predict", "segment"])
def test_plan_line_has_the_warm_up_eta_before_the_other_chunks(
        tmp_path: Path, events: _Events, records: list[dict[str, Any]], run: str) -> None:
    scene = write_scene(tmp_path / "s.tif", 150, 170, pixel_size=0.5)  # 3 x 3 chunks of 64
    out = tmp_path / ("p.zarr" if run == "predict" else "o.gpkg")
    getattr(geounet, run)(scene, out, client="threads", workers=2, progress=events.progress,
                          **FAST)
    _check_run(events, 9)
    # the warm-up chunk is a chunk of the run: every tile of the grid ran once, none twice
    plan = plan_prediction(scene, chunk_size=64)
    assert len(records) == 9
    assert sum(r["tiles"] for r in records) == plan.grid.tile_rows * plan.grid.tile_cols
    assert records[0]["tiles"] > 0 and records[0]["compute_seconds"] > 0


def test_batch_logs_every_plan_with_an_eta(tmp_path: Path, events: _Events) -> None:
    scenes = [write_scene(tmp_path / "a.tif", 150, 170, pixel_size=0.5, seed=1),
              write_scene(tmp_path / "b.tif", 100, 120, pixel_size=0.5, seed=2)]
    run_batch(scenes, tmp_path / "out", client="threads", workers=2,
              progress=events.progress, **FAST)
    plans = events.plans()
    assert [m.split()[1] for _, m in plans] == ["a.tif", "b.tif"]
    assert all(re.search(r"; ETA [\d.]+ s \(warm-up: ", m) for _, m in plans), plans
    progress = events.progress_events()
    first = plans[0][0]
    # scene a's plan line waits for the job's warm-up chunk, alone in flight
    assert [e[0] for i, e in progress if i < first and e[0] > 0] == [1]
    after = [e for i, e in progress if i > first]
    assert all(eta is not None for _, _, eta in after), after
    assert after[-1][0] == 9 + 4 and after[-1][2] == 0.0


def test_a_three_argument_progress_callback_still_works(tmp_path: Path) -> None:
    scene = write_scene(tmp_path / "s.tif", 100, 120, pixel_size=0.5)
    seen: list[tuple[int, int]] = []
    geounet.predict(scene, tmp_path / "p.zarr", client="synchronous",
                    progress=lambda done, total, pixels: seen.append((done, total)), **FAST)
    assert seen[0] == (0, 4) and seen[-1] == (4, 4)
    assert progress_reporter(None) is None


def test_clock_estimates_from_the_warm_up_then_from_the_run() -> None:
    clock = RunClock(slots=2)
    assert clock.eta(10, 5) is None  # nothing measured
    assert not clock.measure({"tiles": 0, "compute_seconds": 0.1})  # a nodata chunk
    assert clock.measure({"tiles": 4, "compute_seconds": 8.0})  # 2 s per tile
    # 5 chunks of 2 tiles on 2 slots: 3 waves of 2 tiles x 2 s
    assert clock.eta(10, 5) == pytest.approx(12.0)
    assert clock.eta(0, 0) == 0.0
    assert "ETA 12 s (warm-up: 4 tile(s) in 8.0 s, 2 s/tile, 2 task(s) at once)" == \
        clock.describe(10, 5)
    clock.begin()
    clock.start -= 10.0  # type: ignore[operator]  # 10 s into the run
    clock.finished(2)
    assert clock.eta(8, 4) == pytest.approx(8.0)  # one chunk: still the warm-up's (2 waves)
    clock.finished(3)  # a whole wave done: 5 tiles in about 10 s, 2 s per tile of wall time
    assert clock.eta(5, 2) == pytest.approx(10.0, rel=0.01)
    assert [format_seconds(s) for s in (0.42, 12, 185, 7620)] == \
        ["0.4 s", "12 s", "3 min 05 s", "2 h 07 min"]


def test_warm_up_chunk_is_the_central_one(tmp_path: Path) -> None:
    plan = plan_prediction(write_scene(tmp_path / "s.tif", 150, 170, pixel_size=0.5),
                           chunk_size=64)
    chunks = plan.grid.chunks()
    ordered = warmup_order(plan.grid, chunks)
    assert (ordered[0].y0, ordered[0].x0) == (64, 64)
    assert sorted(ordered, key=lambda c: (c.y0, c.x0)) == sorted(chunks, key=lambda c: (c.y0,
                                                                                        c.x0))


@pytest.mark.parametrize(("tta", "factor"), [("none", 1), ("flips", 4), ("d4", 8)])
def test_plan_model_pixels_count_the_tta_transforms(tmp_path: Path, tta: str,
                                                    factor: int) -> None:
    plan = plan_prediction(write_scene(tmp_path / "s.tif", 100, 120, pixel_size=0.5),
                           tta=tta)  # type: ignore[arg-type]
    line = describe_plan(plan)
    assert f"; {12_000 * factor:,} model pixels" in line, line
    assert (f"({factor} per pixel: tta {tta})" in line) is (factor > 1)
