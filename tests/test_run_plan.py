"""The plan before the work (issue 22, item 1): the plan line, the --resample auto factor and
the --max-pixels ceiling, through the library, the CLI and batch, with the built-in model."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import geounet
from geounet.cli.main import cli
from geounet.errors import IncompatibleSceneError, InputError, RunTooLargeError
from geounet.run.options import DEFAULT_MAX_PIXELS
from geounet.run.planning import plan_prediction
from geounet.testing import write_scene

# the scene: 791 x 718 px (RGB.byte.tif's size); the built-in model is 0.5 m
WIDTH, HEIGHT = 791, 718


@pytest.fixture
def landsat(tmp_path: Path) -> Path:
    """A 30 m GeoTIFF (60x coarser than the built-in model): 2.04 gigapixels if warped."""
    return write_scene(tmp_path / "l30.tif", HEIGHT, WIDTH, pixel_size=30.0)


def _outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix != ".tif")


@pytest.mark.parametrize("run", ["predict", "segment"])
def test_auto_refuses_a_scene_beyond_the_factor_before_any_work(
        landsat: Path, tmp_path: Path, run: str) -> None:
    out = tmp_path / ("o.zarr" if run == "predict" else "o.gpkg")
    started = time.perf_counter()
    with pytest.raises(IncompatibleSceneError) as caught:
        getattr(geounet, run)(landsat, out, client="synchronous")  # resample="auto"
    seconds = time.perf_counter() - started
    message = str(caught.value)
    assert "60x coarser" in message and "within a factor 4" in message
    assert "47,460 x 43,080 = 2,044,576,800 px" in message  # the pixels it would create
    assert "--resample always" in message
    assert seconds < 10  # the bound; measured well under 1 s (see docs/predict.md)
    assert _outputs(tmp_path) == []  # no store, no partial output


def test_always_passes_the_factor_but_hits_max_pixels(landsat: Path, tmp_path: Path) -> None:
    with pytest.raises(RunTooLargeError) as caught:
        geounet.segment(landsat, tmp_path / "o.gpkg", client="synchronous",
                        resample="always", max_pixels=10**9)
    message = str(caught.value)
    assert "2,044,576,800 model pixels" in message and "1,000,000,000" in message
    assert "--max-pixels" in message
    # the real RGB.byte.tif is 300 m: 204 gigapixels, over the default ceiling
    coarse = write_scene(tmp_path / "l300.tif", HEIGHT, WIDTH, pixel_size=300.0)
    with pytest.raises(RunTooLargeError, match=r"204,457,680,000 model pixels \(204 gigap"):
        plan_prediction(coarse, resample="always")
    assert _outputs(tmp_path) == []


@pytest.mark.parametrize(("pixel_size", "warped"), [(1.0, True), (2.0, True), (0.125, True),
                                                   (0.6, False)])
def test_auto_still_resamples_within_the_factor(tmp_path: Path, pixel_size: float,
                                                warped: bool) -> None:
    size = round(60 / pixel_size)
    scene = write_scene(tmp_path / "s.tif", size, size, pixel_size=pixel_size)
    plan = plan_prediction(scene)  # 2x, exactly 4x either way, and within 1.25x
    assert (plan.info.warp is not None) is warped
    if warped:
        assert plan.info.pixel_size == pytest.approx(0.5)
        assert plan.info.width == pytest.approx(120, abs=1)


def test_max_pixels_counts_the_model_grid(tmp_path: Path) -> None:
    scene = write_scene(tmp_path / "s.tif", 100, 120, pixel_size=0.5)
    with pytest.raises(RunTooLargeError, match="12,000 model pixels .* limit of 11,999"):
        plan_prediction(scene, max_pixels=11_999)
    for off in (0, None, 12_000):
        assert plan_prediction(scene, max_pixels=off).info.width == 120
    for bad in (-1, 1.5, True, "4G"):
        with pytest.raises(InputError, match="max_pixels"):
            plan_prediction(scene, max_pixels=bad)  # type: ignore[arg-type]
    # a 2x coarser scene: the ceiling applies to the resampled grid (4x the file's pixels)
    coarse = write_scene(tmp_path / "c.tif", 50, 60, pixel_size=1.0)
    with pytest.raises(RunTooLargeError, match="12,000 model pixels .*resampled to 0.5 m"):
        plan_prediction(coarse, max_pixels=3_000 * 2)
    assert DEFAULT_MAX_PIXELS == 4_000_000_000


def test_every_run_logs_its_plan_first(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    scene = write_scene(tmp_path / "s.tif", 75, 85, pixel_size=1.0)
    with caplog.at_level(logging.INFO, logger="geounet"):
        geounet.predict(scene, tmp_path / "p.zarr", client="synchronous", chunk_size=128)
    messages = [r.getMessage() for r in caplog.records]
    plans = [m for m in messages if m.startswith("plan:")]
    assert len(plans) == 1
    assert re.fullmatch(
        r"plan: s\.tif 85 x 75 px at 1 m -> model grid 170 x 150 px at 0\.5 m \(resampled, "
        r"lanczos\); 4 chunk\(s\) of 128 px \(2 x 2\), about 4 tile\(s\) of \d+ px; "
        r"25,500 model pixels \(0\.0 MP\); ETA [\d.]+ s \(warm-up: 1 tile\(s\) in [\d.]+ s, "
        r"[\d.e+-]+ s/tile, 1 task\(s\) at once\)", plans[0]), plans[0]
    # the order against the chunks: tests/test_run_eta.py


def test_cli_refusals_are_one_line(landsat: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["segment", str(landsat), "--out", str(tmp_path / "o.gpkg"), "--in-process"]
    started = time.perf_counter()
    result = runner.invoke(cli, base)
    assert time.perf_counter() - started < 10
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert "within a factor 4" in lines[0] and "--resample always" in lines[0]
    result = runner.invoke(cli, [*base, "--resample", "always", "--max-pixels", "1G"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "2,044,576,800 model pixels" in result.output and "--max-pixels" in result.output
    result = runner.invoke(cli, [*base, "--max-pixels", "lots"])
    assert result.exit_code == 2 and "--max-pixels" in result.output
    # predict too, and the plan line on a run that goes ahead
    small = write_scene(tmp_path / "small.tif", 60, 70, pixel_size=0.5)
    result = runner.invoke(cli, ["predict", str(small), "--out", str(tmp_path / "p.zarr"),
                                 "--in-process", "--max-pixels", "0"])
    assert result.exit_code == 0, result.output
    assert "plan: small.tif 70 x 60 px at 0.5 m -> model grid the same" in result.output


def test_batch_fails_the_oversized_scene_alone(landsat: Path, tmp_path: Path) -> None:
    good = write_scene(tmp_path / "good.tif", 60, 70, pixel_size=0.5)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["batch", str(landsat), str(good), "--out-dir", str(out),
                                      "--in-process", "--min-confidence", "0.5"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    rows = {r["name"]: r for r in json.loads((out / "batch.json").read_text())["scenes"]}
    assert rows["good"]["status"] == "done"
    assert rows["l30"]["status"] == "failed" and "within a factor 4" in rows["l30"]["error"]
    assert "plan: good.tif 70 x 60 px" in result.output
