"""make_chips: chips line up with the labels, the split is spatially blocked, CRS and errors."""

from __future__ import annotations

import csv
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.features import rasterize
from shapely.geometry import LineString, box

from geounet.errors import LabelError, OutputExistsError
from geounet.training.chips import make_chips

CRS = "EPSG:32633"
X0, Y0, PX = 500_000.0, 5_000_000.0, 0.5


def _labels(path: Path, crs: str = CRS, shift: float = 0.0) -> Path:
    """Buildings (boxes) and two roads (lines with width in metres) over a 257 x 300 scene."""
    rng = np.random.default_rng(1)
    boxes = []
    for _ in range(25):
        x = X0 + shift + rng.uniform(5, 140)
        y = Y0 - rng.uniform(5, 120)
        boxes.append(box(x, y - rng.uniform(3, 8), x + rng.uniform(3, 8), y))
    roads = [LineString([(X0 + shift, Y0 - 60), (X0 + shift + 150, Y0 - 70)]),
             LineString([(X0 + shift + 75, Y0), (X0 + shift + 80, Y0 - 128)])]
    gpd.GeoDataFrame(geometry=boxes, crs=CRS).to_crs(crs).to_file(path, layer="buildings")
    gpd.GeoDataFrame({"width": [6.0, 4.0]}, geometry=roads, crs=CRS).to_crs(crs).to_file(
        path, layer="roads")
    return path


def _expected(labels: Path, transform, height: int, width: int) -> np.ndarray:
    out = np.zeros((height, width), np.uint8)
    b = gpd.read_file(labels, layer="buildings").to_crs(CRS)
    r = gpd.read_file(labels, layer="roads").to_crs(CRS)
    shapes1 = [(g, 1) for g in b.geometry]
    shapes2 = [(g.buffer(w / 2), 2) for g, w in zip(r.geometry, r["width"])]
    for shapes in (shapes1, shapes2):
        rasterize(shapes, out=out, transform=transform)
    return out


@pytest.mark.parametrize("chip_size", [64, 100])
def test_chip_masks_match_rasterized_labels(make_scene, tmp_path, chip_size):
    scene = make_scene(257, 300, nodata=0, nodata_border=3)
    labels = _labels(tmp_path / "labels.gpkg")
    summary = make_chips(scene, labels, tmp_path / "chips", chip_size=chip_size, max_nodata=0.9,
                         split_block=2)
    assert summary.classes == ("background", "buildings", "roads")
    names = sorted(p.stem for p in (tmp_path / "chips" / "images").glob("*.tif"))
    assert len(names) == summary.n_chips
    assert summary.n_chips + summary.n_skipped == -(-257 // chip_size) * -(-300 // chip_size)
    assert summary.n_val > 0 and summary.n_train > 0
    with rasterio.open(scene) as src:
        full = src.read()
        for name in names:
            with rasterio.open(tmp_path / "chips" / "images" / f"{name}.tif") as img, \
                    rasterio.open(tmp_path / "chips" / "masks" / f"{name}.tif") as msk:
                assert img.crs == src.crs and msk.crs == src.crs
                assert img.transform == msk.transform
                col, row = ~src.transform @ (img.transform.c, img.transform.f)
                y0, x0 = int(round(row)), int(round(col))
                np.testing.assert_array_equal(
                    img.read(), full[:, y0:y0 + img.height, x0:x0 + img.width])
                mask = msk.read(1)
                expected = _expected(labels, msk.transform, msk.height, msk.width)
                nodata = img.read(1) == 0
                expected[nodata] = 255
                np.testing.assert_array_equal(mask, expected)
                assert msk.nodata == 255
    assert (tmp_path / "chips" / "split.csv").exists()


def test_split_is_disjoint_and_spatially_blocked(make_scene, tmp_path):
    scene = make_scene(512, 512)
    labels = _labels(tmp_path / "labels.gpkg")
    summary = make_chips(scene, labels, tmp_path / "chips", chip_size=32, split_block=4,
                         val_fraction=0.25, seed=3)
    with open(tmp_path / "chips" / "split.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len({r["name"] for r in rows}) == len(rows) == 256
    split = {(int(r["row"]), int(r["col"])): r["split"] for r in rows}
    assert set(split.values()) == {"train", "val", "buffer"}
    assert summary.n_val == sum(v == "val" for v in split.values())
    assert summary.n_buffer == sum(v == "buffer" for v in split.values()) > 0
    # every 4x4 block of chips is wholly val or wholly not val
    for (row, col), value in split.items():
        assert (split[(row // 4 * 4, col // 4 * 4)] == "val") == (value == "val")
    # a quarter of the 16 blocks go to validation
    assert summary.n_val == 4 * 16
    # geometric check on the chips' real bounds: no validation chip shares an edge with (or
    # overlaps) a training chip; buffer chips are exactly the training-side chips that would
    bounds = {}
    for r in rows:
        with rasterio.open(tmp_path / "chips" / "images" / f"{r['name']}.tif") as src:
            bounds[r["name"]] = (src.bounds, r["split"])
    def touch(a, b):
        ox = min(a.right, b.right) - max(a.left, b.left)
        oy = min(a.top, b.top) - max(a.bottom, b.bottom)
        return ox >= 0 and oy >= 0 and max(ox, oy) > 0
    vals = [b for b, s in bounds.values() if s == "val"]
    for b, s in bounds.values():
        if s == "train":
            assert not any(touch(b, v) for v in vals)
        if s == "buffer":
            assert any(touch(b, v) for v in vals)
    # the best of the seeded draws keeps the buffer small: at most 2 block sides per val block
    assert summary.n_buffer <= 4 * 2 * 4


def test_labels_in_other_crs_land_in_place(make_scene, tmp_path):
    scene = make_scene(257, 300)
    utm = make_chips(scene, _labels(tmp_path / "utm.gpkg"), tmp_path / "a", chip_size=128, split_block=1)
    geo = make_chips(scene, _labels(tmp_path / "geo.gpkg", crs="EPSG:4326"), tmp_path / "b",
                     chip_size=128, split_block=1)
    assert utm.n_chips == geo.n_chips
    labelled = 0
    for mask in sorted((tmp_path / "a" / "masks").glob("*.tif")):
        with rasterio.open(mask) as a, rasterio.open(tmp_path / "b" / "masks" / mask.name) as b:
            left, right = a.read(1), b.read(1)
            labelled += int((left > 0).sum())
            # reprojected edges may move by a fraction of a pixel: at most 1% of pixels differ
            assert (left != right).mean() < 0.01
    assert labelled > 2000

def test_labels_missing_the_scene_raise(make_scene, tmp_path):
    scene = make_scene(128, 128)
    labels = _labels(tmp_path / "far.gpkg", shift=50_000.0)
    with pytest.raises(LabelError, match="overlaps"):
        make_chips(scene, labels, tmp_path / "chips", chip_size=64)
    assert not (tmp_path / "chips").exists()


def test_existing_output_and_skips(make_scene, tmp_path):
    scene = make_scene(256, 256, nodata=0, nodata_border=40)
    labels = _labels(tmp_path / "labels.gpkg")
    out = tmp_path / "chips"
    first = make_chips(scene, labels, out, chip_size=64, max_nodata=0.5)
    # 4x4 chips of 64 px, 40 px nodata border: the 12 ring chips are >= 62.5% nodata
    assert (first.n_chips, first.n_skipped) == (4, 12)
    with pytest.raises(OutputExistsError):
        make_chips(scene, labels, out, chip_size=64)
    again = make_chips(scene, labels, out, chip_size=64, min_labelled=0.05, overwrite=True)
    assert again.n_chips <= first.n_chips


def test_lines_without_width_need_line_width(make_scene, tmp_path):
    scene = make_scene(128, 128)
    path = tmp_path / "l.gpkg"
    gpd.GeoDataFrame(geometry=[LineString([(X0, Y0 - 30), (X0 + 60, Y0 - 30)])],
                     crs=CRS).to_file(path, layer="roads")
    with pytest.raises(LabelError, match="line_width"):
        make_chips(scene, path, tmp_path / "c", chip_size=64)
    make_chips(scene, path, tmp_path / "c", chip_size=64, line_width=4.0)
    with rasterio.open(tmp_path / "c" / "masks" / "scene1_r0000_c0000.tif") as m:
        road_rows = np.nonzero((m.read(1) == 2).any(axis=1))[0]
    # 4 m wide at 0.5 m pixels, centred 30 m = 60 px below the top: rows 56..63
    assert road_rows.min() == 56 and road_rows.max() == 63


def test_cli_chips(make_scene, tmp_path):
    from click.testing import CliRunner

    from geounet.cli.main import cli

    scene = make_scene(257, 300)
    labels = _labels(tmp_path / "labels.gpkg")
    out = tmp_path / "chips"
    args = ["chips", str(scene), str(labels), "--out", str(out), "--chip-size", "64",
            "--split-block", "2"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "chips (" in result.output
    with rasterio.open(next((out / "masks").glob("*.tif"))) as m:
        assert m.crs.to_string() == CRS and m.dtypes[0] == "uint8"
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 1 and "--overwrite" in again.output
    bad = CliRunner().invoke(cli, args[:-2] + ["--class-layer", "nolayer", "--overwrite"])
    assert bad.exit_code == 2 and "CLASS=LAYER" in bad.output


def test_class_layer_mapping(make_scene, tmp_path):
    """Other layer names map to classes in the order given; chips.json and tags record them."""
    import json

    scene = make_scene(128, 128)
    path = tmp_path / "labels.gpkg"
    gpd.GeoDataFrame(geometry=[box(X0 + 5, Y0 - 20, X0 + 15, Y0 - 10)], crs=CRS).to_file(
        path, layer="footprints")
    gpd.GeoDataFrame(geometry=[box(X0 + 30, Y0 - 40, X0 + 50, Y0 - 30)], crs=CRS).to_file(
        path, layer="water_bodies")
    summary = make_chips(scene, path, tmp_path / "c", chip_size=128, val_fraction=0.0,
                         class_layers={"water": "water_bodies", "buildings": "footprints"})
    assert summary.classes == ("background", "water", "buildings")
    assert json.loads((tmp_path / "c" / "chips.json").read_text())["classes"] == list(
        summary.classes)
    with rasterio.open(tmp_path / "c" / "masks" / "scene1_r0000_c0000.tif") as m:
        mask = m.read(1)
        assert m.tags()["classes"] == "background,water,buildings"
    # 0.5 m pixels: footprint rows 20..39, cols 10..29; water rows 60..79, cols 60..99
    assert (mask[20:40, 10:30] == 2).all() and (mask == 2).sum() == 400
    assert (mask[60:80, 60:100] == 1).all() and (mask == 1).sum() == 800


def test_cli_user_mistakes_are_one_clean_line(make_scene, tmp_path):
    from click.testing import CliRunner

    from geounet.cli.main import cli

    labels = _labels(tmp_path / "labels.gpkg")
    cases = [
        (make_scene(64, 64, crs=None), labels, "no CRS"),
        (make_scene(128, 128), _labels(tmp_path / "far.gpkg", shift=50_000.0), "overlaps"),
        (make_scene(128, 128), labels, "with --class-layer"),  # no such layer: the flag
    ]
    for i, (scene, gpkg, message) in enumerate(cases):
        out = tmp_path / f"out{i}"
        extra = ["--class-layer", "buildings=nothing"] if "--class-layer" in message else []
        result = CliRunner().invoke(cli, ["chips", str(scene), str(gpkg), "--out", str(out),
                                          "--chip-size", "64", *extra])
        assert result.exit_code == 1, result.output
        assert "Error:" in result.output and message in result.output
        assert "class_layers" not in result.output  # the CLI's flag, not the Python name
        assert "Traceback" not in result.output
        assert not out.exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".out{i}")]
