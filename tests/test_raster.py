"""Tests for geounet.raster reading: scene info, mirrored halos, valid masks, read errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geounet.errors import InputError, SceneError
from geounet.raster import mirror_indices, mirror_pad, open_scene, read_window


def _full(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


def test_open_scene_describes_georeferencing(make_scene: Callable[..., Path]) -> None:
    path = make_scene(257, 300, count=4, dtype="uint16", nodata=0, pixel_size=2.0)
    info = open_scene(path)
    assert (info.height, info.width, info.count, info.dtype) == (257, 300, 4, "uint16")
    assert info.nodata == 0.0 and info.block_shape == (256, 256)
    assert info.pixel_size == pytest.approx(2.0)
    with rasterio.open(path) as ds:
        assert rasterio.crs.CRS.from_wkt(info.crs_wkt) == ds.crs
        assert info.transform == tuple(ds.transform)[:6]
    import pickle

    assert pickle.loads(pickle.dumps(info)) == info


def test_mirror_matches_numpy_symmetric() -> None:
    rng = np.random.default_rng(1)
    for n in (1, 2, 5, 13):
        row = rng.integers(0, 100, n)
        for pad in (0, 1, n, 2 * n + 3, 37):
            want = np.pad(row, pad, mode="symmetric")
            got = row[mirror_indices(-pad, n + pad, n)]
            np.testing.assert_array_equal(got, want)
    arr = rng.integers(0, 9, (2, 7, 4))
    np.testing.assert_array_equal(
        mirror_pad(arr, (3, 9), (11, 2)),
        np.pad(arr, ((0, 0), (3, 11), (9, 2)), mode="symmetric"),
    )


@pytest.mark.parametrize(
    "window",
    [
        (0, 0, 50, 60, 20),  # top-left corner
        (200, 250, 57, 50, 30),  # bottom-right corner
        (100, 100, 40, 40, 10),  # inside, no mirroring
        (0, 0, 257, 300, 92),  # whole scene with a big halo
        (240, 10, 17, 30, 300),  # halo larger than the scene: mirrored repeatedly
        (-40, 320, 20, 20, 5),  # window entirely outside the scene
    ],
)
def test_read_window_equals_padded_full_array(
    make_scene: Callable[..., Path], window: tuple[int, ...]
) -> None:
    path = make_scene(257, 300, count=3, blocksize=64)
    full = _full(path)
    info = open_scene(path)
    y0, x0, height, width, halo = window
    pixels, valid = read_window(info, y0, x0, height, width, halo=halo, bands=(3, 1))
    pad = 1000
    padded = np.pad(full[[2, 0]], ((0, 0), (pad, pad), (pad, pad)), mode="symmetric")
    want = padded[:, pad + y0 - halo : pad + y0 + height + halo, pad + x0 - halo : pad + x0 + width + halo]
    assert pixels.shape == (2, height + 2 * halo, width + 2 * halo)
    assert pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels, want)
    assert valid.shape == pixels.shape[1:] and valid.all()


def test_nodata_gives_invalid_pixels(make_scene: Callable[..., Path]) -> None:
    path = make_scene(120, 90, nodata=0, nodata_border=7)
    info = open_scene(path)
    _, valid = read_window(info, 0, 0, 120, 90, halo=4)
    inner = valid[4:-4, 4:-4]
    assert not inner[:7].any() and not inner[:, -7:].any()
    assert inner[7:-7, 7:-7].all()
    assert not valid[:4].any()  # mirrored nodata stays nodata


def test_nodata_needs_all_bands(tmp_path: Path) -> None:
    data = np.full((3, 20, 20), 50, np.uint8)
    data[0, 0, 0] = 0  # one band at nodata: still valid
    data[:, 5, 5] = 0  # all bands at nodata: invalid
    path = tmp_path / "n.tif"
    with rasterio.open(path, "w", driver="GTiff", height=20, width=20, count=3, dtype="uint8",
                       nodata=0) as dst:
        dst.write(data)
    _, valid = read_window(open_scene(path), 0, 0, 20, 20)
    assert valid[0, 0] and not valid[5, 5] and valid.sum() == 399


def test_internal_mask_gives_invalid_pixels(tmp_path: Path) -> None:
    path = tmp_path / "m.tif"
    mask = np.full((40, 30), 255, np.uint8)
    mask[10:20, 5:15] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(path, "w", driver="GTiff", height=40, width=30, count=3,
                           dtype="uint8", crs="EPSG:32633",
                           transform=rasterio.transform.from_origin(0, 40, 1, 1)) as dst:
            dst.write(np.full((3, 40, 30), 9, np.uint8))
            dst.write_mask(mask)
    info = open_scene(path)
    assert info.has_mask
    _, valid = read_window(info, 0, 0, 40, 30)
    np.testing.assert_array_equal(valid, mask > 0)


def test_alpha_band_gives_invalid_pixels(tmp_path: Path) -> None:
    path = tmp_path / "a.tif"
    data = np.full((4, 30, 30), 100, np.uint8)
    data[3] = 255
    data[3, :, :11] = 0
    with rasterio.open(path, "w", driver="GTiff", height=30, width=30, count=4, dtype="uint8",
                       photometric="RGB", alpha="YES") as dst:
        dst.write(data)
    info = open_scene(path)
    assert info.has_mask
    _, valid = read_window(info, 0, 0, 30, 30, bands=(1, 2, 3))
    assert not valid[:, :11].any() and valid[:, 11:].all()


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(SceneError, match="does not exist"):
        open_scene(tmp_path / "nope.tif")
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"II*\x00" + b"\x13" * 500)
    with pytest.raises(SceneError):
        open_scene(junk)
    text = tmp_path / "text.tif"
    text.write_text("not a raster")
    with pytest.raises(SceneError):
        open_scene(text)


def test_truncated_file_raises_scene_error(make_scene: Callable[..., Path]) -> None:
    path = make_scene(300, 300, blocksize=64, compress="deflate")
    size = path.stat().st_size
    data = path.read_bytes()
    path.write_bytes(data[: size // 2])
    with pytest.raises(SceneError, match="truncated"):
        open_scene(path)  # the header is intact, but blocks reach past the end of the file


def test_truncated_blocks_still_fail_when_read(make_scene: Callable[..., Path]) -> None:
    """A scene truncated after it was opened fails in read_window with SceneError too."""
    path = make_scene(300, 300, blocksize=64, compress="deflate")
    info = open_scene(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SceneError):
        read_window(info, 0, 0, 300, 300)


def test_directory_is_not_a_scene(tmp_path: Path) -> None:
    folder = tmp_path / "scene.tif"
    folder.mkdir()
    with pytest.raises(SceneError, match="is a directory"):
        open_scene(folder)


def test_bad_band_and_window(make_scene: Callable[..., Path]) -> None:
    info = open_scene(make_scene(30, 30))
    with pytest.raises(InputError, match="1..3"):
        read_window(info, 0, 0, 10, 10, bands=(4,))
    with pytest.raises(InputError):
        read_window(info, 0, 0, 0, 10)


def test_rewritten_file_is_reread(make_scene: Callable[..., Path]) -> None:
    path = make_scene(40, 40, seed=1, name="same.tif")
    first, _ = read_window(open_scene(path), 0, 0, 40, 40)
    from geounet.testing import write_scene

    path.unlink()
    write_scene(path, 40, 40, seed=2)
    second, _ = read_window(open_scene(path), 0, 0, 40, 40)
    np.testing.assert_array_equal(second, _full(path))
    assert not np.array_equal(first, second)


# ---- sidecars, per-band dtype/nodata, warped views (issue 9) ---------------------------


def _plain_tiff(path: Path, data: np.ndarray, **profile: object) -> Path:
    """A GeoTIFF written without any georeferencing of its own (sidecars give it)."""
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    count, height, width = data.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", height=height, width=width, count=count,
                           dtype=str(data.dtype), **profile) as dst:
            dst.write(data)
    return path


def test_msk_sidecar_marks_invalid_pixels(make_scene: Callable[..., Path]) -> None:
    path = make_scene(120, 140)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=False), rasterio.open(path, "r+") as ds:
        mask = np.full((120, 140), 255, np.uint8)
        mask[30:60, 40:90] = 0
        ds.write_mask(mask)
    assert Path(f"{path}.msk").exists()  # an external mask, not an internal one
    info = open_scene(path)
    assert info.has_mask
    _, valid = read_window(info, 0, 0, 120, 140)
    assert np.array_equal(valid, mask > 0)


def test_aux_xml_and_world_file_give_georeferencing(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(1, 255, (3, 50, 60), dtype=np.uint8)
    # .aux.xml (GDAL's PAM sidecar) carrying the CRS and geotransform
    aux = _plain_tiff(tmp_path / "aux.tif", data)
    crs = rasterio.crs.CRS.from_epsg(32633)
    (tmp_path / "aux.tif.aux.xml").write_text(
        "<PAMDataset>\n"
        f"  <SRS>{crs.to_wkt()}</SRS>\n"
        "  <GeoTransform>500000, 0.5, 0, 5000000, 0, -0.5</GeoTransform>\n"
        "</PAMDataset>\n"
    )
    info = open_scene(aux)
    assert rasterio.crs.CRS.from_wkt(info.crs_wkt) == crs
    assert info.transform == (0.5, 0.0, 500000.0, 0.0, -0.5, 5000000.0)
    assert info.pixel_size == pytest.approx(0.5)
    # world files (.tfw, .wld, .tifw): transform of pixel centres; the CRS from .aux.xml
    for suffix in (".tfw", ".wld", ".tifw"):
        stem = f"world{suffix[1:]}"
        tif = _plain_tiff(tmp_path / f"{stem}.tif", data)
        world = tmp_path / (f"{stem}.tif{suffix[4:]}" if suffix == ".tifw" else f"{stem}{suffix}")
        world.write_text("2.0\n0\n0\n-2.0\n600001.0\n5100001.0\n")
        (tmp_path / f"{stem}.tif.aux.xml").write_text(
            f"<PAMDataset><SRS>{crs.to_wkt()}</SRS></PAMDataset>"
        )
        info = open_scene(tif)
        assert info.transform == (2.0, 0.0, 600000.0, 0.0, -2.0, 5100002.0), suffix
        assert info.georef == "transform" and info.pixel_size == pytest.approx(2.0)


def test_remote_paths_skip_directory_listing_local_ones_do_not(
    make_scene: Callable[..., Path],
) -> None:
    from geounet.raster import gdal_env, is_remote

    for path in ("/vsicurl/https://x/s.tif", "/vsis3/b/s.tif", "s3://b/s.tif", "https://x/s.tif"):
        assert is_remote(path)
        with gdal_env(path=path):
            assert rasterio.env.getenv()["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
    info = open_scene(make_scene(20, 20))
    assert not is_remote(info.path)
    with gdal_env(info):
        assert "GDAL_DISABLE_READDIR_ON_OPEN" not in rasterio.env.getenv()


def _band_vrt(path: Path, source: str, kind: str, nodata: list, height: int, width: int) -> Path:
    """A VRT of ``source``'s bands with per-band nodata (a GeoTIFF holds one value only)."""
    with rasterio.open(path.parent / source) as src:
        srs = f"<SRS>{src.crs.to_wkt()}</SRS>" if src.crs else ""
        gt = ", ".join(str(v) for v in src.transform.to_gdal())
    bands = "".join(
        f'<VRTRasterBand dataType="{kind}" band="{i}">'
        + (f"<NoDataValue>{value}</NoDataValue>" if value is not None else "")
        + f'<SimpleSource><SourceFilename relativeToVRT="1">{source}</SourceFilename>'
        f"<SourceBand>{i}</SourceBand></SimpleSource></VRTRasterBand>"
        for i, value in enumerate(nodata, start=1)
    )
    path.write_text(f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">{srs}'
                    f"<GeoTransform>{gt}</GeoTransform>{bands}</VRTDataset>")
    return path


def test_mixed_per_band_nodata(tmp_path: Path) -> None:
    data = np.full((3, 40, 50), 100, np.uint16)
    data[0, :10, :] = 0  # band 1's nodata: these rows are nodata
    data[1, :, :5] = 7  # band 2's nodata: these columns are nodata
    data[2, 20:, :] = 0  # band 3 has no nodata: a 0 there is data
    _plain_tiff(tmp_path / "mixed.tif", data, crs="EPSG:32633",
                transform=rasterio.transform.from_origin(0, 0, 0.5, 0.5))
    path = _band_vrt(tmp_path / "mixed.vrt", "mixed.tif", "UInt16", [0, 7, None], 40, 50)
    info = open_scene(path)
    assert info.nodatavals == (0.0, 7.0, None)
    _, valid = read_window(info, 0, 0, 40, 50)
    want = np.ones((40, 50), bool)
    want[:10, :] = False
    want[:, :5] = False
    assert np.array_equal(valid, want)
    # reading only band 3: nothing of it is nodata
    _, valid3 = read_window(info, 0, 0, 40, 50, bands=[3])
    assert valid3.all()


def test_mixed_per_band_dtypes_are_refused(tmp_path: Path) -> None:
    from geounet.errors import UnsupportedFormatError

    _plain_tiff(tmp_path / "a.tif", np.ones((1, 8, 8), np.uint8))
    _plain_tiff(tmp_path / "b.tif", np.ones((1, 8, 8), np.uint16))
    bands = "".join(
        f'<VRTRasterBand dataType="{kind}" band="{i}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="1">{name}</SourceFilename><SourceBand>1</SourceBand>'
        f"</SimpleSource></VRTRasterBand>"
        for i, (kind, name) in enumerate((("Byte", "a.tif"), ("UInt16", "b.tif")), start=1)
    )
    vrt = tmp_path / "mixed.vrt"
    vrt.write_text(f'<VRTDataset rasterXSize="8" rasterYSize="8">{bands}</VRTDataset>')
    with pytest.raises(UnsupportedFormatError, match=r"uint8, uint16.*gdal_translate -ot UInt16"):
        open_scene(vrt)


def _gcp_scene(path: Path, height: int = 90, width: int = 110) -> Path:
    from rasterio.control import GroundControlPoint as Gcp

    data = np.random.default_rng(3).integers(1, 255, (3, height, width), dtype=np.uint8)
    _plain_tiff(path, data)
    # a slightly rotated 0.5 m grid given by four corner GCPs
    gcps = [Gcp(row=r, col=c, x=500000 + 0.5 * c + 0.05 * r, y=5000000 - 0.5 * r + 0.05 * c)
            for r, c in ((0, 0), (0, width), (height, 0), (height, width))]
    with rasterio.open(path, "r+") as ds:
        ds.gcps = (gcps, rasterio.crs.CRS.from_epsg(32633))
    return path


def test_gcp_scene_is_read_through_the_gcp_warp(tmp_path: Path) -> None:
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    path = _gcp_scene(tmp_path / "gcp.tif")
    info = open_scene(path)
    assert info.georef == "gcps" and info.warp is not None and info.warp.gcps
    assert info.crs_wkt is not None and info.pixel_size == pytest.approx(0.5, rel=0.1)
    pixels, valid = read_window(info, 0, 0, info.height, info.width)
    with rasterio.open(path) as src, WarpedVRT(src, add_alpha=True,
                                               resampling=Resampling.bilinear) as vrt:
        assert (vrt.height, vrt.width) == (info.height, info.width)
        assert tuple(vrt.transform)[:6] == pytest.approx(info.transform)
        want = vrt.read()
    assert np.abs(pixels.astype(int) - want[:3])[:, valid].max() <= 1  # GDAL's rounding
    assert np.array_equal(valid, want[3] > 0) and 0 < valid.mean() < 1  # corners are outside


def test_rpc_only_scene_is_described_as_such(tmp_path: Path) -> None:
    from rasterio.rpc import RPC

    path = _plain_tiff(tmp_path / "rpc.tif", np.ones((3, 20, 20), np.uint8))
    coeffs = [0.0] * 20
    rpc = RPC(height_off=0, height_scale=100, lat_off=45, lat_scale=0.01, long_off=15,
              long_scale=0.01, line_off=10, line_scale=10, samp_off=10, samp_scale=10,
              line_num_coeff=[0, 0, 1] + coeffs[3:], line_den_coeff=[1] + coeffs[1:],
              samp_num_coeff=[0, 1] + coeffs[2:], samp_den_coeff=[1] + coeffs[1:])
    with rasterio.open(path, "r+") as ds:
        ds.rpcs = rpc
    info = open_scene(path)
    assert info.georef == "rpcs" and info.crs_wkt is None


@pytest.mark.parametrize("scale", [0.4, 2.5])
def test_warped_windows_equal_the_whole_warped_read(
    make_scene: Callable[..., Path], scale: float
) -> None:
    from geounet.raster.fitting import warp_to_pixel_size

    path = make_scene(301, 257, pixel_size=0.5, nodata=0, nodata_border=6, seed=4)
    info = warp_to_pixel_size(open_scene(path), 0.5 * scale)
    assert info.pixel_size == pytest.approx(0.5 * scale)
    whole, whole_valid = read_window(info, 0, 0, info.height, info.width)
    assert 0 < whole_valid.mean() < 1  # the nodata border is nodata in the view
    rng = np.random.default_rng(0)
    for _ in range(25):
        y0 = int(rng.integers(-20, info.height - 1))
        x0 = int(rng.integers(-20, info.width - 1))
        height = int(rng.integers(1, info.height + 20 - max(y0, 0)))
        width = int(rng.integers(1, info.width + 20 - max(x0, 0)))
        halo = int(rng.integers(0, 30))
        got, got_valid = read_window(info, y0, x0, height, width, halo=halo)
        pad = ((0, 0), (64, 64), (64, 64))
        ref = np.pad(whole, pad, mode="symmetric")
        ref_valid = np.pad(whole_valid, pad[1:], mode="symmetric")
        ys = slice(y0 - halo + 64, y0 + height + halo + 64)
        xs = slice(x0 - halo + 64, x0 + width + halo + 64)
        assert np.array_equal(got, ref[:, ys, xs])
        assert np.array_equal(got_valid, ref_valid[ys, xs])
