"""Geographic (EPSG:4326) and rotated-transform scenes end to end: segment, Zarr georeferencing,
areas in m^2, evaluate tolerances in metres (issue 9 item 5).

One synthetic UTM scene is written again under a lon/lat grid and under a rotated grid with the
same pixels (:func:`geounet.testing.regrid`), so the truth stays aligned and each version must
score like the UTM one.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from geounet.evaluation import evaluate
from geounet.run.pipeline import segment
from geounet.synth import synthesize_scene
from geounet.testing import regrid

FAST = {"client": "threads", "precision": "fp32", "chunk_size": 128}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """The same 384 x 448 scene as UTM, EPSG:4326 and rotated by 25 degrees, segmented."""
    root = tmp_path_factory.mktemp("georef")
    synthesize_scene(root / "utm", height=384, width=448, seed=11)
    out: dict[str, dict[str, Path]] = {}
    for name, kwargs in (("utm", None), ("geo", {"crs": "EPSG:4326"}), ("rot", {"rotation": 25})):
        folder = root / name
        folder.mkdir(exist_ok=True)
        scene, truth = root / "utm" / "scene.tif", root / "utm" / "truth_mask.tif"
        if kwargs is not None:
            scene = regrid(scene, folder / "scene.tif", **kwargs)
            truth = regrid(truth, folder / "truth_mask.tif", **kwargs)
        segment(scene, folder / "objects.gpkg", raster_out=folder / "pred.zarr", **FAST)
        out[name] = {"scene": scene, "truth": truth, "gpkg": folder / "objects.gpkg",
                     "zarr": folder / "pred.zarr"}
    return out


def _open(store: Path):
    from geounet.output import open_prediction

    return open_prediction(store)


def test_geographic_zarr_is_labelled_in_degrees(scenes) -> None:
    ds = _open(scenes["geo"]["zarr"])
    with rasterio.open(scenes["geo"]["scene"]) as src:
        t = src.transform
        assert ds.rio.crs == src.crs and ds.rio.crs.is_geographic
    assert ds.x.attrs["units"] == "degrees_east" and ds.x.attrs["standard_name"] == "longitude"
    assert ds.y.attrs["units"] == "degrees_north" and ds.y.attrs["standard_name"] == "latitude"
    np.testing.assert_allclose(ds.x.values, t.c + t.a * (np.arange(ds.sizes["x"]) + 0.5))
    np.testing.assert_allclose(ds.y.values, t.f + t.e * (np.arange(ds.sizes["y"]) + 0.5))
    assert tuple(ds.rio.transform())[:6] == pytest.approx(tuple(t)[:6], rel=1e-12)
    utm = _open(scenes["utm"]["zarr"])
    assert utm.x.attrs["units"] == "metre"
    assert utm.x.attrs["standard_name"] == "projection_x_coordinate"
    # same pixels, so the same prediction
    np.testing.assert_array_equal(ds.mask.values, utm.mask.values)


def test_geographic_areas_are_square_metres(scenes) -> None:
    geo = gpd.read_file(scenes["geo"]["gpkg"], layer="buildings")
    utm = gpd.read_file(scenes["utm"]["gpkg"], layer="buildings")
    assert geo.crs.is_geographic and len(geo) > 10
    assert abs(len(geo) - len(utm)) <= 0.05 * len(utm)
    area_geo, area_utm = geo["area_m2"].sum(), utm["area_m2"].sum()
    assert area_geo == pytest.approx(area_utm, rel=0.03)  # m^2, not square degrees
    assert geo["area_m2"].median() == pytest.approx(utm["area_m2"].median(), rel=0.05)


def test_geographic_evaluate_with_metre_tolerance_equals_utm(scenes) -> None:
    utm = evaluate(scenes["utm"]["zarr"], scenes["utm"]["truth"], centerline_tolerance=2.0,
                   window_size=128)
    geo = evaluate(scenes["geo"]["zarr"], scenes["geo"]["truth"], centerline_tolerance=2.0,
                   window_size=128)
    # the UTM score is not trivially perfect: a 2-degree tolerance would make it 1.0
    assert utm.centerline.precision < 0.999 or utm.centerline.recall < 0.999
    assert geo.centerline.f1 == pytest.approx(utm.centerline.f1, abs=0.01)
    assert geo.centerline.precision == pytest.approx(utm.centerline.precision, abs=0.01)
    assert geo.centerline.recall == pytest.approx(utm.centerline.recall, abs=0.01)
    for name in ("buildings", "roads"):
        assert geo.score(name).iou == pytest.approx(utm.score(name).iou, abs=0.01)
    assert geo.objects.f1 == pytest.approx(utm.objects.f1, abs=0.01)
    assert "within 2 m" in geo.format_table()


def test_rotated_zarr_reproduces_every_pixel_coordinate(scenes) -> None:
    from affine import Affine

    from geounet.output.prediction import PredictionReader

    ds = _open(scenes["rot"]["zarr"])
    with rasterio.open(scenes["rot"]["scene"]) as src:
        t, height, width = src.transform, src.height, src.width
    assert t.b != 0 and t.d != 0
    assert "x" not in ds.coords and "y" not in ds.coords  # no 1-D coordinates that lie
    rows, cols = np.mgrid[0:height, 0:width]
    expected = rasterio.transform.xy(t, rows.ravel(), cols.ravel(), offset="center")
    for transform in (Affine(*tuple(ds.rio.transform())[:6]),
                      Affine(*PredictionReader(scenes["rot"]["zarr"]).transform)):
        got = rasterio.transform.xy(transform, rows.ravel(), cols.ravel(), offset="center")
        np.testing.assert_allclose(got[0], expected[0], rtol=0, atol=1e-6)
        np.testing.assert_allclose(got[1], expected[1], rtol=0, atol=1e-6)


def test_rotated_vectors_land_where_the_transform_says(scenes) -> None:
    import shapely

    with rasterio.open(scenes["utm"]["scene"]) as a, rasterio.open(scenes["rot"]["scene"]) as b:
        north_up, turned = a.transform, b.transform
    to_pixels, to_rotated = ~north_up, turned

    def move(xy: np.ndarray) -> np.ndarray:
        cols, rows = to_pixels * (xy[:, 0], xy[:, 1])
        x, y = to_rotated * (cols, rows)
        return np.column_stack([x, y])

    for layer in ("buildings", "roads"):
        utm = gpd.read_file(scenes["utm"]["gpkg"], layer=layer)
        rot = gpd.read_file(scenes["rot"]["gpkg"], layer=layer)
        expected = shapely.union_all(shapely.transform(utm.geometry.values, move))
        got = shapely.union_all(rot.geometry.values)
        assert expected.area > 100
        # polygons simplified in ground metres either way: they differ by far less than a pixel
        assert got.symmetric_difference(expected).area < 0.03 * expected.area
        assert rot["area_m2"].sum() == pytest.approx(utm["area_m2"].sum(), rel=0.03)


def test_rotated_evaluate_equals_north_up(scenes) -> None:
    utm = evaluate(scenes["utm"]["zarr"], scenes["utm"]["truth"], window_size=128)
    rot = evaluate(scenes["rot"]["zarr"], scenes["rot"]["truth"], window_size=128)
    assert rot.centerline.f1 == pytest.approx(utm.centerline.f1, abs=1e-9)
    assert rot.score("buildings").iou == pytest.approx(utm.score("buildings").iou, abs=1e-9)
