"""STAC items as scenes (geounet.raster.stac, ``--assets``): an item of single-band COGs reads,
predicts and segments like the multi-band GeoTIFF it came from (local files, the local S3
server and http://), mixed resolutions are read on the finest grid, masks are combined, user
mistakes are one clean line, and batch manifests may list items.

Items are written by the tests with pystac; the rasters are tiny (at most 150 x 173 px)."""

from __future__ import annotations

import datetime
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from click.testing import CliRunner
from test_pipeline import make_checkpoint

from geounet.cli.main import cli
from geounet.errors import GeoreferenceError, InputError, SceneError, UnsupportedFormatError
from geounet.raster import open_scene, read_window
from geounet.raster.stac import gdal_path, is_stac_item, open_item

FAST = {"client": "threads", "precision": "fp32", "chunk_size": 64}
COMMON = {"B04": "red", "B03": "green", "B02": "blue"}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # seed 3: a random net that finds buildings and roads on the test scenes
    return make_checkpoint(tmp_path_factory.mktemp("stac_models") / "m.pt", seed=3)


def _write_band(path: Path, data: np.ndarray, profile: dict[str, Any], **extra: Any) -> Path:
    """One single-band COG (128 px blocks) with ``profile``'s georeferencing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = path.with_suffix(".plain.tif")
    meta = {k: v for k, v in profile.items()
            if k in ("crs", "transform", "nodata", "dtype", "height", "width")}
    meta.update(extra, driver="GTiff", count=1, height=data.shape[-2], width=data.shape[-1])
    with rasterio.open(plain, "w", **meta) as dst:
        dst.write(data.reshape(1, *data.shape[-2:]))
    rasterio.shutil.copy(plain, path, driver="COG", blocksize=128)
    plain.unlink()
    return path


def split_scene(scene: Path, folder: Path, keys: tuple[str, ...] = ("B04", "B03", "B02")
                ) -> dict[str, Path]:
    """The bands of ``scene`` as single-band COGs ``folder/KEY.tif`` (band i -> keys[i])."""
    with rasterio.open(scene) as src:
        profile, data = src.profile, src.read()
    return {key: _write_band(folder / f"{key}.tif", data[i], profile)
            for i, key in enumerate(keys)}


def write_item(path: Path, hrefs: dict[str, str], common: dict[str, str] | None = None,
               item_id: str | None = None) -> Path:
    """A STAC item at ``path`` (written with pystac, no self link) whose assets are ``hrefs``
    (relative hrefs are relative to the item), with ``eo:bands`` common names ``common``."""
    import pystac

    common = COMMON if common is None else common
    item = pystac.Item(item_id or path.stem, None, None, datetime.datetime(2024, 5, 1), {})
    for key, href in hrefs.items():
        extra = {"eo:bands": [{"name": key, "common_name": common[key]}]} if key in common else {}
        item.add_asset(key, pystac.Asset(href, media_type=pystac.MediaType.COG,
                                         roles=["data"], extra_fields=extra))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(item.to_dict(include_self_link=False)))
    return path


def _item_of(scene: Path, folder: Path) -> Path:
    """Split ``scene`` into COGs under ``folder/bands`` and write ``folder/item.json`` with
    relative hrefs."""
    split_scene(scene, folder / "bands")
    return write_item(folder / "item.json", {k: f"bands/{k}.tif" for k in COMMON})


def _features(path: Path) -> dict[str, list[bytes]]:
    import geopandas as gpd
    import pyogrio

    return {name: sorted(gpd.read_file(path, layer=name).geometry.to_wkb())
            for name, _ in pyogrio.list_layers(path)}


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------


def test_which_paths_are_items_and_their_gdal_names() -> None:
    assert is_stac_item("a/item.JSON") and is_stac_item("s3://b/items/x.json?sig=1")
    assert is_stac_item("https://earth-search.example/v1/collections/s2/items/S2B_33UUP")
    assert not is_stac_item("scene.tif") and not is_stac_item("s3://b/scene.tif")
    assert gdal_path("s3://b/k.tif") == "/vsis3/b/k.tif"
    assert gdal_path("http://h:9/b/k.tif") == "/vsicurl/http://h:9/b/k.tif"
    assert gdal_path("/vsis3/b/k.tif") == "/vsis3/b/k.tif"
    with pytest.raises(InputError, match="ftp://"):
        gdal_path("ftp://h/k.tif")


def test_item_of_single_band_cogs_reads_like_its_geotiff(
        make_scene: Callable[..., Path], tmp_path: Path) -> None:
    """Every window (edges mirrored, nodata border) of the stack equals the GeoTIFF's, pixel
    for pixel and in validity; by asset key or by common name; relative hrefs resolved
    against the item's folder."""
    scene = make_scene(150, 173, nodata=0, nodata_border=3, seed=3)
    item = _item_of(scene, tmp_path / "stac")
    ref = open_scene(scene)
    for assets in ("red,green,blue", ["B04", "B03", "B02"], ("b04", "green", "B02")):
        info = open_item(item, assets)
        assert (info.height, info.width, info.count) == (ref.height, ref.width, ref.count)
        assert info.transform == ref.transform and info.crs_wkt == ref.crs_wkt
        assert info.nodatavals == ref.nodatavals and info.dtype == ref.dtype
        assert info.path == str(item) and info.stack is not None
        for y0, x0, size, halo in ((0, 0, 64, 20), (100, 120, 64, 30), (-5, -5, 150, 0)):
            a, va = read_window(info, y0, x0, size, size, halo=halo)
            b, vb = read_window(ref, y0, x0, size, size, halo=halo)
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(va, vb)
        assert not vb.all()  # the nodata border is invalid in both
    assert open_item(item, "red,green,blue").stack.bands == ("red=B04", "green=B03",
                                                              "blue=B02")
    # what a chunk task carries: a plain value, read the same after pickling
    carried = pickle.loads(pickle.dumps(info))
    np.testing.assert_array_equal(read_window(carried, 3, 4, 50, 50)[0],
                                  read_window(ref, 3, 4, 50, 50)[0])
    # the bands in another order are the other band order
    swapped = open_item(item, "blue,green,red")
    a, _ = read_window(swapped, 0, 0, 32, 32)
    b, _ = read_window(ref, 0, 0, 32, 32)
    np.testing.assert_array_equal(a, b[::-1])


def test_multiband_asset_and_combined_masks(make_scene: Callable[..., Path],
                                            tmp_path: Path) -> None:
    """A 3-band asset gives its three bands (its alpha band left out); internal masks of
    several assets are combined: a pixel is valid where every mask is."""
    scene = make_scene(96, 80, seed=2)
    with rasterio.open(scene) as src:
        profile, data = src.profile, src.read()
    masks = np.full((2, 96, 80), 255, np.uint8)
    masks[0, :20, :] = 0
    masks[1, :, 60:] = 0
    folder = tmp_path / "stac"
    for i, key in enumerate(("B04", "B03")):
        plain = folder / f"{key}.plain.tif"
        folder.mkdir(exist_ok=True)
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(
                plain, "w", driver="GTiff", count=1, dtype="uint8", height=96, width=80,
                crs=profile["crs"], transform=profile["transform"]) as dst:
            dst.write(data[i:i + 1])
            dst.write_mask(masks[i])
        rasterio.shutil.copy(plain, folder / f"{key}.tif", driver="COG", blocksize=128)
    rgba = folder / "visual.tif"
    with rasterio.open(rgba, "w", driver="GTiff", count=4, dtype="uint8", height=96, width=80,
                       crs=profile["crs"], transform=profile["transform"],
                       photometric="RGB", alpha="YES") as dst:
        dst.write(np.concatenate([data, np.full((1, 96, 80), 255, np.uint8)]))
    item = write_item(folder / "item.json", {"B04": "B04.tif", "B03": "B03.tif",
                                             "visual": "visual.tif"}, common={})
    info = open_item(item, "visual")
    assert info.count == 3
    np.testing.assert_array_equal(read_window(info, 0, 0, 96, 80)[0], data)
    info = open_item(item, "B04,B03,visual")
    assert info.count == 5 and info.has_mask
    _, valid = read_window(info, 0, 0, 96, 80)
    np.testing.assert_array_equal(valid, (masks[0] > 0) & (masks[1] > 0))


def test_mixed_resolution_bands_are_read_on_the_finest_grid(tmp_path: Path) -> None:
    """A 1 m band beside 0.5 m ones is resampled onto the 0.5 m grid at its place on the map:
    a step between two constant halves lands between the right columns (the resampled values
    are symmetric about it), far from it the values are exact; the stack covers only where
    every band has data (the coarse band reaches further)."""
    from rasterio.transform import from_origin

    crs = "EPSG:32633"
    fine = {"crs": crs, "transform": from_origin(500_000, 5_000_000, 0.5, 0.5), "dtype": "uint8"}
    rng = np.random.default_rng(0)
    red, blue = (rng.integers(1, 255, (100, 120), dtype=np.uint8) for _ in range(2))
    # the coarse band starts 4 m (8 fine px) further west and north and reaches further east
    coarse = np.full((60, 70), 50, np.uint8)
    coarse[:, 34:] = 200  # the step at x = 500_000 - 4 + 34 = 500_030 m: fine column 60
    folder = tmp_path / "stac"
    _write_band(folder / "B04.tif", red, fine)
    _write_band(folder / "B02.tif", blue, fine)
    _write_band(folder / "B03.tif", coarse, {
        "crs": crs, "transform": from_origin(499_996, 5_000_004, 1.0, 1.0), "dtype": "uint8"})
    item = write_item(folder / "item.json", {k: f"{k}.tif" for k in COMMON})
    info = open_item(item, "red,green,blue")
    assert (info.height, info.width) == (100, 120)
    assert info.transform[:6] == tuple(fine["transform"])[:6]
    data, valid = read_window(info, 0, 0, 100, 120)
    assert valid.all()
    np.testing.assert_array_equal(data[0], red)
    np.testing.assert_array_equal(data[2], blue)
    green = data[1].astype(int)
    assert (green[:, :52] == 50).all() and (green[:, 68:] == 200).all()
    np.testing.assert_array_equal(green[:, 59] + green[:, 60], 250)  # symmetric about x=60
    assert (green[:, 59] < 125).all() and (green[:, 60] > 125).all()
    # nearest resampling: the step exactly at column 60
    near = read_window(open_item(item, "red,green,blue", resampling="nearest"), 0, 0, 100,
                       120)[0][1]
    assert (near[:, :60] == 50).all() and (near[:, 60:] == 200).all()


def test_stack_refuses_assets_it_cannot_combine(make_scene: Callable[..., Path],
                                                tmp_path: Path) -> None:
    """Assets in different CRSs, of different types, or not overlapping: one error each,
    naming the assets and the fix."""
    from rasterio.transform import from_origin

    folder = tmp_path / "stac"
    grid = {"transform": from_origin(500_000, 5_000_000, 0.5, 0.5), "dtype": "uint8"}
    ones = np.ones((40, 40), np.uint8)
    _write_band(folder / "a.tif", ones, {**grid, "crs": "EPSG:32633"})
    _write_band(folder / "b.tif", ones, {**grid, "crs": "EPSG:32634"})
    _write_band(folder / "c.tif", ones.astype(np.uint16), {**grid, "crs": "EPSG:32633",
                                                           "dtype": "uint16"})
    _write_band(folder / "d.tif", ones, {"transform": from_origin(600_000, 5_000_000, 0.5, 0.5),
                                         "crs": "EPSG:32633", "dtype": "uint8"})
    item = write_item(folder / "item.json", {k: f"{k}.tif" for k in "abcd"}, common={})
    with pytest.raises(GeoreferenceError, match=r"'a'.*'b'.*different CRSs.*gdalwarp -t_srs"):
        open_item(item, "a,b")
    with pytest.raises(UnsupportedFormatError, match=r"a \(uint8\), c \(uint16\)"):
        open_item(item, "a,c")
    with pytest.raises(GeoreferenceError, match="do not overlap"):
        open_item(item, "a,d")


def test_item_errors_name_the_value_and_the_fix(make_scene: Callable[..., Path],
                                                tmp_path: Path) -> None:
    scene = make_scene(40, 40)
    item = _item_of(scene, tmp_path / "stac")
    with pytest.raises(InputError, match=r"no asset or band named 'nir'; its assets: "
                                         r"B04 \(red\), B03 \(green\), B02 \(blue\)"):
        open_item(item, "red,green,nir")
    with pytest.raises(InputError, match=r"needs --assets.*its assets: B04 \(red\)"):
        open_item(item, None)
    with pytest.raises(SceneError, match="does not exist"):
        open_item(tmp_path / "missing.json", "red")
    with pytest.raises(SceneError, match="not JSON.*drop --assets"):
        open_item(scene, "red")
    collection = tmp_path / "collection.json"
    collection.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    with pytest.raises(InputError, match="ItemCollection"):
        open_item(collection, "red")
    (tmp_path / "stac" / "bands" / "B03.tif").unlink()
    with pytest.raises(SceneError, match=r"asset 'B03' of STAC item .* cannot be opened"):
        open_item(item, "red,green,blue")
    # several multi-band assets list the same common name and no key matches: ambiguous
    double = write_item(tmp_path / "two.json", {"x": "stac/bands/B04.tif",
                                                "y": "stac/bands/B02.tif"},
                        common={"x": "red", "y": "red"})
    with pytest.raises(InputError, match=r"several assets \(x, y\)"):
        open_item(double, "red")


# --------------------------------------------------------------------------------------
# predict, segment, batch
# --------------------------------------------------------------------------------------


def test_stac_item_segments_to_the_same_polygons_as_its_geotiff(
        make_scene: Callable[..., Path], tmp_path: Path, model: Path) -> None:
    """``geounet segment item.json --assets red,green,blue`` (three single-band COGs) writes
    the same polygons (WKB, every layer) and the same prediction store as segmenting the
    three-band GeoTIFF they came from."""
    import xarray as xr

    scene = make_scene(150, 173, nodata=0, nodata_border=2, seed=4)
    item = _item_of(scene, tmp_path / "stac")
    common = ["--model", str(model), "--in-process", "--precision", "fp32",
              "--chunk-size", "64"]
    runner = CliRunner()
    for source, extra, name in ((scene, [], "tif"),
                                (item, ["--assets", "red,green,blue"], "item")):
        result = runner.invoke(cli, ["segment", str(source), "--out",
                                     str(tmp_path / f"{name}.gpkg"), "--raster-out",
                                     str(tmp_path / f"{name}.zarr"), *common, *extra])
        assert result.exit_code == 0, result.output
    polygons = _features(tmp_path / "tif.gpkg")
    assert len(polygons["buildings"]) > 5
    assert _features(tmp_path / "item.gpkg") == polygons
    with xr.open_zarr(tmp_path / "tif.zarr") as a, xr.open_zarr(tmp_path / "item.zarr") as b:
        np.testing.assert_array_equal(a.probabilities.values, b.probabilities.values)
        np.testing.assert_array_equal(a.mask.values, b.mask.values)


def test_stac_item_through_the_model_warp_equals_its_geotiff(
        make_scene: Callable[..., Path], tmp_path: Path, model: Path) -> None:
    """At 0.7 m for a 0.5 m model the stack is read through the same warp as the GeoTIFF:
    identical predictions."""
    import xarray as xr

    from geounet.run.pipeline import predict

    scene = make_scene(110, 120, pixel_size=0.7, seed=6)
    item = _item_of(scene, tmp_path / "stac")
    a = predict(scene, tmp_path / "a.zarr", model=model, **FAST)
    b = predict(item, tmp_path / "b.zarr", model=model, assets=["red", "green", "blue"],
                **FAST)
    assert a.pixels == b.pixels > 110 * 120  # resampled onto the finer model grid
    with xr.open_zarr(tmp_path / "a.zarr") as x, xr.open_zarr(tmp_path / "b.zarr") as y:
        np.testing.assert_array_equal(x.probabilities.values, y.probabilities.values)


def test_resume_names_a_changed_asset(make_scene: Callable[..., Path], tmp_path: Path,
                                      model: Path) -> None:
    """The run record fingerprints every asset file and the bands asked for, so a resume
    after an asset changed (or with other assets) is refused, naming the scene."""
    from geounet.run.planning import plan_prediction

    scene = make_scene(40, 40, seed=1)
    item = _item_of(scene, tmp_path / "stac")
    before = plan_prediction(item, model=model, assets="red,green,blue").run["scene"]
    assert before["bands"] == ["red=B04", "green=B03", "blue=B02"]
    assert [Path(a["path"]).name for a in before["assets"]] == ["B04.tif", "B03.tif",
                                                                "B02.tif"]
    other = make_scene(40, 40, seed=9)
    split_scene(other, tmp_path / "stac" / "bands")
    after = plan_prediction(item, model=model, assets="red,green,blue").run["scene"]
    assert after["assets"] != before["assets"] and after["path"] == before["path"]
    swapped = plan_prediction(item, model=model, assets="blue,green,red").run["scene"]
    assert swapped["bands"] != before["bands"]


def test_cli_stac_mistakes_are_one_clean_line(make_scene: Callable[..., Path],
                                              tmp_path: Path) -> None:
    """A missing asset, an item without --assets, --assets on a GeoTIFF, an empty asset
    name: exit 1 (2 for the flag), one line naming the value and the fix, no traceback."""
    scene = make_scene(40, 40)
    item = _item_of(scene, tmp_path / "stac")
    runner = CliRunner()
    out = str(tmp_path / "o.gpkg")
    cases = [
        ([str(item), "--assets", "red,green,nir"], 1, "no asset or band named 'nir'"),
        ([str(item)], 1, "needs --assets"),
        ([str(scene), "--assets", "red,green,blue"], 1, "drop --assets"),
        ([str(item), "--assets", "red,,blue"], 2, "empty asset name"),
    ]
    for args, code, message in cases:
        result = runner.invoke(cli, ["segment", *args, "--out", out])
        assert result.exit_code == code, result.output
        assert message in result.output and "Traceback" not in result.output
        if code == 1:
            assert len(result.output.strip().splitlines()) == 1, result.output
    assert not Path(out).exists()


def test_batch_manifest_lists_items(make_scene: Callable[..., Path], tmp_path: Path,
                                    model: Path) -> None:
    """A manifest listing two STAC items and a GeoTIFF: each item's polygons equal those of
    the GeoTIFF it came from; ``assets`` applies to the items only; ``assets`` with no item
    among the scenes is refused up front."""
    from geounet.batch.job import run_batch

    scenes = {n: make_scene(90, 100, seed=s, name=f"{n}.tif") for n, s in (("a", 1), ("b", 2))}
    items = [_item_of(path, tmp_path / "items" / n) for n, path in scenes.items()]
    for n, item in zip(scenes, items):  # distinct output names
        item.rename(item.with_name(f"item_{n}.json"))
    manifest = tmp_path / "scenes.txt"
    manifest.write_text("items/a/item_a.json\nitems/b/item_b.json\nb.tif\n")
    result = run_batch([], tmp_path / "out", manifests=[manifest], model=model,
                       assets="red,green,blue", **FAST)
    assert [r.status for r in result.scenes] == ["done"] * 3, result.format_table()
    out = tmp_path / "out"
    reference = run_batch([scenes["a"]], tmp_path / "ref", model=model, **FAST)
    assert reference.ok
    assert _features(out / "item_a.gpkg") == _features(tmp_path / "ref" / "a.gpkg")
    assert _features(out / "item_b.gpkg") == _features(out / "b.gpkg")
    assert _features(out / "b.gpkg")["buildings"]
    with pytest.raises(InputError, match=r"--assets.*no scene is one"):
        run_batch([scenes["a"]], tmp_path / "none", model=model, assets="red", **FAST)


# --------------------------------------------------------------------------------------
# object storage and http
# --------------------------------------------------------------------------------------


def _upload(folder: Path, bucket: str, endpoint: str) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=bucket)
    for path in folder.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), bucket, path.relative_to(folder).as_posix(),
                           ExtraArgs={"ACL": "public-read"})  # http:// reads it unsigned


def test_stac_item_on_s3_and_http_segments_to_the_same_polygons(
        make_scene: Callable[..., Path], tmp_path: Path, model: Path, s3_server: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The item and its COGs in a bucket of the local S3 server (relative hrefs): segmenting
    ``s3://bucket/stac/item.json`` and the same item by its ``http://`` URL (assets read
    through /vsicurl/) gives the polygons of the local GeoTIFF."""
    from geounet import objectstore
    from geounet.run.pipeline import segment

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)  # removed again after the test
    scene = make_scene(120, 130, seed=7)
    _item_of(scene, tmp_path / "up" / "stac")
    _upload(tmp_path / "up", "bucket", s3_server)
    options = {"model": model, "assets": "red,green,blue", **FAST}
    segment(scene, tmp_path / "tif.gpkg", **{**options, "assets": None})
    expected = _features(tmp_path / "tif.gpkg")
    assert len(expected["buildings"]) > 5
    result = segment("s3://bucket/stac/item.json", tmp_path / "s3.gpkg", **options)
    assert result.pixels == 120 * 130
    assert _features(tmp_path / "s3.gpkg") == expected
    info = open_item("s3://bucket/stac/item.json", "red", read_text=objectstore.read_text)
    assert info.stack.sources == ("/vsis3/bucket/stac/bands/B04.tif",) and info.remote
    url = f"{s3_server}/bucket/stac/item.json"  # path-style URL, read without signing
    segment(url, tmp_path / "http.gpkg", **options)
    assert _features(tmp_path / "http.gpkg") == expected
