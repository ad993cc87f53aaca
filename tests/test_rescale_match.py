"""``--rescale match`` (issue 22, item 4): the card records the training data's per-band
percentiles; a scene of another range or dtype is mapped piecewise linearly so its percentiles
(of a fixed, bounded sample) land on the card's; old cards still load and name the fix."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

import geounet
from geounet.cli.main import cli
from geounet.config import PERCENTILE_LEVELS
from geounet.errors import IncompatibleSceneError, InputError
from geounet.model import ModelCard, load_checkpoint, save_checkpoint
from geounet.raster import Rescale, open_scene, read_window
from geounet.raster.fitting import parse_rescale, plan_rescale
from geounet.synth import synthesize_scene
from geounet.training.dataset import BandQuantiles

BUILTIN = Path(geounet.__file__).parent / "weights" / "builtin.pt"


def sensor_copy(scene: Path, out: Path, bits: int = 11, seed: int = 0) -> Path:
    """``scene`` (uint8) as a sensor of ``bits`` bits would record it: per band a dark offset,
    a gain and the display gamma undone (raw ~ offset + gain * (x / 255) ** 2.2), plus noise."""
    rng = np.random.default_rng(seed)
    with rasterio.open(scene) as src:
        profile, data = src.profile, src.read().astype(np.float64)
    top = 2**bits - 1
    out_data = np.empty(data.shape, np.uint16)
    for band in range(data.shape[0]):
        offset = top * (0.03 + 0.02 * band)
        gain = (top - offset) * (0.8 - 0.1 * band)
        raw = offset + gain * (data[band] / 255.0) ** 2.2 + rng.normal(0, top / 1000, data[band].shape)
        out_data[band] = np.clip(np.rint(raw), 0, top)
    profile.update(dtype="uint16", nodata=None)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(out_data)
    return out


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("match")
    scene8 = synthesize_scene(root / "s", size=192, seed=21).scene_path
    return scene8, sensor_copy(scene8, root / "s11.tif")


def _read(scene: Path, rescale: Rescale | None) -> np.ndarray:
    info = dataclasses.replace(open_scene(str(scene)), rescale=rescale)
    pixels, _ = read_window(info, 0, 0, info.height, info.width, bands=(1, 2, 3))
    return pixels.astype(np.float64)


def test_builtin_card_records_training_percentiles() -> None:
    _, card = load_checkpoint(BUILTIN)
    assert card.percentile_levels == PERCENTILE_LEVELS
    assert len(card.percentiles) == 3
    assert all(list(band) == sorted(band) for band in card.percentiles)


def test_band_quantiles_equal_numpy() -> None:
    rng = np.random.default_rng(0)
    for dtype, top in (("uint8", 255), ("uint16", 4095), ("float32", 1.0)):
        values = rng.random((3, 50_000)) * top
        values = values if dtype == "float32" else np.rint(values)
        sketch = BandQuantiles(3, dtype)
        sketch.add(values[:, :20_000])
        sketch.add(values[:, 20_000:])
        np.testing.assert_allclose(sketch.percentiles(PERCENTILE_LEVELS),
                                   np.percentile(values, PERCENTILE_LEVELS, axis=1).T)


def test_match_maps_a_sensor_copy_back_near_the_original(scenes: tuple[Path, Path]) -> None:
    """A card whose percentiles are the uint8 scene's: match brings the 11-bit copy back to
    within a few DN of it, far closer than bits or percentile (a deterministic read, no model)."""
    scene8, scene11 = scenes
    _, card = load_checkpoint(BUILTIN)
    original = _read(scene8, None)
    card = dataclasses.replace(
        card, percentiles=tuple(map(tuple, np.percentile(original.reshape(3, -1),
                                                         PERCENTILE_LEVELS, axis=1).T)))
    info = open_scene(str(scene11))
    error = {mode: np.abs(_read(scene11, plan_rescale(info, card, mode)) - original).mean()
             for mode in ("match", "match:2,98", "bits", "percentile")}
    assert error["match"] < 4.0, error
    assert error["match"] < 0.5 * min(error["bits"], error["percentile"]), error
    assert error["match"] < error["match:2,98"], error  # the gamma needs the inner knots
    mapped = plan_rescale(info, card, "match")
    assert mapped.method == "match" and len(mapped.knots) == 3
    assert all(len(xs) == len(ys) >= 2 for xs, ys in mapped.knots)


def test_piecewise_map_extends_past_the_end_knots_and_clips() -> None:
    rescale = Rescale((1,), (100.0,), (200.0,), 0.0, 255.0, "uint8", "match",
                      knots=(((100.0, 200.0), (50.0, 150.0)),))
    data = np.array([[[0, 100, 150, 200, 260, 1000]]], np.uint16)
    assert rescale.apply(data, (1,)).tolist() == [[[0, 50, 100, 150, 210, 255]]]


def test_match_is_chunk_exact(scenes: tuple[Path, Path], tmp_path: Path) -> None:
    """One sample, read once on the client: every chunk gets the same map."""
    import xarray as xr

    for chunk in (64, 256):
        geounet.predict(scenes[1], tmp_path / f"c{chunk}.zarr", rescale="match",
                        client="synchronous", chunk_size=chunk)
    small, large = xr.open_zarr(tmp_path / "c64.zarr"), xr.open_zarr(tmp_path / "c256.zarr")
    assert np.array_equal(small["probabilities"].values, large["probabilities"].values)
    attrs = small.attrs.get("geounet") or small.attrs
    assert attrs["scene_rescale"]["method"] == "match" and attrs["scene_rescale"]["knots"]


def test_old_card_loads_and_match_names_the_fix(scenes: tuple[Path, Path],
                                                tmp_path: Path) -> None:
    model, card = load_checkpoint(BUILTIN)
    data = card.to_dict()
    del data["percentile_levels"], data["percentiles"]  # a card written before them
    old = ModelCard.from_dict(data)
    assert old.percentiles == () and old.percentile_levels == ()
    with pytest.raises(IncompatibleSceneError) as caught:
        plan_rescale(open_scene(str(scenes[1])), old, "match")
    message = str(caught.value)
    assert "records none" in message
    assert "--rescale bits" in message and "--rescale percentile" in message
    path = save_checkpoint(tmp_path / "old.pt", model, old)
    result = CliRunner().invoke(cli, ["predict", str(scenes[1]), "--out",
                                      str(tmp_path / "p.zarr"), "--model", str(path),
                                      "--in-process", "--rescale", "match"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "--rescale bits" in result.output and "rescale=" not in result.output
    assert not (tmp_path / "p.zarr").exists()


def test_match_levels_are_checked() -> None:
    assert parse_rescale("match").describe() == "match"
    assert parse_rescale("match:2,98").levels == (2.0, 98.0)
    for bad in ("match:98,2", "match:2,101", "match:x"):
        with pytest.raises(InputError, match="rescale"):
            parse_rescale(bad)
    _, card = load_checkpoint(BUILTIN)
    with pytest.raises(InputError, match="records the percentiles 1,2,5.*not \\[3.0\\]"):
        plan_rescale(_scene_info(), card, "match:3")  # refused before any pixel is read


def _scene_info():  # type: ignore[no-untyped-def]
    from geounet.raster import SceneInfo

    return SceneInfo(path="x.tif", height=10, width=10, count=3, dtype="uint16",
                     crs_wkt=None, transform=(1.0, 0.0, 0.0, 0.0, -1.0, 0.0), nodata=None,
                     block_shape=(10, 10), has_mask=False)


def test_the_error_asking_for_a_mode_names_match(scenes: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["predict", str(scenes[1]), "--out",
                                      str(tmp_path / "p.zarr"), "--in-process"])
    assert result.exit_code == 1
    assert "--rescale match" in result.output and "measured" in result.output
