"""Tests for geounet.vectorization: seam-free polygons, areas, CRS, regularize, centerlines,
formats, streaming."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from rasterio.features import rasterize, shapes
from rasterio.transform import Affine, from_origin
from scipy.ndimage import gaussian_filter
from shapely import affinity
from shapely.geometry import Polygon, box, shape

from geounet.errors import GeoreferenceError, InputError, OutputExistsError, UnsupportedFormatError
from geounet.testing import write_prediction_store
from geounet.vectorization import vectorize

CRS = "EPSG:32633"
TRANSFORM = from_origin(500_000.0, 5_000_000.0, 0.5, 0.5)
EXACT = {"min_area": 0, "simplify": 0, "centerlines": False, "graph": False}


def write_mask(path: Path, mask: np.ndarray, *, crs: str | None = CRS,
               transform: Affine | None = TRANSFORM) -> Path:
    profile = {"driver": "GTiff", "height": mask.shape[0], "width": mask.shape[1], "count": 1,
               "dtype": "uint8", "nodata": 255}
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(mask, 1)
    return path


def write_store(path: Path, mask: np.ndarray, probabilities: np.ndarray, chunk: int) -> Path:
    return write_prediction_store(path, mask, probabilities, chunk=chunk, transform=TRANSFORM,
                                  crs=CRS)


def blob_mask(seed: int, height: int = 150, width: int = 170) -> np.ndarray:
    """Smoothed random blobs of both classes, with holes and thin necks."""
    rng = np.random.default_rng(seed)
    noise = gaussian_filter(rng.standard_normal((height, width)), 2.5)
    mask = np.zeros((height, width), np.uint8)
    mask[noise > 0.04] = 1
    mask[noise < -0.05] = 2
    mask[rng.random((height, width)) < 0.01] = 0  # pin-holes
    return mask


def reference(mask: np.ndarray, value: int, cell: int | None = None) -> list[Polygon]:
    """Whole-mask polygons (independent of geounet), optionally traced per cut cell."""
    out = []
    height, width = mask.shape
    step = cell or max(height, width)
    for y0 in range(0, height, step):
        for x0 in range(0, width, step):
            sub = mask[y0 : y0 + step, x0 : x0 + step]
            transform = TRANSFORM @ Affine.translation(x0, y0)
            for geom, _ in shapes(sub, mask=sub == value, connectivity=4, transform=transform):
                out.append(shapely.make_valid(shape(geom)))
    return out


def assert_same_polygons(got: list, expected: list) -> None:
    assert len(got) == len(expected)

    def key(g: object) -> tuple:
        return tuple(round(v, 6) for v in (*g.bounds, g.area))

    for a, b in zip(sorted(got, key=key), sorted(expected, key=key)):
        assert a.symmetric_difference(b).area == 0.0


def read(path: Path, layer: str) -> gpd.GeoDataFrame:
    return gpd.read_file(path, layer=layer, engine="pyogrio")


def test_building_across_seam_and_four_chunks_is_one_polygon(tmp_path: Path) -> None:
    mask = np.zeros((64, 64), np.uint8)
    mask[5:15, 25:40] = 1  # straddles the vertical seam at x = 32
    mask[25:41, 24:42] = 1  # touches all four chunks of a 32 px grid
    mask[30:34, 30:35] = 0  # with a hole on the seams
    src = write_mask(tmp_path / "m.tif", mask)
    result = vectorize(src, tmp_path / "o.gpkg", chunk_size=32, **EXACT)
    gdf = read(tmp_path / "o.gpkg", "buildings")
    assert result.counts["buildings"] == len(gdf) == 2
    areas = sorted(gdf.geometry.area)
    assert areas == pytest.approx(sorted([10 * 15 * 0.25, (16 * 18 - 20) * 0.25]), abs=1e-9)
    assert sum(len(g.interiors) for g in gdf.geometry) == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunk_size", [17, 32, 61])
def test_chunked_equals_whole_mask(tmp_path: Path, seed: int, chunk_size: int) -> None:
    mask = blob_mask(seed)
    src = write_mask(tmp_path / "m.tif", mask)
    vectorize(src, tmp_path / "o.gpkg", chunk_size=chunk_size, **EXACT)
    for layer, value in (("buildings", 1), ("roads", 2)):
        gdf = read(tmp_path / "o.gpkg", layer)
        assert gdf.crs.to_epsg() == 32633
        assert gdf.geometry.is_valid.all()
        assert gdf.geometry.geom_type.eq("Polygon").all()
        assert_same_polygons(list(gdf.geometry), reference(mask, value))
        # areas are pixel count x pixel area
        assert gdf["area_m2"].sum() == pytest.approx((mask == value).sum() * 0.25, abs=1e-6)
        assert gdf["area_m2"].to_numpy() == pytest.approx(gdf.geometry.area.to_numpy(), abs=1e-6)


@pytest.mark.parametrize("chunk_size", [23, 40])
def test_cut_grid_cuts_roads_only(tmp_path: Path, chunk_size: int) -> None:
    """Roads equal the whole mask traced per cut cell; buildings are never cut."""
    mask = blob_mask(5)
    src = write_mask(tmp_path / "m.tif", mask)
    vectorize(src, tmp_path / "o.gpkg", chunk_size=chunk_size, cut_size=64, **EXACT)
    roads = list(read(tmp_path / "o.gpkg", "roads").geometry)
    assert_same_polygons(roads, reference(mask, 2, cell=64))
    buildings = list(read(tmp_path / "o.gpkg", "buildings").geometry)
    assert_same_polygons(buildings, reference(mask, 1))
    assert len(reference(mask, 1, cell=64)) != len(reference(mask, 1))  # the cut would split some


def test_geographic_crs_areas_in_square_metres(tmp_path: Path) -> None:
    # 0.0001 deg pixels at 45 N: a 10 x 10 pixel square is 0.001 x 0.001 degrees, which on
    # WGS 84 is 111.132 m (meridian) x 78.847 m (parallel) = about 8762 m^2.
    mask = np.zeros((40, 40), np.uint8)
    mask[10:20, 10:20] = 1
    transform = from_origin(10.0, 45.0 + 0.0015, 0.0001, 0.0001)
    src = write_mask(tmp_path / "g.tif", mask, crs="EPSG:4326", transform=transform)
    vectorize(src, tmp_path / "g.gpkg", **EXACT)
    gdf = read(tmp_path / "g.gpkg", "buildings")
    assert gdf.crs.to_epsg() == 4326
    assert len(gdf) == 1
    assert gdf["area_m2"].iloc[0] == pytest.approx(111.132 * 78.847, rel=5e-3)
    assert gdf["perimeter_m"].iloc[0] == pytest.approx(2 * (111.132 + 78.847), rel=5e-3)


def _interior_angles(polygon: Polygon) -> np.ndarray:
    xy = np.asarray(polygon.exterior.coords)[:-1]
    prev = np.roll(xy, 1, axis=0) - xy
    nxt = np.roll(xy, -1, axis=0) - xy
    cos = (prev * nxt).sum(1) / (np.linalg.norm(prev, axis=1) * np.linalg.norm(nxt, axis=1))
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


@pytest.mark.parametrize(
    "truth",
    [
        affinity.rotate(box(0, 0, 24, 12), 30, origin=(0, 0)),
        affinity.rotate(box(0, 0, 20, 8).union(box(0, 0, 8, 18)), 20, origin=(0, 0)),
        affinity.rotate(box(0, 0, 18, 14), -12, origin=(0, 0)),
    ],
    ids=["rectangle-30", "L-20", "rectangle-minus-12"],
)
def test_regularize_gives_right_angles_and_keeps_area(tmp_path: Path, truth: Polygon) -> None:
    world = affinity.translate(truth, 500_020.0, 4_999_950.0)  # metres, 0.5 m pixels
    mask = rasterize([(world, 1)], out_shape=(120, 120), transform=TRANSFORM, dtype="uint8")
    src = write_mask(tmp_path / "r.tif", mask)
    vectorize(src, tmp_path / "r.gpkg", regularize=True, chunk_size=50, centerlines=False)
    gdf = read(tmp_path / "r.gpkg", "buildings")
    assert len(gdf) == 1
    footprint = gdf.geometry.iloc[0]
    assert footprint.is_valid
    angles = _interior_angles(footprint)
    assert np.all(np.minimum(np.abs(angles - 90), np.abs(angles - 270)) < 3), angles
    assert footprint.area == pytest.approx(world.area, rel=0.05)


@pytest.mark.parametrize("chunk_size", [512, 100, 64])
def test_centerlines_follow_synthetic_roads_and_connect_across_seams(
    tmp_path: Path, chunk_size: int
) -> None:
    from geounet.synth import synthesize_scene

    scene = synthesize_scene(tmp_path / "syn", size=512, seed=3)
    truth = read(scene.truth_path, "roads")
    vectorize(scene.mask_path, tmp_path / "c.gpkg", chunk_size=chunk_size)
    lines = read(tmp_path / "c.gpkg", "road_centerlines")
    assert lines.geometry.geom_type.eq("LineString").all()
    assert lines["length_m"].sum() == pytest.approx(truth.length.sum(), rel=0.10)
    # one connected network, as the road polygons are: no gaps at chunk seams
    roads = read(tmp_path / "c.gpkg", "roads")
    network = shapely.union_all(lines.geometry.values)
    pieces = shapely.get_parts(shapely.buffer(network, 0.01))
    assert len(pieces) == len(roads)
    # every centerline lies on the (simplified, 1 m tolerance) road polygons
    assert shapely.union_all(roads.geometry.values).buffer(1.0).contains(network)


def test_zarr_store_with_probabilities_and_layers(tmp_path: Path) -> None:
    mask = blob_mask(7, 128, 160)
    probs = np.zeros((3,) + mask.shape, np.uint8)
    probs[1][mask == 1] = 204  # 0.8
    probs[2][mask == 2] = 153  # 0.6
    store = write_store(tmp_path / "p.zarr", mask, probs, chunk=32)
    out = tmp_path / "p.gpkg"
    result = vectorize(store, out, min_area=0, simplify=0)
    assert result.chunks == 4 * 5  # the store's chunking by default
    layers = dict(pyogrio.list_layers(out))
    assert layers == {"buildings": "Polygon", "roads": "Polygon", "road_centerlines": "LineString",
                      "road_edges": "LineString", "road_nodes": "Point"}
    edges = read(out, "road_edges")  # the roads probability (0.6) under the edges, less where
    assert edges["mean_probability"].max() == pytest.approx(0.6, abs=1e-6)  # a bridge crosses
    assert edges["mean_probability"].between(0.0, 0.6 + 1e-6).all()  # background (0)
    for layer, value, p in (("buildings", 1, 0.8), ("roads", 2, 0.6)):
        gdf = read(out, layer)
        assert len(gdf) == result.counts[layer]
        assert set(gdf.columns) >= {"class", "area_m2", "perimeter_m", "mean_probability"}
        assert (gdf["class"] == layer).all()
        assert gdf["mean_probability"].to_numpy() == pytest.approx(p, abs=1e-6)
        assert_same_polygons(list(gdf.geometry), reference(mask, value))
    assert pyogrio.read_info(out, layer="buildings")["crs"] == "EPSG:32633"


def test_cleaning_min_area_simplify_fill_holes(tmp_path: Path) -> None:
    mask = np.zeros((80, 80), np.uint8)
    mask[10:40, 10:40] = 1
    mask[20:25, 20:25] = 0  # hole
    mask[60:62, 60:62] = 1  # 1 m^2: below the 4 m^2 default
    src = write_mask(tmp_path / "m.tif", mask)
    vectorize(src, tmp_path / "a.gpkg", centerlines=False)
    gdf = read(tmp_path / "a.gpkg", "buildings")
    assert len(gdf) == 1 and len(gdf.geometry.iloc[0].interiors) == 1
    vectorize(src, tmp_path / "b.gpkg", centerlines=False, fill_holes=True, min_area=0)
    gdf = read(tmp_path / "b.gpkg", "buildings")
    assert len(gdf) == 2 and all(len(g.interiors) == 0 for g in gdf.geometry)
    assert gdf.geometry.area.max() == pytest.approx(30 * 30 * 0.25)


@pytest.mark.parametrize("suffix", [".parquet", ".fgb"])
def test_parquet_and_flatgeobuf(tmp_path: Path, suffix: str) -> None:
    mask = blob_mask(3, 90, 100)
    src = write_mask(tmp_path / "m.tif", mask)
    result = vectorize(src, tmp_path / f"o{suffix}", chunk_size=40, **EXACT)
    for layer, value in (("buildings", 1), ("roads", 2)):
        path = tmp_path / f"o_{layer}{suffix}"
        assert result.paths[layer] == path
        gdf = gpd.read_parquet(path) if suffix == ".parquet" else read(path, layer)
        assert gdf.crs.to_epsg() == 32633
        assert_same_polygons(list(gdf.geometry), reference(mask, value))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["m.tif", f"o_buildings{suffix}", f"o_roads{suffix}"]
    )
    # the one naming rule, which `geounet batch` also follows
    from geounet.vectorization import layer_file_names

    named = layer_file_names(f"o{suffix}", suffix[1:], list(result.paths))
    assert {layer: path.name for layer, path in result.paths.items()} == named


def test_empty_mask_gives_valid_empty_layers(tmp_path: Path) -> None:
    src = write_mask(tmp_path / "m.tif", np.zeros((50, 60), np.uint8))
    result = vectorize(src, tmp_path / "e.gpkg", chunk_size=16)
    assert result.counts == {"buildings": 0, "roads": 0, "road_centerlines": 0, "road_edges": 0,
                             "road_nodes": 0}
    assert {name for name, _ in pyogrio.list_layers(tmp_path / "e.gpkg")} == set(result.counts)
    assert len(read(tmp_path / "e.gpkg", "buildings")) == 0


def test_bad_inputs(tmp_path: Path) -> None:
    mask = blob_mask(1, 40, 40)
    plain = write_mask(tmp_path / "plain.tif", mask, crs=None)
    with pytest.raises(GeoreferenceError, match="no CRS"):
        vectorize(plain, tmp_path / "x.gpkg")
    src = write_mask(tmp_path / "m.tif", mask)
    with pytest.raises(InputError, match=r"\['buildings', 'roads'\]"):
        vectorize(src, tmp_path / "x.gpkg", classes=["trees"])
    with pytest.raises(UnsupportedFormatError, match=".gpkg"):
        vectorize(src, tmp_path / "x.shp")
    vectorize(src, tmp_path / "x.gpkg")
    before = (tmp_path / "x.gpkg").stat().st_mtime_ns
    with pytest.raises(OutputExistsError, match="overwrite"):
        vectorize(src, tmp_path / "x.gpkg")
    assert (tmp_path / "x.gpkg").stat().st_mtime_ns == before
    vectorize(src, tmp_path / "x.gpkg", overwrite=True, classes=["buildings"])
    assert [name for name, _ in pyogrio.list_layers(tmp_path / "x.gpkg")] == ["buildings"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_cli_vectorize(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from geounet.cli.main import cli

    mask = blob_mask(4, 70, 90)
    src = write_mask(tmp_path / "m.tif", mask)
    out = tmp_path / "cli.gpkg"
    args = ["vectorize", str(src), "--out", str(out), "--chunk-size", "32", "--min-area", "0",
            "--simplify", "0", "--no-centerlines"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert_same_polygons(list(read(out, "buildings").geometry), reference(mask, 1))
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 1 and "overwrite" in again.output
    bad = CliRunner().invoke(cli, ["vectorize", str(src), "--out", str(out), "--classes", "trees"])
    assert bad.exit_code == 1 and "buildings" in bad.output
    image = write_mask(tmp_path / "image.tif", np.full((30, 30), 200, np.uint8))
    bad = CliRunner().invoke(cli, ["vectorize", str(image), "--out", str(tmp_path / "i.fgb")])
    assert bad.exit_code == 1
    assert bad.output.startswith("Error: ") and bad.output.count("\n") == 1
    assert "value 200" in bad.output and "Traceback" not in bad.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli.gpkg", "image.tif", "m.tif"]


def test_building_straddling_cut_lines_stays_whole_roads_are_cut(tmp_path: Path) -> None:
    """cut_size 32 (an 8192-style cut grid in miniature): only road polygons are cut."""
    mask = np.zeros((96, 96), np.uint8)
    mask[4:12, 20:44] = 1  # straddles the vertical cut line x = 32
    mask[24:41, 25:40] = 1  # covers the cut-line crossing (32, 32): four cut cells
    mask[70:80, :] = 2  # a road across the cut lines x = 32 and x = 64
    src = write_mask(tmp_path / "m.tif", mask)
    result = vectorize(src, tmp_path / "o.gpkg", chunk_size=16, cut_size=32, min_area=0,
                       simplify=0)
    buildings = read(tmp_path / "o.gpkg", "buildings")
    assert len(buildings) == 2
    assert sorted(buildings.geometry.area) == pytest.approx([8 * 24 * 0.25, 17 * 15 * 0.25])
    assert_same_polygons(list(buildings.geometry), reference(mask, 1))
    roads = read(tmp_path / "o.gpkg", "roads")
    assert len(roads) == 3  # one road polygon per 32 px cut cell it crosses
    assert_same_polygons(list(roads.geometry), reference(mask, 2, cell=32))
    lines = read(tmp_path / "o.gpkg", "road_centerlines")
    assert len(lines) == result.counts["road_centerlines"] == 1  # the centerline is not cut


def _normalized_lines(path: Path) -> list:
    lines = read(path, "road_centerlines").geometry.values
    return sorted(shapely.normalize(lines), key=lambda g: g.wkb)


@pytest.mark.parametrize(("chunk_size", "cut_size"), [(41, None), (64, 100), (29, 8192)])
def test_centerlines_chunked_equal_whole_mask(tmp_path: Path, chunk_size: int,
                                              cut_size: int | None) -> None:
    """Lines meeting at seams are joined: a road is one line however the scene is chunked."""
    from geounet.synth import synthesize_scene

    scene = synthesize_scene(tmp_path / "syn", size=320, seed=3)
    options = {"classes": ["roads"], "simplify": 0}
    vectorize(scene.mask_path, tmp_path / "whole.gpkg", chunk_size=320, **options)
    vectorize(scene.mask_path, tmp_path / "chunked.gpkg", chunk_size=chunk_size,
              cut_size=cut_size, **options)
    whole, chunked = (_normalized_lines(tmp_path / n) for n in ("whole.gpkg", "chunked.gpkg"))
    assert len(whole) > 3
    assert len(chunked) == len(whole)
    for a, b in zip(chunked, whole):
        assert a.equals_exact(b, 1e-9)


@pytest.mark.parametrize("chunk_size", [200, 27, 13])
def test_spur_crossing_a_seam_is_pruned(tmp_path: Path, chunk_size: int) -> None:
    mask = np.zeros((100, 200), np.uint8)
    mask[40:52, :] = 2  # a road (skeleton on row 46)
    mask[52:62, 100:110] = 2  # a stub: a 5 m spur that crosses the seams at rows 52/54/55
    src = write_mask(tmp_path / "m.tif", mask)
    rows = {}
    for spur in (10.0, 0.0):
        out = tmp_path / f"s{spur}.gpkg"
        vectorize(src, out, chunk_size=chunk_size, classes=["roads"], simplify=0,
                  spur_length=spur)
        lines = read(out, "road_centerlines").geometry
        coords = np.concatenate([np.asarray(g.coords) for g in lines])
        rows[spur] = (TRANSFORM.f - coords[:, 1]) / 0.5
    assert rows[10.0].max() < 48  # the spur is gone
    assert rows[0.0].max() > 55  # and is there when pruning is off


def test_regularize_in_geographic_crs_gives_ground_right_angles(tmp_path: Path) -> None:
    """At 60 N a 1e-5 degree pixel is about 0.56 m x 1.11 m: right angles must hold on the
    ground, not in pixel space."""
    from pyproj import Transformer

    to_ll = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    cx, cy = Transformer.from_crs("EPSG:4326", CRS, always_xy=True).transform(15.0, 60.0)
    truth = affinity.rotate(box(cx - 12, cy - 6, cx + 12, cy + 6), 30, origin=(cx, cy))
    truth_ll = shapely.transform(truth, lambda xy: np.column_stack(to_ll.transform(*xy.T)))
    transform = from_origin(15.0 - 60e-5, 60.0 + 60e-5, 1e-5, 1e-5)
    mask = rasterize([(truth_ll, 1)], out_shape=(120, 120), transform=transform, dtype="uint8")
    src = write_mask(tmp_path / "g.tif", mask, crs="EPSG:4326", transform=transform)
    vectorize(src, tmp_path / "g.gpkg", regularize=True, centerlines=False, chunk_size=50)
    gdf = read(tmp_path / "g.gpkg", "buildings")
    assert len(gdf) == 1
    footprint = gdf.to_crs(CRS).geometry.iloc[0]
    angles = _interior_angles(footprint)
    assert np.all(np.minimum(np.abs(angles - 90), np.abs(angles - 270)) < 3), angles
    assert footprint.area == pytest.approx(truth.area, rel=0.05)
    assert gdf["area_m2"].iloc[0] == pytest.approx(truth.area, rel=0.05)


def test_streaming_never_builds_a_geodataframe(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import geounet.vectorization._layers as vz
    from geounet.vectorization._writer import FeatureWriter

    sizes: list[int] = []
    write = FeatureWriter.write

    def spy(self: FeatureWriter, layer: str, geometries: object, attributes: dict) -> None:
        sizes.append(len(geometries))
        write(self, layer, geometries, attributes)

    def no_frames(*args: object, **kwargs: object) -> None:
        raise AssertionError("a GeoDataFrame was built while writing")

    monkeypatch.setattr(vz, "BATCH", 5)
    monkeypatch.setattr(FeatureWriter, "write", spy)
    monkeypatch.setattr(gpd.GeoDataFrame, "__init__", no_frames)
    mask = np.zeros((60, 60), np.uint8)
    mask[1::4, 1::4] = 1  # 225 one-pixel buildings
    for suffix in (".gpkg", ".parquet", ".fgb"):
        result = vectorize(write_mask(tmp_path / "m.tif", mask), tmp_path / f"o{suffix}",
                           min_area=0, simplify=0, centerlines=False, chunk_size=30,
                           overwrite=True)
        assert result.counts["buildings"] == 225
    assert max(sizes) <= 5
    monkeypatch.undo()
    assert len(read(tmp_path / "o.gpkg", "buildings")) == 225
    assert len(gpd.read_parquet(tmp_path / "o_buildings.parquet")) == 225


def test_image_or_bad_layer_names_are_rejected(tmp_path: Path) -> None:
    rgb = tmp_path / "rgb.tif"
    profile = {"driver": "GTiff", "height": 20, "width": 20, "count": 3, "dtype": "uint8",
               "crs": CRS, "transform": TRANSFORM}
    with rasterio.open(rgb, "w", **profile) as dst:
        dst.write(np.full((3, 20, 20), 120, np.uint8))
        dst.descriptions = ("red", "green", "blue")
    with pytest.raises(UnsupportedFormatError, match="'red', not 'class'"):
        vectorize(rgb, tmp_path / "x.gpkg")
    grey = write_mask(tmp_path / "grey.tif", np.full((20, 20), 120, np.uint8))
    with pytest.raises(InputError, match="value 120"):
        vectorize(grey, tmp_path / "x.gpkg")
    src = write_mask(tmp_path / "m.tif", blob_mask(2, 30, 30))
    with pytest.raises(InputError, match="path separator"):
        vectorize(src, tmp_path / "x.parquet", layer_names={"buildings": "a/b"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grey.tif", "m.tif", "rgb.tif"]
