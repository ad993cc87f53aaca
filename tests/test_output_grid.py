"""The raster output of a resampled run on the scene's grid or the model's (issue 22, item 5):
``--output-grid scene`` (the default) writes the Zarr/COG on the scene's own transform and
shape, so ``geounet evaluate pred chip.mask.tif`` scores without aligning; ``model`` keeps the
grid the model read. Polygons are the same either way (traced on the model's grid)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import zarr
from click.testing import CliRunner

import geounet
from geounet.batch.job import run_batch
from geounet.cli.main import cli
from geounet.errors import InputError
from geounet.evaluation import evaluate
from geounet.synth import synthesize_scene

ALIGNING = "reading the prediction onto the truth's grid"


@pytest.fixture(scope="module")
def coarse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1 m synthetic scene (2x the built-in model's 0.5 m) with its truth mask, and a nodata
    border, so the run reads a warped view at 0.5 m."""
    root = tmp_path_factory.mktemp("coarse")
    return synthesize_scene(root, size=96, seed=5, pixel_size=1.0,
                            nodata_border=6).scene_path


def _grid(path: Path) -> tuple[tuple[float, ...], tuple[int, int]]:
    if path.suffix == ".zarr":
        from geounet.output.prediction import PredictionReader

        with PredictionReader(path) as reader:
            return tuple(reader.transform), (reader.height, reader.width)
    with rasterio.open(path) as src:
        return tuple(src.transform)[:6], (src.height, src.width)


def _features(gpkg: Path) -> dict[str, int]:
    return {layer: pyogrio.read_info(gpkg, layer=layer)["features"]
            for layer, _ in pyogrio.list_layers(gpkg)}


def test_scene_grid_is_the_default_and_evaluates_without_alignment(
        coarse: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    scene_grid = _grid(coarse)
    truth = coarse.parent / "truth_mask.tif"
    geounet.segment(coarse, tmp_path / "s.gpkg", raster_out=tmp_path / "s.tif",
                    client="synchronous", probability_dtype="float32")
    geounet.predict(coarse, tmp_path / "s.zarr", client="synchronous",
                    probability_dtype="float32")
    geounet.predict(coarse, tmp_path / "m.zarr", client="synchronous",
                    probability_dtype="float32", output_grid="model")
    for out in ("s.tif", "s.zarr"):
        transform, shape = _grid(tmp_path / out)
        assert shape == scene_grid[1] and transform == pytest.approx(scene_grid[0]), out
    model_transform, model_shape = _grid(tmp_path / "m.zarr")
    assert model_shape == (192, 192) and model_transform[0] == pytest.approx(0.5)
    with caplog.at_level(logging.INFO, logger="geounet"):
        result = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "s.zarr"), str(truth)])
        assert result.exit_code == 0, result.output
        assert ALIGNING not in caplog.text  # scored on one grid, no alignment
        aligned = evaluate(tmp_path / "m.zarr", truth)
        assert ALIGNING in caplog.text
    on_scene = evaluate(tmp_path / "s.zarr", truth)
    for name in ("buildings", "roads"):
        assert on_scene.score(name).iou == pytest.approx(aligned.score(name).iou, abs=0.05)
    assert on_scene.score("buildings").iou > 0.5


def test_scene_grid_averages_the_model_grid(coarse: Path, tmp_path: Path) -> None:
    """With the model grid exactly 2x finer and aligned, each scene pixel's probabilities are
    the mean of its 2 x 2 model pixels, its class their argmax, and nodata stays nodata."""
    geounet.predict(coarse, tmp_path / "s.zarr", client="synchronous",
                    probability_dtype="float32")
    geounet.predict(coarse, tmp_path / "m.zarr", client="synchronous",
                    probability_dtype="float32", output_grid="model")
    model = zarr.open_group(str(tmp_path / "m.zarr"), mode="r")
    scene = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    k = model["probabilities"].shape[0]
    model_valid = (np.asarray(model["mask"][:]) != 255).reshape(96, 2, 96, 2)
    weight = model_valid.mean(axis=(1, 3))
    mean = (np.asarray(model["probabilities"][:]).reshape(k, 96, 2, 96, 2)
            * model_valid[None]).sum(axis=(2, 4)) / np.maximum(4 * weight, 1)
    valid = np.asarray(scene["mask"][:]) != 255
    assert np.array_equal(valid, weight >= 0.5)  # valid where most of the footprint is
    with rasterio.open(coarse) as src:
        scene_valid = src.read_masks(1) > 0
    assert not (valid & ~scene_valid).any() and valid.sum() > 0.99 * scene_valid.sum()
    probs = np.asarray(scene["probabilities"][:])
    np.testing.assert_allclose(probs[:, valid], mean[:, valid], atol=1e-5)
    assert np.array_equal(np.asarray(scene["mask"][:])[valid], probs.argmax(axis=0)[valid])
    assert dict(scene.attrs["geounet"])["output_grid"] == "scene"


def test_polygons_are_the_same_on_either_grid(coarse: Path, tmp_path: Path) -> None:
    for grid in ("scene", "model"):
        result = CliRunner().invoke(cli, [
            "segment", str(coarse), "--out", str(tmp_path / f"{grid}.gpkg"), "--in-process",
            "--raster-out", str(tmp_path / f"{grid}.tif"), "--output-grid", grid])
        assert result.exit_code == 0, result.output
    assert _features(tmp_path / "scene.gpkg") == _features(tmp_path / "model.gpkg")
    with rasterio.open(coarse) as src:  # in the scene's CRS either way
        crs = src.crs
    for grid in ("scene", "model"):
        assert pyogrio.read_info(tmp_path / f"{grid}.gpkg", layer="buildings")["crs"] == \
            crs.to_string()
    assert _grid(tmp_path / "scene.tif")[1] == (96, 96)
    assert _grid(tmp_path / "model.tif")[1] == (192, 192)
    with pytest.raises(InputError, match="output grid 'native'.*scene.*model"):
        geounet.predict(coarse, tmp_path / "x.zarr", client="synchronous",
                        output_grid="native")  # type: ignore[arg-type]


def test_batch_raster_on_the_scene_grid(coarse: Path, tmp_path: Path) -> None:
    result = run_batch([coarse], tmp_path / "out", client="threads", raster="cog")
    assert result.ok, result.format_table()
    transform, shape = _grid(tmp_path / "out" / "scene.tif")
    assert shape == _grid(coarse)[1] and transform == pytest.approx(_grid(coarse)[0])
    leftovers = [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
    assert leftovers == []
