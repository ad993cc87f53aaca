"""Tests for geounet.raster reading: scene info, mirrored halos, valid masks, read errors."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

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
