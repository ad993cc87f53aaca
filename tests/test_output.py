"""Tests for geounet.output: Zarr v3 prediction store layout, markers, COG validity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from geounet import output
from geounet.errors import InputError, OutputExistsError, UnsupportedFormatError

CLASSES = ("background", "buildings", "roads")
TRANSFORM = (0.5, 0.0, 500_000.0, 0.0, -0.5, 5_000_000.0)


def _crs_wkt() -> str:
    from rasterio.crs import CRS

    return CRS.from_epsg(32633).to_wkt()


def _fill_store(path: Path, height: int, width: int, chunk: int, dtype: str = "uint8",
                crs: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    spec = output.create_store(
        path, height=height, width=width, classes=CLASSES, chunk_size=chunk,
        crs_wkt=_crs_wkt() if crs else None, transform=TRANSFORM if crs else None,
        probability_dtype=dtype, run={"scene": "x"},
    )
    rng = np.random.default_rng(1)
    probs = rng.random((3, height, width)).astype(np.float32)
    probs /= probs.sum(0, keepdims=True)
    valid = np.ones((height, width), bool)
    valid[:7, :] = False
    valid[:, -3:] = False
    mask = probs.argmax(0).astype(np.uint8)
    for y0 in range(0, height, chunk):
        for x0 in range(0, width, chunk):
            rows, cols = slice(y0, y0 + chunk), slice(x0, x0 + chunk)
            output.write_chunk(spec, y0, x0, probs[:, rows, cols], mask[rows, cols],
                               valid[rows, cols])
            output.mark_done(spec, y0, x0, {"pixels": 1})
    return probs, mask, valid


def test_output_format_by_suffix() -> None:
    assert output.output_format("a/b.zarr") == "zarr"
    assert output.output_format("b.TIF") == "cog"
    # one closed set of raster formats: the suffixes' formats are batch's raster choices
    from geounet.config import BatchRaster, RasterFormat, choices
    from geounet.output.paths import SUFFIXES

    assert set(SUFFIXES.values()) == set(choices(RasterFormat)) == \
        set(choices(BatchRaster)) - {"none"}
    with pytest.raises(UnsupportedFormatError, match=r"\.zarr"):
        output.output_format("pred.png")


def test_check_output(tmp_path: Path) -> None:
    existing = tmp_path / "p.zarr"
    existing.mkdir()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        output.check_output(existing, overwrite=False)
    assert output.check_output(existing, overwrite=True) == "zarr"
    with pytest.raises(InputError, match="does not exist"):
        output.check_output(tmp_path / "missing" / "p.tif", overwrite=False)


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_store_layout_and_georeferencing(tmp_path: Path, dtype: str) -> None:
    store = tmp_path / "p.zarr"
    probs, mask, valid = _fill_store(store, 150, 131, 64, dtype)
    assert set(output.done_chunks(store)) == {
        output.chunk_id(y, x) for y in range(0, 150, 64) for x in range(0, 131, 64)
    }
    output.finalize_store(store)
    assert not (store / "_geounet_done").exists()
    ds = output.open_prediction(store)
    assert ds.rio.crs.to_epsg() == 32633
    assert tuple(ds.rio.transform())[:6] == TRANSFORM
    assert ds.probabilities.dims == ("class", "y", "x")
    assert ds.probabilities.shape == (3, 150, 131)
    assert ds.probabilities.dtype == np.dtype(dtype)
    assert ds.probabilities.encoding["chunks"] == (3, 64, 64)
    assert ds.mask.rio.nodata == 255
    got_mask = ds.mask.values
    assert (got_mask[~valid] == 255).all()
    np.testing.assert_array_equal(got_mask[valid], mask[valid])
    got = ds.probabilities.values
    assert (got[:, ~valid] == 0).all()
    expected = output.quantize(probs, dtype)
    np.testing.assert_array_equal(got[:, valid], expected[:, valid])
    assert ds.attrs["geounet"]["classes"] == list(CLASSES)


def test_resume_fingerprint(tmp_path: Path) -> None:
    store = tmp_path / "p.zarr"
    output.create_store(store, height=10, width=10, classes=CLASSES, chunk_size=16,
                        crs_wkt=None, transform=None, run={"scene": "a", "chunk_size": 16})
    assert output.check_resumable(store, {"scene": "a", "chunk_size": 16})
    assert not output.check_resumable(tmp_path / "none.zarr", {"scene": "a"})
    with pytest.raises(InputError, match="chunk_size"):
        output.check_resumable(store, {"scene": "a", "chunk_size": 32})


def _ghost_header(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(400)


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_cog_from_store_is_valid_and_georeferenced(tmp_path: Path, dtype: str) -> None:
    store = tmp_path / "p.zarr"
    probs, mask, valid = _fill_store(store, 300, 257, 128, dtype)
    output.finalize_store(store)
    cog = output.write_cog(store, tmp_path / "p.tif", block_size=64)
    # no temporaries; the sidecar carries the class band's categories
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.tif", "p.tif.aux.xml", "p.zarr"]
    with rasterio.open(cog) as src:
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert src.block_shapes[0] == (64, 64)
        assert src.overviews(1), "a COG larger than one block needs overviews"
        assert src.crs.to_epsg() == 32633
        assert tuple(src.transform)[:6] == TRANSFORM
        assert (src.height, src.width, src.count) == (300, 257, 4)
        assert src.descriptions == ("class", *CLASSES)
        assert src.mask_flag_enums[0] == [rasterio.enums.MaskFlags.per_dataset]
        classes = src.read(1)
        np.testing.assert_array_equal(classes[valid], mask[valid])
        assert (classes[~valid] == 255).all()
        assert (src.read_masks(1)[~valid] == 0).all() and (src.read_masks(1)[valid] == 255).all()
        np.testing.assert_array_equal(src.read([2, 3, 4])[:, valid],
                                      output.quantize(probs, dtype)[:, valid])
    header = _ghost_header(cog)
    assert b"LAYOUT=IFDS_BEFORE_DATA" in header and b"BLOCK_ORDER=ROW_MAJOR" in header


def _cog_layout_problems(path: Path) -> list[str]:
    """The layout rules of GDAL's ``validate_cloud_optimized_geotiff.py``, read through GDAL's
    TIFF metadata domain (rio-cogeo is not a dependency): tiled; the IFDs of the full
    resolution and then of each overview, in that order and all before any pixel data; the
    pixel data of the smallest overview first, the full resolution's last."""
    problems = []
    with rasterio.open(path) as src:
        levels = len(src.overviews(1))
        if src.block_shapes[0][1] == src.width and src.width > 512:
            problems.append("not tiled")

        def item(name: str, ovr: int | None) -> int:
            return int(src.get_tag_item(name, "TIFF", bidx=1, ovr=ovr))

        ifds = [item("IFD_OFFSET", None)] + [item("IFD_OFFSET", i) for i in range(levels)]
        data = [item("BLOCK_OFFSET_0_0", None)] + [item("BLOCK_OFFSET_0_0", i)
                                                   for i in range(levels)]
        if ifds != sorted(ifds):
            problems.append(f"IFDs out of order: {ifds}")
        if data != sorted(data, reverse=True):
            problems.append(f"pixel data not smallest overview first: {data}")
        if max(ifds) > min(data):
            problems.append("an IFD after pixel data")
    return problems


@pytest.mark.parametrize(("dtype", "compress", "height", "width", "block"), [
    ("uint8", "DEFLATE", 300, 257, 64),
    ("float32", "ZSTD", 130, 530, 64),
])
def test_cog_is_valid_and_pixel_identical_to_the_store_at_every_level(
    tmp_path: Path, dtype: str, compress: str, height: int, width: int, block: int
) -> None:
    """The COG written from its staging file's overviews: a valid COG layout, every pixel of
    the store, overviews halving until one tile, each with the nodata mask where band 1 is
    255, and the DEFLATE/ZSTD predictor declared (2 for integers, 3 for float32)."""
    import zarr

    store = tmp_path / "p.zarr"
    _fill_store(store, height, width, 128, dtype)
    group = zarr.open_group(str(store), mode="r")
    expected_classes, expected_probs = group["mask"][:], group["probabilities"][:]
    cog = output.write_cog(store, tmp_path / "p.tif", block_size=block, compress=compress)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.tif", "p.tif.aux.xml", "p.zarr"]
    assert _cog_layout_problems(cog) == []
    with rasterio.open(cog) as src:
        structure = src.tags(ns="IMAGE_STRUCTURE")
        assert structure["LAYOUT"] == "COG" and structure["COMPRESSION"] == compress
        assert structure["PREDICTOR"] == ("2" if dtype == "uint8" else "3")
        assert src.dtypes == (dtype,) * 4
        np.testing.assert_array_equal(src.read(1), expected_classes.astype(dtype))
        np.testing.assert_array_equal(src.read([2, 3, 4]), expected_probs)
        np.testing.assert_array_equal(src.dataset_mask() == 0, expected_classes == 255)
        levels = len(src.overviews(1))
    sides = []
    for level in range(levels):
        with rasterio.open(cog, overview_level=level) as ovr:
            factor = 2 ** (level + 1)
            assert (ovr.height, ovr.width) == (-(-height // factor), -(-width // factor))
            sides.append(max(ovr.height, ovr.width))
            classes = ovr.read(1)
            assert (ovr.dataset_mask() == 0).any()
            np.testing.assert_array_equal(ovr.dataset_mask() == 0, classes == 255)
            assert (ovr.read([2, 3, 4])[:, classes == 255] == 0).all()
    # overviews halve until the smallest fits in one tile
    assert levels and sides[-1] <= block < ([max(height, width)] + sides)[-2]


def test_cog_pixel_space_and_overwrite(tmp_path: Path) -> None:
    store = tmp_path / "p.zarr"
    _fill_store(store, 40, 50, 32, crs=False)
    output.finalize_store(store)
    ds = output.open_prediction(store)
    assert ds.rio.crs is None
    cog = output.write_cog(store, tmp_path / "p.tif")
    with pytest.raises(OutputExistsError):
        output.write_cog(store, cog)
    output.write_cog(store, cog, overwrite=True)
    with rasterio.open(cog) as src:
        assert src.crs is None
        assert (src.height, src.width) == (40, 50)


def test_replace_directory_keeps_new(tmp_path: Path) -> None:
    old, new = tmp_path / "p.zarr", tmp_path / ".p.zarr.geounet-partial"
    old.mkdir()
    (old / "old").write_text("x")
    new.mkdir()
    (new / "new").write_text("y")
    output.replace_path(new, old)
    assert (old / "new").exists() and not (old / "old").exists() and not new.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.zarr"]


def test_store_chunks_never_exceed_the_scene(tmp_path: Path) -> None:
    """A chunk size far beyond the scene must not make zarr allocate chunk-sized buffers."""
    import zarr

    spec = output.create_store(tmp_path / "p.zarr", height=30, width=50, classes=CLASSES,
                               chunk_size=1_000_000, crs_wkt=None, transform=None)
    group = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")
    assert group["probabilities"].chunks == (3, 30, 50) and group["mask"].chunks == (30, 50)
    probs = np.full((3, 30, 50), 0.5, np.float32)
    output.write_chunk(spec, 0, 0, probs, np.ones((30, 50), np.uint8), np.ones((30, 50), bool))
    assert (group["mask"][:] == 1).all() and group.attrs["geounet"]["chunk_size"] == 1_000_000


# --------------------------------------------------------------------------- GIS-clean COG


def _gdal() -> object:
    """The GDAL library rasterio itself runs on, through ctypes (the GDAL Python bindings are
    not a geounet dependency): category names and raster attribute tables have no rasterio
    API."""
    import ctypes
    import glob

    import rasterio

    base = Path(rasterio.__file__).parent
    found = sorted(glob.glob(str(base.parent / "rasterio.libs" / "libgdal*.so*")))
    if not found:
        found = sorted(glob.glob(str(base / ".dylibs" / "libgdal*")))
    if not found:
        pytest.skip("rasterio is not a wheel with a bundled libgdal")
    lib = ctypes.CDLL(found[0])
    lib.GDALOpen.restype = ctypes.c_void_p
    lib.GDALOpen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    lib.GDALGetRasterBand.restype = ctypes.c_void_p
    lib.GDALGetRasterBand.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.GDALGetRasterColorInterpretation.argtypes = [ctypes.c_void_p]
    lib.GDALGetColorInterpretationName.restype = ctypes.c_char_p
    lib.GDALGetRasterCategoryNames.restype = ctypes.POINTER(ctypes.c_char_p)
    lib.GDALGetRasterCategoryNames.argtypes = [ctypes.c_void_p]
    lib.GDALGetRasterColorTable.restype = ctypes.c_void_p
    lib.GDALGetRasterColorTable.argtypes = [ctypes.c_void_p]
    lib.GDALGetColorEntryCount.argtypes = [ctypes.c_void_p]
    lib.GDALGetDefaultRAT.restype = ctypes.c_void_p
    lib.GDALGetDefaultRAT.argtypes = [ctypes.c_void_p]
    lib.GDALRATGetRowCount.argtypes = [ctypes.c_void_p]
    lib.GDALRATGetColumnCount.argtypes = [ctypes.c_void_p]
    lib.GDALRATGetNameOfCol.restype = ctypes.c_char_p
    lib.GDALRATGetNameOfCol.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.GDALRATGetValueAsString.restype = ctypes.c_char_p
    lib.GDALRATGetValueAsString.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.GDALGetMaskFlags.argtypes = [ctypes.c_void_p]
    lib.GDALClose.argtypes = [ctypes.c_void_p]
    lib.GDALAllRegister()
    return lib


def test_cog_bands_are_grey_with_class_categories(tmp_path: Path) -> None:
    """Issue 9 item 6: no RGB/alpha bands; nodata declared; the class band has a colour table,
    category names and a thematic attribute table that GDAL itself reads back."""
    import shutil

    store = tmp_path / "p.zarr"
    probs, mask, valid = _fill_store(store, 90, 70, 64)
    cog = output.write_cog(store, tmp_path / "p.tif", block_size=64)
    assert (tmp_path / "p.tif.aux.xml").is_file()
    gdal = _gdal()
    handle = gdal.GDALOpen(str(cog).encode(), 0)
    assert handle
    try:
        band = gdal.GDALGetRasterBand(handle, 1)
        # GDAL 3.10's GTiff band loads the .aux.xml lazily: the colour table query loads it,
        # a first category-name query alone does not
        assert gdal.GDALGetColorEntryCount(gdal.GDALGetRasterColorTable(band)) == 256
        names = gdal.GDALGetRasterCategoryNames(band)
        assert [names[i].decode() for i in range(3)] == list(CLASSES)
        assert names[255].decode() == "nodata"
        assert gdal.GDALGetColorEntryCount(gdal.GDALGetRasterColorTable(band)) == 256
        rat = gdal.GDALGetDefaultRAT(band)
        assert rat and gdal.GDALRATGetRowCount(rat) == 4
        columns = [gdal.GDALRATGetNameOfCol(rat, i).decode()
                   for i in range(gdal.GDALRATGetColumnCount(rat))]
        assert columns[:2] == ["value", "class"]
        rows = [(gdal.GDALRATGetValueAsString(rat, r, 0).decode(),
                 gdal.GDALRATGetValueAsString(rat, r, 1).decode()) for r in range(4)]
        assert rows == [("0", "background"), ("1", "buildings"), ("2", "roads"), ("255", "nodata")]
        for index in range(2, 5):
            b = gdal.GDALGetRasterBand(handle, index)
            assert gdal.GDALGetColorInterpretationName(
                gdal.GDALGetRasterColorInterpretation(b)).decode() == "Undefined"
            assert gdal.GDALGetMaskFlags(b) == 0x02  # GMF_PER_DATASET: the nodata mask
    finally:
        gdal.GDALClose(handle)
    with rasterio.open(cog) as src:
        interp = src.colorinterp
        assert interp[0] == rasterio.enums.ColorInterp.palette  # class indices + colour table
        assert all(c == rasterio.enums.ColorInterp.undefined for c in interp[1:])
        colours = src.colormap(1)
        assert colours[1] == (*output.CLASS_COLOURS["buildings"], 255)
        assert colours[255][3] == 0  # nodata transparent
        assert src.mask_flag_enums[0] == [rasterio.enums.MaskFlags.per_dataset]
        assert (src.read_masks(2)[~valid] == 0).all() and (src.read_masks(2)[valid] == 255).all()
    # the TIFF alone (no sidecar, e.g. copied elsewhere): photometric grey, never RGB + alpha
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(cog, alone / "p.tif")
    with rasterio.open(alone / "p.tif") as src:
        assert src.colorinterp[0] == rasterio.enums.ColorInterp.gray
        assert set(src.colorinterp[1:]) == {rasterio.enums.ColorInterp.undefined}
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"


@pytest.mark.parametrize("geographic", [True, False])
def test_zarr_axis_coordinates_follow_the_crs(tmp_path: Path, geographic: bool) -> None:
    from rasterio.crs import CRS

    wkt = CRS.from_epsg(4326 if geographic else 32633).to_wkt()
    transform = (1e-5, 0.0, 15.0, 0.0, -1e-5, 45.0) if geographic else TRANSFORM
    output.create_store(tmp_path / "p.zarr", height=20, width=30, classes=CLASSES,
                        chunk_size=16, crs_wkt=wkt, transform=transform)
    ds = output.open_prediction(tmp_path / "p.zarr")
    x, y = ds.x.attrs, ds.y.attrs
    if geographic:
        assert (x["standard_name"], x["units"]) == ("longitude", "degrees_east")
        assert (y["standard_name"], y["units"]) == ("latitude", "degrees_north")
    else:
        assert (x["standard_name"], x["units"]) == ("projection_x_coordinate", "metre")
    assert ds.x.values[0] == pytest.approx(transform[2] + transform[0] / 2)
    assert tuple(ds.rio.transform())[:6] == pytest.approx(transform)


def test_rotated_store_has_no_lying_axis_coordinates(tmp_path: Path) -> None:
    from affine import Affine

    t = Affine(0.5, 0.0, 500_000.0, 0.0, -0.5, 5_000_000.0) * Affine.rotation(30)
    output.create_store(tmp_path / "p.zarr", height=20, width=30, classes=CLASSES,
                        chunk_size=16, crs_wkt=_crs_wkt(), transform=tuple(t)[:6])
    ds = output.open_prediction(tmp_path / "p.zarr")
    assert "x" not in ds.coords and "y" not in ds.coords
    assert tuple(ds.rio.transform())[:6] == pytest.approx(tuple(t)[:6])
    assert ds.mask.rio.crs.to_epsg() == 32633
