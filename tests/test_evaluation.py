"""evaluate(): hand-made cases with known answers, chunking, vector truth, Zarr predictions, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.transform import from_origin
from shapely.geometry import LineString, box

from geounet.cli.main import cli
from geounet.errors import GeoreferenceError, InputError, LabelError
from geounet.evaluation import evaluate, match_objects

CRS = "EPSG:32633"
TRANSFORM = from_origin(500_000.0, 5_000_000.0, 0.5, 0.5)  # 0.5 m pixels


def write_mask(path: Path, mask: np.ndarray, transform=TRANSFORM) -> Path:
    with rasterio.open(path, "w", driver="GTiff", height=mask.shape[0], width=mask.shape[1],
                       count=1, dtype="uint8", crs=CRS, transform=transform, nodata=255) as dst:
        dst.write(mask.astype(np.uint8), 1)
    return path


def scene_truth() -> np.ndarray:
    """200 x 200: 9 buildings of 10 x 10 px, one vertical road 6 px wide (3 m)."""
    mask = np.zeros((200, 200), np.uint8)
    for y in (20, 80, 140):
        for x in (20, 60, 150):
            mask[y:y + 10, x:x + 10] = 1
    mask[:, 100:106] = 2
    return mask


def test_perfect_prediction_scores_one(tmp_path):
    truth = write_mask(tmp_path / "t.tif", scene_truth())
    report = evaluate(truth, truth)
    for s in report.pixel:
        assert s.iou == 1.0 and s.f1 == 1.0 and s.precision == 1.0 and s.recall == 1.0
    assert report.objects.f1 == 1.0 and report.objects.tp == 9
    assert report.centerline.precision == 1.0 and report.centerline.recall == 1.0


def test_empty_prediction_has_zero_recall(tmp_path):
    truth = write_mask(tmp_path / "t.tif", scene_truth())
    pred = write_mask(tmp_path / "p.tif", np.zeros((200, 200)))
    report = evaluate(pred, truth)
    assert report.score("buildings").recall == 0.0 and report.score("roads").recall == 0.0
    assert report.score("buildings").iou == 0.0
    assert math.isnan(report.score("buildings").precision)  # nothing predicted
    assert (report.objects.tp, report.objects.fn) == (0, 9)
    assert report.centerline.recall == 0.0 and report.centerline.true_total > 150


@pytest.mark.parametrize("shift, iou, matched", [(2, 80 / 120, 9), (6, 40 / 160, 0)])
def test_shifted_buildings_give_known_iou(tmp_path, shift, iou, matched):
    truth = scene_truth()
    truth[truth == 2] = 0
    pred = np.roll(truth, shift, axis=1)
    report = evaluate(write_mask(tmp_path / "p.tif", pred), write_mask(tmp_path / "t.tif", truth))
    assert report.score("buildings").iou == pytest.approx(iou)
    assert report.objects.tp == matched
    assert report.objects.f1 == pytest.approx(matched / 9)


@pytest.mark.parametrize("shift, expected", [(2, 1.0), (10, 0.0)])
def test_road_centerline_tolerance(tmp_path, shift, expected):
    truth = scene_truth()
    pred = truth.copy()
    pred[pred == 2] = 0
    pred[:, 100 + shift:106 + shift] = 2  # 1 m or 5 m to the side; tolerance 2 m
    report = evaluate(write_mask(tmp_path / "p.tif", pred), write_mask(tmp_path / "t.tif", truth),
                      centerline_tolerance=2.0)
    assert report.centerline.precision == pytest.approx(expected, abs=0.02)
    assert report.centerline.recall == pytest.approx(expected, abs=0.02)


def test_partial_prediction_and_nodata(tmp_path):
    truth = scene_truth()
    pred = truth.copy()
    pred[:100] = 0  # top half missed
    truth_nd = truth.copy()
    truth_nd[150:, :] = 255
    pred[150:, :] = 1  # garbage under nodata must not count
    report = evaluate(write_mask(tmp_path / "p.tif", pred),
                      write_mask(tmp_path / "t.tif", truth_nd))
    b = report.score("buildings")
    # buildings in rows 20-29, 80-89 missed (6); rows 140-149 found (3); rows >= 150 ignored
    assert (b.tp, b.fp, b.fn) == (300, 0, 600)
    r = report.score("roads")
    assert (r.tp, r.fn) == (50 * 6, 100 * 6)
    assert sum(map(sum, report.confusion)) == 150 * 200


def test_chunked_equals_whole(tmp_path):
    rng = np.random.default_rng(0)
    truth = scene_truth()
    pred = truth.copy()
    flip = rng.random(truth.shape) < 0.02
    pred[flip] = rng.integers(0, 3, flip.sum())
    # a big building crossing window seams
    pred[60:130, 60:130] = 1
    truth[62:128, 62:126] = 1
    p, t = write_mask(tmp_path / "p.tif", pred), write_mask(tmp_path / "t.tif", truth)
    whole = evaluate(p, t, window_size=2048)
    parts = evaluate(p, t, window_size=64)
    assert parts.confusion == whole.confusion
    assert parts.objects == whole.objects
    c1, c2 = whole.centerline, parts.centerline
    assert abs(c1.precision - c2.precision) < 0.02 and abs(c1.recall - c2.recall) < 0.02


def truth_gpkg(path: Path, crs: str = "EPSG:4326") -> Path:
    """The buildings of :func:`scene_truth` as polygons (in ``crs``) and its road as a line."""
    x0, y0 = TRANSFORM.c, TRANSFORM.f
    boxes = [box(x0 + x * 0.5, y0 - (y + 10) * 0.5, x0 + (x + 10) * 0.5, y0 - y * 0.5)
             for y in (20, 80, 140) for x in (20, 60, 150)]
    gpd.GeoDataFrame(geometry=boxes, crs=CRS).to_crs(crs).to_file(path, layer="buildings")
    road = LineString([(x0 + 51.5, y0 + 10), (x0 + 51.5, y0 - 110)])  # centre of cols 100-105
    gpd.GeoDataFrame({"width": [3.0]}, geometry=[road], crs=CRS).to_file(path, layer="roads")
    return path


def test_vector_prediction_against_raster_truth(tmp_path):
    """A GeoPackage prediction (e.g. from segment) is burnt onto the truth's grid."""
    pred = truth_gpkg(tmp_path / "pred.gpkg", crs=CRS)
    report = evaluate(pred, write_mask(tmp_path / "t.tif", scene_truth()))
    assert report.score("buildings").iou == 1.0 and report.score("roads").iou == 1.0
    assert (report.objects.tp, report.objects.fp, report.objects.fn) == (9, 0, 0)
    assert report.centerline.precision == 1.0 and report.centerline.recall == 1.0


def test_vector_truth_and_zarr_prediction(tmp_path):
    from geounet.output import create_store

    mask = scene_truth()
    gpkg = truth_gpkg(tmp_path / "truth.gpkg")
    store = tmp_path / "pred.zarr"
    create_store(store, height=200, width=200, classes=("background", "buildings", "roads"),
                 chunk_size=64, crs_wkt=rasterio.crs.CRS.from_string(CRS).to_wkt(),
                 transform=tuple(TRANSFORM)[:6])
    import zarr

    zarr.open_group(str(store), mode="r+")["mask"][:] = mask
    report = evaluate(store, gpkg)
    assert report.score("buildings").iou > 0.95  # 4326 round trip moves edges < 1 px
    assert report.score("roads").iou == 1.0
    assert report.objects.tp == 9 and report.objects.fp == 0
    # the same through the CLI, with JSON
    out = tmp_path / "r.json"
    result = CliRunner().invoke(cli, ["evaluate", str(store), str(gpkg), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "buildings" in result.output and "IoU" in result.output
    data = json.loads(out.read_text())
    assert data["pixel"]["roads"]["iou"] == 1.0 and data["objects"]["tp"] == 9
    # an existing JSON fails before any scoring, with one clean line, and is kept
    again = CliRunner().invoke(cli, ["evaluate", str(store), str(gpkg), "--json", str(out)])
    assert again.exit_code == 1 and "--overwrite" in again.output
    assert "IoU" not in again.output and "Traceback" not in again.output
    assert json.loads(out.read_text()) == data
    nowhere = CliRunner().invoke(cli, ["evaluate", str(store), str(gpkg), "--json",
                                       str(tmp_path / "no" / "r.json")])
    assert nowhere.exit_code == 1 and "does not exist" in nowhere.output


def test_prediction_on_another_grid_is_read_onto_the_truth_grid(tmp_path):
    """A resampled run's store lies on the model grid: evaluate aligns it (nearest)."""
    truth = scene_truth()
    t = write_mask(tmp_path / "t.tif", truth)  # 0.5 m
    # the same labels on a 4x finer grid (0.125 m), as a resampled run writes its store
    fine = np.repeat(np.repeat(truth, 4, axis=0), 4, axis=1)
    p = write_mask(tmp_path / "p.tif", fine, from_origin(500_000.0, 5e6, 0.125, 0.125))
    report = evaluate(p, t, window_size=64)
    assert all(s.iou == 1.0 for s in report.pixel) and report.objects.tp == 9
    # and it can fail: the fine prediction shifted by 2 m (16 fine px) scores lower
    shifted = np.roll(fine, 16, axis=1)
    q = write_mask(tmp_path / "q.tif", shifted, from_origin(500_000.0, 5e6, 0.125, 0.125))
    assert evaluate(q, t).score("buildings").iou < 0.9
    # an offset grid of the same pixel size is aligned too: 3 px east, the 6 px road half on
    other = write_mask(tmp_path / "o.tif", truth, from_origin(500_001.5, 5e6, 0.5, 0.5))
    with pytest.warns(UserWarning, match=r"covers 98\.5%"):  # its first 3 columns are missing
        offset = evaluate(other, t).score("roads")
    assert offset.iou == pytest.approx(3 / 9)


def test_one_class_truth_geojson_named_like_the_chip_scores(tmp_path):
    """evaluate reads vector truth by training's rule: one foreground class, every feature."""
    truth = scene_truth()
    buildings = np.where(truth == 1, 1, 0)
    pred = write_mask(tmp_path / "chip_7.pred.tif", buildings)
    boxes = [box(500_000.0 + x * 0.5, 5e6 - (y + 10) * 0.5, 500_000.0 + (x + 10) * 0.5,
                 5e6 - y * 0.5) for y in (20, 80, 140) for x in (20, 60, 150)]
    geojson = tmp_path / "chip_7.geojson"  # its one layer is named "chip_7"
    gpd.GeoDataFrame(geometry=boxes, crs=CRS).to_crs("EPSG:4326").to_file(geojson)
    report = evaluate(pred, geojson, classes=("background", "buildings"))
    assert report.score("buildings").iou > 0.95 and report.objects.tp == 9
    # the same file for a two-class model cannot tell buildings from roads: a clear error
    with pytest.raises(LabelError, match="'class' column"):
        evaluate(pred, geojson)


def test_grid_mismatch_and_bad_values(tmp_path):
    t = write_mask(tmp_path / "t.tif", scene_truth())
    bare = tmp_path / "bare.tif"  # no CRS: grids cannot be aligned, so they must be one
    with rasterio.open(bare, "w", driver="GTiff", height=100, width=100, count=1,
                       dtype="uint8") as dst:
        dst.write(np.zeros((1, 100, 100), np.uint8))
    with pytest.raises(GeoreferenceError, match="grid"):
        evaluate(bare, t)
    odd = scene_truth()
    odd[0, 0] = 9
    with pytest.raises(InputError, match="class 9"):
        evaluate(write_mask(tmp_path / "x.tif", odd), t)
    result = CliRunner().invoke(cli, ["evaluate", str(bare), str(t)])
    assert result.exit_code == 1 and "Error:" in result.output and "Traceback" not in result.output


def test_match_objects_is_one_to_one():
    truth = [box(0, 0, 10, 10)]
    pred = [box(0, 0, 10, 10), box(0, 0, 10, 9)]
    scores = match_objects(pred, truth, 0.5)
    assert (scores.tp, scores.fp, scores.fn) == (1, 1, 0)


# --------------------------------------------------------------------------- metres in any CRS


def _shifted_copy(src: Path, dst: Path, shift: int) -> Path:
    """The same class mask with every road pixel moved ``shift`` pixels to the right."""
    with rasterio.open(src) as s:
        profile, mask = s.profile, s.read(1)
    roads = mask == 2
    moved = np.zeros_like(roads)
    moved[:, shift:] = roads[:, :-shift]
    out = np.where(roads, 0, mask)
    out = np.where(moved & (mask != 255), 2, out).astype(np.uint8)
    with rasterio.open(dst, "w", **profile) as d:
        d.write(out, 1)
    return dst


@pytest.fixture(scope="module")
def geo_masks(tmp_path_factory):
    """Truth masks of two synthetic scene sizes, as UTM and as EPSG:4326 (same pixels), each
    with a copy whose roads are shifted by 5 px = 2.5 m."""
    from geounet.synth import synthesize_scene
    from geounet.testing import regrid

    root = tmp_path_factory.mktemp("geo_masks")
    out = {}
    for size in (384, 1024):
        synthesize_scene(root / f"s{size}", size=size, seed=5)
        utm = root / f"s{size}" / "truth_mask.tif"
        geo = regrid(utm, root / f"geo{size}.tif", crs="EPSG:4326")
        out[size] = {
            "utm": (utm, _shifted_copy(utm, root / f"utm{size}_shift.tif", 5)),
            "geo": (geo, _shifted_copy(geo, root / f"geo{size}_shift.tif", 5)),
        }
    return out


def test_tolerance_is_metres_in_a_geographic_crs(geo_masks):
    """2 m does not reach a road moved by 2.5 m, 3 m does, in UTM and in EPSG:4326 alike (a
    tolerance taken as 2 degrees would match everything)."""
    # roads across the shift stop matching at 2 m; those along it keep matching
    for tolerance, low, high in ((2.0, 0.0, 0.8), (3.0, 0.9, 1.0)):
        scores = {}
        for kind in ("utm", "geo"):
            truth, pred = geo_masks[384][kind]
            report = evaluate(pred, truth, centerline_tolerance=tolerance, window_size=128)
            scores[kind] = report.centerline
        assert low <= scores["utm"].f1 <= high, (tolerance, scores["utm"])
        assert scores["geo"].f1 == pytest.approx(scores["utm"].f1, abs=0.01)
        assert scores["geo"].precision == pytest.approx(scores["utm"].precision, abs=0.01)


def test_geographic_evaluate_memory_does_not_grow_with_the_scene(geo_masks):
    """Peak Python memory of evaluate over a 1024^2 EPSG:4326 scene stays that of a 384^2 one
    (7x the pixels): windows and their halo are bounded, whatever the scene size."""
    import tracemalloc

    peaks = {}
    for size in (384, 1024):
        truth, pred = geo_masks[size]["geo"]
        evaluate(pred, truth, window_size=128)  # warm imports and caches
        tracemalloc.start()
        report = evaluate(pred, truth, window_size=128)
        peaks[size] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert report.centerline.true_total > 0
    whole_scene = 1024 * 1024  # one uint8 copy of the larger scene
    assert peaks[1024] < 1.5 * peaks[384] + 2**20, peaks
    assert peaks[1024] - peaks[384] < whole_scene, peaks


def test_vector_truth_on_a_rotated_grid(tmp_path):
    """Labels burnt onto a rotated prediction grid land where its transform says, in every
    window (window footprints are taken from all four corners)."""
    from affine import Affine
    from rasterio.features import shapes
    from shapely.geometry import shape

    rotated = TRANSFORM * Affine.rotation(35)
    mask = scene_truth()
    pred = write_mask(tmp_path / "p.tif", mask, rotated)
    buildings = [shape(g) for g, v in shapes(mask, mask=mask == 1, transform=rotated)]
    roads = [shape(g) for g, v in shapes(mask, mask=mask == 2, transform=rotated)]
    gpkg = tmp_path / "t.gpkg"
    gpd.GeoDataFrame(geometry=buildings, crs=CRS).to_file(gpkg, layer="buildings")
    gpd.GeoDataFrame(geometry=roads, crs=CRS).to_file(gpkg, layer="roads")
    report = evaluate(pred, gpkg, window_size=64)
    assert report.score("buildings").iou > 0.99 and report.score("roads").iou > 0.99
    assert (report.objects.tp, report.objects.fp, report.objects.fn) == (9, 0, 0)


def test_partial_coverage_is_reported_and_warned(tmp_path):
    """A prediction covering part of the truth (on another grid, or with nodata) scores only
    the covered part: never silently, the report says how much and evaluate warns."""
    truth = scene_truth()
    t = write_mask(tmp_path / "t.tif", truth)
    # the left 120 of 200 columns, on a 2x finer grid: 60% of the truth's pixels
    left = np.repeat(np.repeat(truth[:, :120], 2, axis=0), 2, axis=1)
    p = write_mask(tmp_path / "p.tif", left, from_origin(500_000.0, 5e6, 0.25, 0.25))
    with pytest.warns(UserWarning, match=r"covers 60\.0% of the truth's labelled pixels "
                                         r"\(24,000 of 40,000\)"):
        report = evaluate(p, t, window_size=64)
    assert report.coverage.fraction == pytest.approx(0.6)
    assert report.to_dict()["coverage"] == {"scored": 24_000, "labelled": 40_000,
                                            "fraction": 0.6}
    assert "covers 60.0%" in report.format_table()
    assert report.score("buildings").iou == 1.0  # of the covered part
    result = CliRunner().invoke(cli, ["evaluate", str(p), str(t)])
    assert result.exit_code == 0 and "covers 60.0%" in result.output
    # full coverage: no warning, no line
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        whole = evaluate(t, t)
    assert not [w for w in caught if "covers" in str(w.message)]
    assert whole.coverage.fraction == 1.0 and "coverage" not in whole.format_table()
