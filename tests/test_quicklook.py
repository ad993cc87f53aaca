"""Tests for geounet.output.quicklook: size, outlines where the polygons are, CRS, nodata, outputs."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from shapely.geometry import LineString, box

from geounet.errors import InputError, OutputExistsError, UnsupportedFormatError
from geounet.output.quicklook import LAYER_COLORS, quicklook_shape, write_quicklook

ORIGIN = (500_000.0, 5_000_000.0)  # write_scene's default upper-left corner, 0.5 m pixels


def _world(row: float, col: float) -> tuple[float, float]:
    return ORIGIN[0] + col * 0.5, ORIGIN[1] - row * 0.5


def _png(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:  # the PNG driver: (band, y, x)
        return src.read()


def _is(rgb: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    return np.all(rgb == np.array(color, dtype=np.uint8)[:, None, None], axis=0)


@pytest.fixture
def vectors(tmp_path: Path) -> Path:
    """A building square over scene rows 100-200, cols 120-240 and a road centerline on row 250."""
    (x0, y1), (x1, y0) = _world(100, 120), _world(200, 240)
    building = gpd.GeoDataFrame({"class": ["buildings"]}, geometry=[box(x0, y0, x1, y1)],
                                crs="EPSG:32633")
    line = LineString([_world(250, 10), _world(250, 390)])
    road = gpd.GeoDataFrame({"class": ["roads"]}, geometry=[line], crs="EPSG:32633")
    path = tmp_path / "pred.gpkg"
    building.to_file(path, layer="buildings")
    road.to_file(path, layer="road_centerlines")
    return path


@pytest.mark.parametrize(("height", "width", "max_size", "expected"), [
    (4096, 4096, 1024, (1024, 1024)),
    (4096, 2048, 1024, (1024, 512)),
    (300, 401, 200, (150, 200)),
    (257, 300, 1024, (257, 300)),   # never enlarged
    (1001, 10, 100, (100, 1)),
])
def test_quicklook_shape(height: int, width: int, max_size: int,
                         expected: tuple[int, int]) -> None:
    assert quicklook_shape(height, width, max_size) == expected


def test_outlines_drawn_where_the_polygons_are(make_scene, vectors: Path, tmp_path: Path) -> None:
    scene = make_scene(300, 400)
    out = tmp_path / "ql.png"
    result = write_quicklook(scene, vectors, out, max_size=200)
    assert out.exists() and result.path == out
    rgb = _png(out)
    assert rgb.shape == (3, 150, 200) and rgb.dtype == np.uint8
    assert (result.height, result.width) == (150, 200)
    assert result.counts == {"buildings": 1, "road_centerlines": 1}
    red = _is(rgb, LAYER_COLORS["buildings"])
    # the square spans rows 50-100, cols 60-120 at scale 2: its four edges are drawn ...
    for edge in (red[49:52, 62:118], red[99:102, 62:118]):
        assert edge.any(axis=0).mean() > 0.95
    for edge in (red[52:98, 59:62], red[52:98, 119:122]):
        assert edge.any(axis=1).mean() > 0.95
    # ... its inside and the far corners are not
    assert not red[55:95, 65:115].any()
    assert not red[:40].any() and not red[110:].any()
    cyan = _is(rgb, LAYER_COLORS["road_centerlines"])
    assert cyan[124:127, 10:190].any(axis=0).mean() > 0.95
    assert cyan.sum() < 3 * 200


def test_vectors_in_another_crs_are_reprojected(make_scene, vectors: Path,
                                                tmp_path: Path) -> None:
    scene = make_scene(300, 400)
    frame = gpd.read_file(vectors, layer="buildings").to_crs("EPSG:4326")
    other = tmp_path / "wgs84.gpkg"
    frame.to_file(other, layer="buildings")
    write_quicklook(scene, other, tmp_path / "a.png", max_size=200)
    write_quicklook(scene, vectors, tmp_path / "b.png", max_size=200, layers=["buildings"])
    red_a = _is(_png(tmp_path / "a.png"), LAYER_COLORS["buildings"])
    red_b = _is(_png(tmp_path / "b.png"), LAYER_COLORS["buildings"])
    assert red_b.sum() > 150
    assert (red_a != red_b).sum() <= 0.05 * red_b.sum()


def test_image_is_stretched_and_nodata_black(make_scene, tmp_path: Path) -> None:
    scene = make_scene(300, 300, nodata=0, nodata_border=30)
    result = write_quicklook(scene, None, tmp_path / "img.png", max_size=150)
    rgb = _png(result.path)
    assert rgb.shape == (3, 150, 150) and result.counts == {}
    assert (rgb[:, :14] == 0).all() and (rgb[:, -14:] == 0).all()
    inner = rgb[:, 20:130, 20:130]
    # a 2-98 % stretch uses the full 8-bit range
    assert inner.min() == 0 and inner.max() == 255
    assert inner.std() > 40


def test_single_band_scene_is_grey(make_scene, tmp_path: Path) -> None:
    scene = make_scene(64, 80, count=1, dtype="uint16")
    rgb = _png(write_quicklook(scene, None, tmp_path / "g.png").path)
    assert rgb.shape == (3, 64, 80)
    assert (rgb[0] == rgb[1]).all() and (rgb[1] == rgb[2]).all()


def test_output_rules(make_scene, vectors: Path, tmp_path: Path) -> None:
    scene = make_scene(64, 64)
    out = tmp_path / "q.png"
    write_quicklook(scene, vectors, out)
    with pytest.raises(OutputExistsError, match="overwrite"):
        write_quicklook(scene, vectors, out)
    write_quicklook(scene, vectors, out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir() if "partial" in p.name) == []
    with pytest.raises(UnsupportedFormatError, match=r"\.png"):
        write_quicklook(scene, vectors, tmp_path / "q.jpg")
    with pytest.raises(InputError, match="layers"):
        write_quicklook(scene, vectors, tmp_path / "r.png", layers=["nope"])
    with pytest.raises(InputError, match="max_size"):
        write_quicklook(scene, vectors, tmp_path / "s.png", max_size=4)
    with pytest.raises(InputError, match="bands"):
        write_quicklook(scene, vectors, tmp_path / "t.png", bands=(1, 2))
