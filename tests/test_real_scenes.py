"""Real-world scene layouts end to end (issue 9): other resolutions through ``resample``, other
value ranges through ``rescale``, ``.msk`` sidecars, GCP-only and RPC-only scenes.

Scenes come from :func:`geounet.synth.synthesize_scene` (about 150 m across, so each segment
run takes a few CPU-seconds) and are scored against their truth with
:func:`geounet.evaluation.evaluate`; the figures these tests measure are quoted in
``docs/predict.md`` (refresh with ``python benchmarks/bench_real_scenes.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

import geounet
from geounet.errors import GeoreferenceError, IncompatibleSceneError
from geounet.evaluation import evaluate
from geounet.synth import synthesize_scene

EXTENT_M = 150.0  # scene side in metres
SEED = 3


def _segment(scene: Path, out: Path, raster_out: Path | None = None,
             **options: Any) -> dict[str, float]:
    """Segment ``scene`` in this process; return building/road IoU against its truth mask."""
    geounet.segment(scene, out, raster_out=raster_out, client="synchronous", **options)
    truth = scene.parent / "truth_mask.tif"
    report = evaluate(out, truth)
    return {name: report.score(name).iou for name in ("buildings", "roads")}


def _synth(root: Path, pixel_size: float, seed: int = SEED) -> Path:
    size = round(EXTENT_M / pixel_size)
    return synthesize_scene(root / f"px{pixel_size}", size=size, seed=seed,
                            pixel_size=pixel_size).scene_path


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    """The 0.5 m scene (the built-in model's pixel size) and its scores."""
    root = tmp_path_factory.mktemp("native")
    scene = _synth(root, 0.5)
    return scene, _segment(scene, root / "native.gpkg")


@pytest.mark.parametrize("pixel_size", [0.2, 1.25])
def test_resample_auto_matches_native_scores(
    tmp_path: Path, native: tuple[Path, dict[str, float]], pixel_size: float
) -> None:
    scene = _synth(tmp_path, pixel_size)
    scores = _segment(scene, tmp_path / "auto.gpkg", resample="auto",
                      raster_out=tmp_path / "pred.tif")
    for name in ("buildings", "roads"):
        assert scores[name] == pytest.approx(native[1][name], abs=0.05), (scores, native[1])
    # vectors are in the scene's CRS, the raster on the scene's own grid (output_grid="scene",
    # the default; tests/test_output_grid.py has the model grid)
    import geopandas as gpd

    with rasterio.open(scene) as src:
        crs, transform, shape = src.crs, src.transform, src.shape
    assert gpd.read_file(tmp_path / "auto.gpkg", layer="buildings").crs == crs
    with rasterio.open(tmp_path / "pred.tif") as pred:
        assert pred.crs == crs and pred.res == pytest.approx((pixel_size, pixel_size))
        assert pred.shape == shape and pred.transform.almost_equals(transform)
    # mode error: today's refusal, naming the option
    with pytest.raises(IncompatibleSceneError, match="--resample auto"):
        geounet.segment(scene, tmp_path / "error.gpkg", client="synchronous", resample="error")
    assert not (tmp_path / "error.gpkg").exists()


def test_resample_modes_on_the_cli(tmp_path: Path) -> None:
    from geounet.cli.main import cli
    from geounet.testing import write_scene

    scene = write_scene(tmp_path / "s.tif", 150, 170, pixel_size=0.2)
    runner = CliRunner()
    base = ["segment", str(scene), "--scheduler-address", "synchronous"]
    result = runner.invoke(cli, [*base, "--out", str(tmp_path / "e.gpkg"), "--resample", "error"])
    assert result.exit_code != 0 and "--resample auto" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(cli, [*base, "--out", str(tmp_path / "b.gpkg"), "--rescale", "0,x"])
    assert result.exit_code == 2 and "--rescale" in result.output
    result = runner.invoke(cli, [*base, "--out", str(tmp_path / "a.gpkg"),
                                 "--resample", "always", "--resampling", "cubic"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a.gpkg").exists()


def _eleven_bit_copy(scene: Path, out: Path) -> Path:
    """``scene`` scaled to 11-bit values (0..2047) in uint16, as many satellite products are."""
    with rasterio.open(scene) as src:
        profile, data = src.profile, src.read()
    profile.update(dtype="uint16")
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(np.rint(data.astype(np.float64) * 2047 / 255).astype(np.uint16))
    return out


@pytest.mark.parametrize(
    "rescale", ["bits", "0,2047", pytest.param("percentile", marks=pytest.mark.slow)]
)
def test_eleven_bit_scene_with_rescale_matches_uint8(
    tmp_path: Path, native: tuple[Path, dict[str, float]], rescale: str
) -> None:
    scene8, scores8 = native
    scene16 = _eleven_bit_copy(scene8, scene8.parent / f"scene11_{rescale.replace(',', '_')}.tif")
    if rescale == "percentile":  # a contrast stretch: compare with the same stretch of uint8
        scores8 = _segment(scene8, tmp_path / "u8.gpkg", rescale="percentile")
    scores = _segment(scene16, tmp_path / "u16.gpkg", rescale=rescale)
    for name in ("buildings", "roads"):
        assert scores[name] == pytest.approx(scores8[name], abs=0.02), (scores, scores8)


def test_eleven_bit_scene_without_rescale_is_a_clear_error(
    tmp_path: Path, native: tuple[Path, dict[str, float]]
) -> None:
    scene16 = _eleven_bit_copy(native[0], tmp_path / "scene.tif")
    with pytest.raises(IncompatibleSceneError,
                       match=r"uint16 differs.*--rescale.*11-bit data.*--rescale bits maps 0..2047"):
        geounet.segment(scene16, tmp_path / "o.gpkg", client="synchronous")
    assert not (tmp_path / "o.gpkg").exists()


def test_msk_sidecar_is_nodata_in_every_output(
    tmp_path: Path, native: tuple[Path, dict[str, float]]
) -> None:
    import shutil

    import geopandas as gpd
    import shapely

    scene = tmp_path / "scene.tif"
    shutil.copy(native[0], scene)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=False), rasterio.open(scene, "r+") as ds:
        mask = np.full((ds.height, ds.width), 255, np.uint8)
        mask[:, : ds.width // 2] = 0  # the left half is masked
        ds.write_mask(mask)
        transform = ds.transform
    assert Path(f"{scene}.msk").exists()
    geounet.segment(scene, tmp_path / "o.gpkg", raster_out=tmp_path / "pred.tif",
                    client="synchronous")
    with rasterio.open(tmp_path / "pred.tif") as pred:
        classes = pred.read(1)
    assert (classes[:, : classes.shape[1] // 2] == 255).all()  # nodata class
    assert (classes[:, classes.shape[1] // 2 :] != 255).all()
    left = shapely.box(*rasterio.transform.array_bounds(mask.shape[0], mask.shape[1] // 2,
                                                        transform)[:4])
    for layer in ("buildings", "roads"):
        frame = gpd.read_file(tmp_path / "o.gpkg", layer=layer)
        assert len(frame) > 0
        inside = shapely.area(shapely.intersection(frame.geometry.values, left))
        assert inside.max() < 1e-6, layer  # nothing predicted in the masked half


def _gcp_copy(scene: Path, out: Path, angle_deg: float = 7.0) -> tuple[Path, Any]:
    """``scene``'s pixels with only GCPs: an affine grid rotated by ``angle_deg``.

    Returns the path and the affine pixel -> map transform the GCPs describe.
    """
    from affine import Affine
    from rasterio.control import GroundControlPoint as Gcp

    with rasterio.open(scene) as src:
        data, crs, transform = src.read(), src.crs, src.transform
    height, width = data.shape[1:]
    gcp_affine = transform * Affine.rotation(angle_deg)
    gcps = []
    for row, col in ((0, 0), (0, width), (height, 0), (height, width), (height / 2, width / 3)):
        x, y = gcp_affine * (col, row)
        gcps.append(Gcp(row=row, col=col, x=x, y=y))
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(out, "w", driver="GTiff", height=height, width=width,
                           count=data.shape[0], dtype=data.dtype, tiled=True) as dst:
            dst.write(data)
            dst.gcps = (gcps, crs)
    return out, gcp_affine


def test_gcp_scene_output_lands_where_the_gcp_warp_puts_it(
    tmp_path: Path, native: tuple[Path, dict[str, float]]
) -> None:
    import geopandas as gpd
    import shapely
    from rasterio.warp import calculate_default_transform

    scene, gcp_affine = _gcp_copy(native[0], tmp_path / "gcp.tif")
    geounet.segment(scene, tmp_path / "o.gpkg", raster_out=tmp_path / "pred.tif",
                    client="synchronous")
    with rasterio.open(scene) as src:
        gcps, gcp_crs = src.gcps
        want_transform, want_width, want_height = calculate_default_transform(
            gcp_crs, gcp_crs, src.width, src.height, gcps=gcps)
    with rasterio.open(tmp_path / "pred.tif") as pred:  # the raster is on the GCP warp's grid
        assert pred.crs == gcp_crs and (pred.width, pred.height) == (want_width, want_height)
        assert tuple(pred.transform)[:6] == pytest.approx(tuple(want_transform)[:6])
    # truth buildings, in scene pixels, placed on the map by the GCPs' transform
    with rasterio.open(native[0]) as src:
        to_pixels = ~src.transform
    truth = gpd.read_file(native[0].parent / "truth.gpkg", layer="buildings").geometry.values
    a, b, c, d, e, f = tuple(gcp_affine * to_pixels)[:6]
    truth = shapely.transform(truth, lambda xy: np.column_stack(
        [a * xy[:, 0] + b * xy[:, 1] + c, d * xy[:, 0] + e * xy[:, 1] + f]))
    pred = gpd.read_file(tmp_path / "o.gpkg", layer="buildings")
    assert pred.crs == gcp_crs and len(pred) >= 0.8 * len(truth)
    centroids = shapely.centroid(pred.geometry.values)
    truth_centroids = shapely.centroid(truth)
    tree = shapely.STRtree(truth_centroids)
    nearest = tree.query_nearest(centroids, return_distance=True)[1]
    big = shapely.area(pred.geometry.values) > 40  # whole buildings, not fragments
    assert np.median(nearest[big]) < 0.5  # one pixel of the 0.5 m scene


def test_rpc_only_scene_names_gdalwarp_rpc(tmp_path: Path) -> None:
    from rasterio.rpc import RPC

    path = tmp_path / "rpc.tif"
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    zeros = [0.0] * 20
    rpc = RPC(height_off=0, height_scale=100, lat_off=45, lat_scale=0.01, long_off=15,
              long_scale=0.01, line_off=32, line_scale=32, samp_off=32, samp_scale=32,
              line_num_coeff=[0, 0, 1] + zeros[3:], line_den_coeff=[1] + zeros[1:],
              samp_num_coeff=[0, 1] + zeros[2:], samp_den_coeff=[1] + zeros[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", height=64, width=64, count=3,
                           dtype="uint8") as dst:
            dst.write(np.full((3, 64, 64), 100, np.uint8))
            dst.rpcs = rpc
    with pytest.raises(GeoreferenceError, match=r"RPCs only.*gdalwarp -rpc -to RPC_DEM"):
        geounet.segment(path, tmp_path / "o.gpkg", client="synchronous")
    with pytest.raises(GeoreferenceError, match="gdalwarp -rpc"):
        geounet.predict(path, tmp_path / "o.zarr", client="synchronous")


def test_warped_rescaled_run_is_chunk_exact_and_resumable(tmp_path: Path) -> None:
    """Chunk exactness holds end to end on a warped, rescaled view; the warp and rescale are in
    the run record, which survives its JSON round trip (so --resume accepts the same run)."""
    import xarray as xr

    from geounet import output
    from geounet.run import planning
    from geounet.testing import write_scene

    scene = write_scene(tmp_path / "s.tif", 300, 280, dtype="uint16", pixel_size=0.2, seed=5)
    for chunk in (64, 256):
        for grid in ("model", "scene"):
            geounet.predict(scene, tmp_path / f"{grid}{chunk}.zarr", rescale="bits",
                            client="synchronous", chunk_size=chunk, output_grid=grid)
    for grid, shape in (("model", (120, 112)), ("scene", (300, 280))):
        small = xr.open_zarr(tmp_path / f"{grid}64.zarr")
        large = xr.open_zarr(tmp_path / f"{grid}256.zarr")
        assert small["mask"].shape == shape  # 300 x 280 px at 0.2 m -> 0.5 m, and back
        assert np.array_equal(small["mask"].values, large["mask"].values)
        assert np.array_equal(small["probabilities"].values, large["probabilities"].values)
    small = xr.open_zarr(tmp_path / "model64.zarr")
    attrs = small.attrs.get("geounet") or small.attrs
    assert attrs["scene_warp"]["resampling"] == "bilinear"  # auto: the scene is finer
    assert attrs["scene_rescale"]["method"] == "bits"
    plan = planning.plan_prediction(scene, rescale="bits", chunk_size=64)
    assert plan.info.warp is not None and plan.info.rescale is not None
    store = tmp_path / "run.zarr"
    output.create_store(store, height=plan.info.height, width=plan.info.width,
                        classes=plan.card.classes, chunk_size=64, crs_wkt=plan.info.crs_wkt,
                        transform=plan.info.transform, probability_dtype="uint8", attrs={},
                        run=plan.run)
    again = planning.plan_prediction(scene, rescale="bits", chunk_size=64)
    assert output.check_resumable(store, again.run)
    other = planning.plan_prediction(scene, rescale="0,4095", chunk_size=64)
    with pytest.raises(geounet.errors.InputError, match="rescale"):
        output.check_resumable(store, other.run)


def test_four_band_synth_scene_has_no_alpha(tmp_path: Path) -> None:
    """A 4th band of data (NIR) is not declared alpha, so it is not read as a mask."""
    from geounet.raster import open_scene, read_window

    scene = synthesize_scene(tmp_path / "s", size=96, seed=1, band_count=4).scene_path
    with rasterio.open(scene) as src:
        assert src.colorinterp[3] == rasterio.enums.ColorInterp.undefined
    info = open_scene(scene)
    assert not info.has_mask
    assert read_window(info, 0, 0, 96, 96)[1].all()
