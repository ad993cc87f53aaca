"""Synthetic scenes: georeferencing, truth alignment, determinism, difficulty, seams, CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geounet.errors import GeoreferenceError, InputError, OutputExistsError
from geounet.synth import (
    MASK_NODATA,
    SynthConfig,
    plan_scene,
    render_window,
    synthesize_scene,
)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _truth_masks(result) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rasterize truth.gpkg independently: buildings as polygons, roads buffered by width / 2."""
    import geopandas as gpd
    from rasterio.features import rasterize

    with rasterio.open(result.mask_path) as src:
        mask = src.read(1)
        transform = src.transform
        crs = src.crs
    buildings = gpd.read_file(result.truth_path, layer="buildings")
    roads = gpd.read_file(result.truth_path, layer="roads")
    assert buildings.crs == crs and roads.crs == crs
    building = rasterize(buildings.geometry, out_shape=mask.shape, transform=transform)
    road_areas = roads.geometry.buffer(roads["width"] / 2)
    road = rasterize(road_areas, out_shape=mask.shape, transform=transform)
    return mask, building.astype(bool), road.astype(bool)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize(
    ("height", "width", "band_count", "dtype", "border", "crs", "pixel_size"),
    [
        (257, 300, 3, "uint8", 0, "EPSG:32633", 0.5),
        (512, 384, 4, "uint16", 11, "EPSG:32618", 0.3),
    ],
)
def test_georeferencing_bands_and_range(
    tmp_path: Path, height, width, band_count, dtype, border, crs, pixel_size
) -> None:
    result = synthesize_scene(
        tmp_path / "out",
        height=height,
        width=width,
        seed=5,
        band_count=band_count,
        dtype=dtype,
        nodata_border=border,
        crs=crs,
        pixel_size=pixel_size,
        chunk_size=256,
    )
    with rasterio.open(result.scene_path) as src, rasterio.open(result.mask_path) as msk:
        assert (src.height, src.width, src.count) == (height, width, band_count)
        assert src.dtypes == (dtype,) * band_count
        assert src.crs == rasterio.crs.CRS.from_user_input(crs)
        assert src.transform.a == pytest.approx(pixel_size)
        assert src.transform.e == pytest.approx(-pixel_size)
        assert src.block_shapes[0] == (256, 256)
        assert src.compression.name.lower() == "deflate"
        assert src.nodata == (0 if border else None)
        assert msk.crs == src.crs and msk.transform == src.transform
        assert msk.nodata == MASK_NODATA and msk.dtypes == ("uint8",)
        data = src.read()
        mask = msk.read(1)
    valid = mask != MASK_NODATA
    if border:
        assert not valid[:border].any() and not valid[:, -border:].any()
        assert valid[border:-border, border:-border].all()
        assert (data[:, ~valid] == 0).all()
    assert data[:, valid].min() >= 1
    top = 255 if dtype == "uint8" else 4095
    assert data.max() <= top
    # a realistic spread of values, using most of the range
    assert np.percentile(data[:, valid], 99) > 0.4 * top
    assert set(np.unique(mask[valid])) <= {0, 1, 2}
    summary = json.loads(result.summary_path.read_text())
    assert summary["height"] == height and summary["band_count"] == band_count


def test_truth_vectors_match_mask(tmp_path: Path) -> None:
    result = synthesize_scene(tmp_path / "out", height=640, width=703, seed=11, nodata_border=5)
    mask, building, road = _truth_masks(result)
    valid = mask != MASK_NODATA
    assert building[valid].mean() > 0.01 and road[valid].mean() > 0.02
    assert _iou(building & valid, mask == 1) > 0.99
    assert _iou(road & valid, mask == 2) > 0.99


def test_roads_are_one_connected_network(tmp_path: Path) -> None:
    import geopandas as gpd
    import shapely

    result = synthesize_scene(tmp_path / "out", size=1024, seed=4)
    roads = gpd.read_file(result.truth_path, layer="roads")
    assert roads["width"].between(3.5, 15).all() and roads["width"].nunique() > 3
    merged = shapely.union_all(roads.geometry.buffer(roads["width"] / 2).values)
    parts = shapely.get_parts(merged)
    assert len(parts) == 1, f"{len(parts)} separate road pieces"
    buildings = gpd.read_file(result.truth_path, layer="buildings")
    with rasterio.open(result.scene_path) as src:
        inner = shapely.box(*src.bounds).buffer(-1.0)
    buildings = buildings[buildings.within(inner)]  # whole footprints, not cut by the edge
    assert len(buildings) > 50
    assert (buildings.geometry.area > 30).all()
    assert buildings.geometry.is_valid.all()
    # varied shapes: rectangles (4 corners) and L-shapes (6 corners)
    corners = shapely.get_num_coordinates(buildings.geometry.values) - 1
    assert {4, 6} <= set(corners.tolist())


def test_same_seed_same_bytes_different_seed_differs(tmp_path: Path) -> None:
    kwargs = dict(height=300, width=257, band_count=4, dtype="uint16", nodata_border=3)
    a = synthesize_scene(tmp_path / "a", seed=7, **kwargs)
    b = synthesize_scene(tmp_path / "b", seed=7, **kwargs)
    c = synthesize_scene(tmp_path / "c", seed=8, **kwargs)
    for name in ("scene.tif", "truth.gpkg", "truth_mask.tif"):
        assert _digest(a.out_dir / name) == _digest(b.out_dir / name), name
        assert _digest(a.out_dir / name) != _digest(c.out_dir / name), name


def _best_threshold_iou(values: np.ndarray, truth: np.ndarray) -> float:
    """Best IoU of `values >= t` or `values <= t` over every threshold t."""
    v = values.astype(np.int64).ravel()
    t = truth.ravel()
    levels = int(v.max()) + 1
    positives = np.bincount(v[t], minlength=levels)
    total = np.bincount(v, minlength=levels)
    best = 0.0
    for pos, tot in ((positives[::-1], total[::-1]), (positives, total)):
        tp, predicted = np.cumsum(pos), np.cumsum(tot)
        best = max(best, float((tp / (t.sum() + predicted - tp)).max()))
    return best


@pytest.mark.parametrize("seed", [0, 1])
def test_single_pixel_threshold_cannot_solve_it(seed: int) -> None:
    config = SynthConfig(height=768, width=768, seed=seed, band_count=4)
    pixels, mask = render_window(config, plan_scene(config), 0, 0, 768, 768)
    candidates = [pixels[band] for band in range(4)] + [np.rint(pixels.mean(0))]
    for cls in (1, 2):
        truth = mask == cls
        assert truth.mean() > 0.01
        best = max(_best_threshold_iou(values, truth) for values in candidates)
        assert best < 0.6, f"class {cls}: a single threshold reaches IoU {best:.2f}"


def test_chunked_rendering_has_no_seams(tmp_path: Path) -> None:
    """Rendering in 256-px windows gives exactly the pixels of one whole-scene window."""
    config = SynthConfig(
        height=300, width=520, seed=3, band_count=4, nodata_border=6, chunk_size=256
    )
    whole_pixels, whole_mask = render_window(config, plan_scene(config), 0, 0, 300, 520)
    chunked = synthesize_scene(
        tmp_path / "chunked",
        height=300,
        width=520,
        seed=3,
        band_count=4,
        nodata_border=6,
        chunk_size=256,
    )
    with rasterio.open(chunked.scene_path) as src, rasterio.open(chunked.mask_path) as msk:
        np.testing.assert_array_equal(src.read(), whole_pixels)
        np.testing.assert_array_equal(msk.read(1), whole_mask)
    # and the chunk borders are not visible: the mean absolute difference between neighbouring
    # columns across a window border is like that between neighbouring columns elsewhere
    diffs = np.abs(np.diff(whole_pixels[0].astype(np.int64), axis=1)).mean(0)
    assert diffs[255] < 2 * np.median(diffs)


def test_written_window_by_window(tmp_path: Path, monkeypatch) -> None:
    """The raster is rendered and written in chunk_size windows, never as a whole scene."""
    import geounet.synth.write as synth

    windows = []
    render = synth.render_indexed_window

    def spy(config, plan, indexes, y0, x0, height, width):
        windows.append((y0, x0, height, width))
        return render(config, plan, indexes, y0, x0, height, width)

    monkeypatch.setattr(synth, "render_indexed_window", spy)
    synthesize_scene(tmp_path, height=600, width=300, chunk_size=256)
    assert max(h for *_, h, _ in windows) <= 256 and max(w for *_, w in windows) <= 256
    assert len(windows) == 3 * 2
    assert sum(h * w for *_, h, w in windows) == 600 * 300


def test_invalid_arguments_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="band count 5"):
        SynthConfig(band_count=5)
    with pytest.raises(InputError, match="multiple of 256"):
        SynthConfig(chunk_size=1000)
    with pytest.raises(InputError, match="nodata border 40"):
        SynthConfig(height=80, width=300, nodata_border=40)
    with pytest.raises(GeoreferenceError, match="not projected"):
        SynthConfig(crs="EPSG:4326")
    with pytest.raises(GeoreferenceError, match="not understood"):
        SynthConfig(crs="EPSG:999999")
    with pytest.raises(GeoreferenceError, match="US survey foot, not metres"):
        SynthConfig(crs="EPSG:2263")  # New York Long Island, feet


def test_uncreatable_or_blocked_output_dir_is_a_clean_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot be created"):
        synthesize_scene(blocker / "sub" / "out", size=128)
    with pytest.raises(OutputExistsError, match="is a file"):
        synthesize_scene(blocker, size=128)
    (tmp_path / "d" / "truth.gpkg").mkdir(parents=True)
    with pytest.raises(OutputExistsError, match="is a directory"):
        synthesize_scene(tmp_path / "d", size=128, overwrite=True)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["d", "file.txt", "truth.gpkg"]


def test_failure_mid_write_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    import geounet.synth.write as synth

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(synth, "_write_truth", broken)
    with pytest.raises(OSError, match="disk full"):
        synthesize_scene(tmp_path / "new" / "out", size=128)
    assert not (tmp_path / "new").exists()  # the directories it created are removed too
    (tmp_path / "kept").mkdir()
    with pytest.raises(OSError, match="disk full"):
        synthesize_scene(tmp_path / "kept", size=128)
    assert (tmp_path / "kept").is_dir() and not list((tmp_path / "kept").iterdir())


def test_cli_writes_readable_outputs_and_refuses_to_overwrite(tmp_path: Path) -> None:
    import geopandas as gpd

    from geounet.cli.main import cli

    out = tmp_path / "scene"
    args = ["synth", str(out), "--height", "257", "--width", "300", "--seed", "2",
            "--band-count", "4", "--dtype", "uint16", "--crs", "EPSG:32632",
            "--pixel-size", "0.6", "--nodata-border", "4"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "buildings" in result.output
    with rasterio.open(out / "scene.tif") as src:
        assert (src.count, src.height, src.width, src.dtypes[0]) == (4, 257, 300, "uint16")
        assert src.crs.to_epsg() == 32632 and src.transform.a == pytest.approx(0.6)
        assert src.nodata == 0
    for layer in ("buildings", "roads"):
        frame = gpd.read_file(out / "truth.gpkg", layer=layer)
        assert frame.crs.to_epsg() == 32632
    before = _digest(out / "scene.tif")
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 1
    assert "--overwrite" in again.output and "Traceback" not in again.output
    assert _digest(out / "scene.tif") == before
    replaced = CliRunner().invoke(cli, [*args[:6], "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    with rasterio.open(out / "scene.tif") as src:
        assert src.count == 3 and src.nodata is None
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_library_refuses_existing_outputs(tmp_path: Path) -> None:
    synthesize_scene(tmp_path, size=128, seed=0)
    with pytest.raises(OutputExistsError, match="overwrite"):
        synthesize_scene(tmp_path, size=128, seed=0)
