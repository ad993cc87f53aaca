"""min_probability (seam-exact minimum class probability per object) and min_confidence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from rasterio.features import rasterize
from scipy import ndimage
from test_vectorization import TRANSFORM, blob_mask, read, write_mask, write_store

from geounet.errors import InputError
from geounet.vectorization import vectorize


def _probabilities(mask: np.ndarray, seed: int) -> np.ndarray:
    """uint8 probabilities (0-255) varying pixel by pixel, so each object has its own min/mean."""
    rng = np.random.default_rng(seed)
    probs = np.zeros((3,) + mask.shape, np.uint8)
    for k in (1, 2):
        probs[k][mask == k] = rng.integers(100, 256, size=int((mask == k).sum()))
    return probs


def _per_object(gdf, mask: np.ndarray, probs: np.ndarray, value: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """(min, mean) of the class probability over each polygon's pixels, from the whole raster."""
    p = probs[value].astype(np.float64) / 255.0
    mins, means = [], []
    for geom in gdf.geometry:
        inside = rasterize([(geom, 1)], out_shape=mask.shape, transform=TRANSFORM,
                           all_touched=False).astype(bool) & (mask == value)
        mins.append(p[inside].min())
        means.append(p[inside].mean())
    return np.array(mins), np.array(means)


@pytest.mark.parametrize("chunk", [16, 23, 64])
def test_min_probability_is_the_whole_scene_minimum_and_chunking_does_not_change_it(
        tmp_path: Path, chunk: int) -> None:
    mask = blob_mask(5, 96, 128)
    probs = _probabilities(mask, 5)
    store = write_store(tmp_path / "p.zarr", mask, probs, chunk=32)
    vectorize(store, tmp_path / "whole.gpkg", chunk_size=4096, min_area=0, simplify=0,
              centerlines=False)
    chunked = vectorize(store, tmp_path / "chunked.gpkg", chunk_size=chunk, min_area=0,
                        simplify=0, centerlines=False, cut_size=None)
    assert chunked.chunks > 1
    for layer, value in (("buildings", 1), ("roads", 2)):
        w = read(tmp_path / "whole.gpkg", layer)
        c = read(tmp_path / "chunked.gpkg", layer)
        assert len(w) == len(c) > 5
        # the reference: labelled components of the whole mask, min from the whole raster
        labels, n = ndimage.label(mask == value)
        p = probs[value].astype(np.float64) / 255.0
        ref_min = np.sort(ndimage.minimum(p, labels, index=np.arange(1, n + 1)))
        ref_mean = np.sort(ndimage.mean(p, labels, index=np.arange(1, n + 1)))
        for gdf in (w, c):
            assert np.sort(gdf["min_probability"].to_numpy()) == pytest.approx(ref_min, abs=1e-6)
            assert np.sort(gdf["mean_probability"].to_numpy()) == pytest.approx(ref_mean,
                                                                                abs=1e-6)
            assert ((gdf["min_probability"] >= 0) & (gdf["min_probability"] <= 1)).all()
            assert (gdf["min_probability"] <= gdf["mean_probability"] + 1e-12).all()
        # chunked == whole, bit for bit (float32 probabilities; values 1/255 apart)
        for column in ("min_probability", "mean_probability"):
            np.testing.assert_array_equal(np.sort(w[column].to_numpy()),
                                          np.sort(c[column].to_numpy()))
        # per polygon too (not only as sorted sets): rasterize each polygon back
        c = c.sort_values("area_m2").head(12)
        mins, means = _per_object(c, mask, probs, value)
        assert c["min_probability"].to_numpy() == pytest.approx(mins, abs=1e-6)
        assert c["mean_probability"].to_numpy() == pytest.approx(means, abs=1e-6)


def test_object_across_a_seam_takes_the_minimum_of_both_sides(tmp_path: Path) -> None:
    mask = np.zeros((64, 64), np.uint8)
    mask[10:20, 10:50] = 1  # crosses the seam at x = 32
    probs = np.zeros((3, 64, 64), np.uint8)
    probs[1][mask == 1] = 250
    probs[1, 15, 40] = 51  # the one doubtful pixel, right of the seam
    store = write_store(tmp_path / "p.zarr", mask, probs, chunk=32)
    vectorize(store, tmp_path / "o.gpkg", chunk_size=32, min_area=0, simplify=0)
    gdf = read(tmp_path / "o.gpkg", "buildings")
    assert len(gdf) == 1
    assert gdf["min_probability"].iloc[0] == pytest.approx(51 / 255)
    assert gdf["mean_probability"].iloc[0] == pytest.approx((399 * 250 + 51) / 400 / 255)


@pytest.mark.parametrize("chunk", [17, 4096])
def test_min_confidence_drops_exactly_the_objects_below_it(tmp_path: Path, chunk: int) -> None:
    mask = blob_mask(9, 96, 128)
    probs = _probabilities(mask, 9)
    store = write_store(tmp_path / "p.zarr", mask, probs, chunk=32)
    common = dict(chunk_size=chunk, min_area=0, simplify=0, centerlines=False, cut_size=None)
    vectorize(store, tmp_path / "all.gpkg", **common)
    everything = read(tmp_path / "all.gpkg", "buildings")
    threshold = float(np.median(everything["mean_probability"]))
    result = vectorize(store, tmp_path / "kept.gpkg", min_confidence=threshold, **common)
    kept = read(tmp_path / "kept.gpkg", "buildings")
    expected = everything[everything["mean_probability"] >= threshold]
    assert 0 < len(kept) < len(everything)
    assert len(kept) == len(expected) == result.counts["buildings"]
    assert sorted(kept["mean_probability"]) == pytest.approx(sorted(expected["mean_probability"]))
    assert sorted(kept["area_m2"]) == pytest.approx(sorted(expected["area_m2"]))
    assert (kept["mean_probability"] >= threshold).all()


def test_min_confidence_bad_values_and_bare_masks(tmp_path: Path) -> None:
    mask = blob_mask(3, 40, 40)
    store = write_store(tmp_path / "p.zarr", mask, _probabilities(mask, 3), chunk=32)
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(InputError, match="min_confidence .* 0-1"):
            vectorize(store, tmp_path / "x.gpkg", min_confidence=bad)
    tif = write_mask(tmp_path / "m.tif", mask)
    with pytest.raises(InputError, match="needs class probabilities"):
        vectorize(tif, tmp_path / "y.gpkg", min_confidence=0.5)
    vectorize(tif, tmp_path / "z.gpkg", min_confidence=0)  # 0 = off: fine on a bare mask
    gdf = read(tmp_path / "z.gpkg", "buildings")
    assert gdf["min_probability"].isna().all()


def test_cli_min_confidence(tmp_path: Path) -> None:
    from geounet.cli.main import cli

    mask = blob_mask(9, 96, 128)
    store = write_store(tmp_path / "p.zarr", mask, _probabilities(mask, 9), chunk=32)
    runner = CliRunner()
    ok = runner.invoke(cli, ["vectorize", str(store), "--out", str(tmp_path / "a.gpkg"),
                             "--min-area", "0", "--min-confidence", "0.7"])
    assert ok.exit_code == 0, ok.output
    gdf = read(tmp_path / "a.gpkg", "buildings")
    assert len(gdf) > 0 and (gdf["mean_probability"] >= 0.7).all()
    bad = runner.invoke(cli, ["vectorize", str(store), "--out", str(tmp_path / "b.gpkg"),
                              "--min-confidence", "2"])
    assert bad.exit_code != 0 and "0-1" in bad.output and "Traceback" not in bad.output
