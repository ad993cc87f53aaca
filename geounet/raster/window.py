"""Reading windows: rows and columns of a scene plus a halo, clipped to the scene with rasterio
(``boundless=True`` is 3.9x slower) and the outside part filled by index mirroring
(:mod:`geounet.raster.mirror`), with a valid-pixel mask; open datasets are kept per thread
so neighbouring chunks reuse GDAL's block cache.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from geounet import _faults
from geounet.errors import (
    GeounetError,
    InputError,
    SceneError,
    TransientError,
)
from geounet.raster.mirror import MIRROR_MODE, mirror_indices
from geounet.raster.scene import WARP_OPTIONS, SceneInfo, gdal_env, is_url, resampling_of


class _Handles(threading.local):
    """Per-thread open datasets, so neighbouring chunks reuse GDAL's block cache."""

    def __init__(self) -> None:
        self.open: dict[tuple[Any, ...], _Opened] = {}


_HANDLES = _Handles()
_MAX_HANDLES = 4



class _Opened:
    """An open scene: the file and, for a warped view, the WarpedVRT(s) on top of it."""

    def __init__(self, info: SceneInfo) -> None:
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning
        from rasterio.vrt import WarpedVRT

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            self.stack: list[Any] = [rasterio.open(info.source)]
        warp = info.warp
        if warp is not None:
            try:
                resampling = resampling_of(warp.resampling)
                if warp.gcps:  # GDAL's grid for the GCPs (rasterio ignores GCPs with a grid)
                    self.stack.append(
                        WarpedVRT(self.stack[-1], resampling=resampling, add_alpha=True,
                                  warp_extras=WARP_OPTIONS)
                    )
                if warp.regrid:
                    from affine import Affine

                    top = self.stack[-1]
                    self.stack.append(WarpedVRT(
                        top,
                        crs=warp.crs_wkt,
                        transform=Affine(*warp.transform[:6]),  # type: ignore[index]
                        width=warp.width,
                        height=warp.height,
                        resampling=resampling,
                        # an alpha band of the source (or of the GCP view) carries on as the
                        # view's last band; otherwise the warp adds one from masks and nodata
                        add_alpha=not _has_alpha_band(top),
                        warp_extras=WARP_OPTIONS,
                    ))
            except BaseException:
                self.close()
                raise

    @property
    def ds(self) -> Any:
        return self.stack[-1]

    @property
    def closed(self) -> bool:
        return bool(self.stack[0].closed)

    def close(self) -> None:
        for ds in reversed(self.stack):
            ds.close()


def _has_alpha_band(ds: Any) -> bool:
    return any(ci.name == "alpha" for ci in ds.colorinterp)


def _dataset(info: SceneInfo) -> Any:
    stamp: Any = None
    if not is_url(info.path):
        try:
            st = os.stat(info.path)
        except OSError as exc:
            raise SceneError(
                f"scene {info.path!r} disappeared after it was opened ({exc}); keep inputs in "
                f"place until the run ends."
            ) from exc
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    key = (info.path, stamp, info.warp, info.stack)
    opened = _HANDLES.open.get(key)
    if opened is None or opened.closed:
        for old_key in [k for k in _HANDLES.open if k[0] == info.path and k[1] != stamp]:
            _HANDLES.open.pop(old_key).close()
        while len(_HANDLES.open) >= _MAX_HANDLES:
            _HANDLES.open.pop(next(iter(_HANDLES.open))).close()
        opened = _Opened(info)
        _HANDLES.open[key] = opened
    return opened.ds


def close_datasets() -> None:
    """Close the datasets this thread keeps open for reading (e.g. at the end of a task)."""
    for opened in _HANDLES.open.values():
        opened.close()
    _HANDLES.open.clear()


def read_window(
    info: SceneInfo,
    y0: int,
    x0: int,
    height: int,
    width: int,
    *,
    bands: Sequence[int] | None = None,
    halo: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Read rows ``y0:y0+height``, columns ``x0:x0+width`` plus ``halo`` pixels per side.

    The window may lie partly (or wholly) outside the scene: outside pixels are the scene
    mirrored symmetrically (:data:`MIRROR_MODE`), repeated for halos wider than the scene.

    Parameters
    ----------
    info : from :func:`open_scene`.
    y0, x0, height, width : the window core (scene pixel coordinates).
    bands : 1-based band indices to read (default: all).
    halo : extra pixels per side.

    Returns
    -------
    pixels : ndarray (band, height + 2*halo, width + 2*halo), the scene's dtype.
    valid : bool ndarray (height + 2*halo, width + 2*halo). A pixel is invalid where the
        dataset mask (internal mask or alpha band) is 0, or where every read band equals the
        declared nodata (NaN included).

    Raises
    ------
    SceneError
        The blocks cannot be read or decoded (truncated or corrupt file).
    InputError
        A band index outside ``1..count`` or a negative size.

    Examples
    --------
    >>> pixels, valid = read_window(info, 0, 0, 256, 256, halo=92)  # doctest: +SKIP
    >>> pixels.shape, valid.shape  # doctest: +SKIP
    ((3, 440, 440), (440, 440))
    """
    bands = _checked_request(info, bands, height, width, halo)
    rows = mirror_indices(y0 - halo, y0 + height + halo, info.height)
    cols = mirror_indices(x0 - halo, x0 + width + halo, info.width)
    ry0, ry1 = int(rows.min()), int(rows.max()) + 1
    rx0, rx1 = int(cols.min()), int(cols.max()) + 1
    data, valid = _read_clipped(info, bands, ry0, rx0, ry1, rx1)
    pads = _simple_pads(y0 - halo, y0 + height + halo, info.height) + _simple_pads(
        x0 - halo, x0 + width + halo, info.width
    )
    if pads == (0, 0, 0, 0):
        return data, valid
    if all(p >= 0 for p in pads):  # mirrors only pixels of the clipped read: np.pad is fastest
        top, bottom, left, right = pads
        data = np.pad(data, ((0, 0), (top, bottom), (left, right)), mode=MIRROR_MODE)
        valid = np.pad(valid, ((top, bottom), (left, right)), mode=MIRROR_MODE)
        return data, valid
    rows_local = rows - ry0
    cols_local = cols - rx0
    data = np.take(np.take(data, rows_local, axis=1), cols_local, axis=2)
    valid = np.take(np.take(valid, rows_local, axis=0), cols_local, axis=1)
    return data, valid


def _checked_request(info: SceneInfo, bands: Sequence[int] | None, height: int, width: int,
                     halo: int) -> tuple[int, ...]:
    """The bands to read (default all), after checking them and the window's size."""
    bands = tuple(range(1, info.count + 1)) if bands is None else tuple(int(b) for b in bands)
    bad = [b for b in bands if not 1 <= b <= info.count]
    if bad or not bands:
        raise InputError(
            f"band(s) {bad or list(bands)} not in the scene's bands 1..{info.count}; "
            f"give 1-based band numbers up to {info.count}."
        )
    if height <= 0 or width <= 0 or halo < 0:
        raise InputError(
            f"window {height} x {width} with halo {halo} is empty or negative; give a "
            f"positive size and a halo >= 0."
        )
    return bands


def _read_clipped(info: SceneInfo, bands: tuple[int, ...], ry0: int, rx0: int, ry1: int,
                  rx1: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels and validity of rows ``ry0:ry1``, columns ``rx0:rx1`` (inside the scene),
    through the scene's view; a read that fails is a :class:`SceneError`, or a
    :class:`TransientError` where it may pass on retry."""
    from rasterio.errors import RasterioError
    from rasterio.windows import Window

    window = Window(rx0, ry0, rx1 - rx0, ry1 - ry0)
    try:
        _faults.before_read(info.path)
        with gdal_env(info):
            ds = _dataset(info)
            if info.warp is not None:
                data, valid = _read_warped(ds, info, bands, ry0, rx0, ry1 - ry0, rx1 - rx0)
            else:
                data = ds.read(list(bands), window=window)
                valid = _read_valid(ds, info, data, window, bands)
            if info.rescale is not None:
                data = info.rescale.apply(data, bands)
    except RasterioError as exc:
        close_datasets()
        if info.remote:  # a network read may pass: retried (geounet.distributed.cluster)
            raise TransientError(
                f"scene {info.path!r}: reading rows {ry0}:{ry1}, columns {rx0}:{rx1} failed "
                f"({exc}); a remote read that may pass on retry."
            ) from exc
        raise SceneError(
            f"scene {info.path!r}: reading rows {ry0}:{ry1}, columns {rx0}:{rx1} failed "
            f"({exc}); the file is truncated or corrupt: re-download or re-export it."
        ) from exc
    except GeounetError:
        raise
    except OSError as exc:  # an I/O error outside GDAL's decoding (network file system)
        close_datasets()
        raise TransientError(
            f"scene {info.path!r}: reading rows {ry0}:{ry1}, columns {rx0}:{rx1} failed "
            f"({exc}); an I/O error that may pass on retry."
        ) from exc
    except Exception as exc:  # noqa: BLE001 - GDAL/driver errors of any class mean a bad file
        close_datasets()
        raise SceneError(
            f"scene {info.path!r}: reading rows {ry0}:{ry1}, columns {rx0}:{rx1} failed "
            f"({type(exc).__name__}: {exc}); the file is truncated or corrupt."
        ) from exc
    return data, valid


def _simple_pads(start: int, stop: int, length: int) -> tuple[int, int]:
    """``(before, after)`` mirror widths if ``np.pad`` of the clipped range gives the scene
    mirror along one axis (pads no wider than the in-scene part), else ``(-1, -1)``."""
    inside = min(stop, length) - max(start, 0)
    before, after = max(0, -start), max(0, stop - length)
    if inside <= 0 or before > inside or after > inside:
        return (-1, -1)
    return (before, after)


def _read_warped(
    ds: Any, info: SceneInfo, bands: Sequence[int], y0: int, x0: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Read a window of a warped view block by block, each block as its own fixed request.

    GDAL's warper gives slightly different values (rounding, 1 DN) for the same pixel when
    asked for different regions. Reading every block of the view's block grid as exactly that
    block makes a pixel's value independent of the window it is read in, so chunked
    predictions equal a whole-scene one. The view's last band is its alpha (validity).
    """
    from rasterio.windows import Window

    block_height, block_width = (int(v) for v in ds.block_shapes[0])
    alpha = int(ds.count)
    indexes = [*bands, alpha]
    data = np.empty((len(bands), height, width), dtype=np.dtype(ds.dtypes[0]))
    valid = np.empty((height, width), dtype=bool)
    for by in range(y0 // block_height * block_height, y0 + height, block_height):
        for bx in range(x0 // block_width * block_width, x0 + width, block_width):
            block = Window(bx, by, min(block_width, ds.width - bx),
                           min(block_height, ds.height - by))
            pixels = ds.read(indexes, window=block)
            ya, yb = max(by, y0), min(by + int(block.height), y0 + height)
            xa, xb = max(bx, x0), min(bx + int(block.width), x0 + width)
            data[:, ya - y0 : yb - y0, xa - x0 : xb - x0] = pixels[:-1, ya - by : yb - by,
                                                                   xa - bx : xb - bx]
            valid[ya - y0 : yb - y0, xa - x0 : xb - x0] = pixels[-1, ya - by : yb - by,
                                                                 xa - bx : xb - bx] > 0
    return data, valid


def _nodata_planes(data: np.ndarray, values: Sequence[float | None]) -> list[np.ndarray]:
    """Per band with a usable nodata value: where the band equals it (NaN included)."""
    planes = []
    for plane, nodata in zip(data, values):
        if nodata is None:
            continue
        if math.isnan(nodata):
            if np.issubdtype(plane.dtype, np.floating):
                planes.append(np.isnan(plane))
            continue
        if np.issubdtype(plane.dtype, np.integer):
            limits = np.iinfo(plane.dtype)
            if nodata != int(nodata) or not limits.min <= nodata <= limits.max:
                continue  # a nodata value the dtype cannot hold marks nothing
            planes.append(plane == plane.dtype.type(int(nodata)))
        else:
            planes.append(plane == plane.dtype.type(nodata))
    return planes


def _read_valid(
    ds: Any, info: SceneInfo, data: np.ndarray, window: Any, bands: Sequence[int] | None = None
) -> np.ndarray:
    """Valid mask for the clipped window ``data`` (bands, y, x).

    Invalid: the dataset mask (internal mask, ``.msk`` sidecar, alpha band) is 0; or, when
    every band declares the same nodata, every read band equals it; or, when bands declare
    different nodata values, any read band equals its own.
    """
    if info.has_mask:
        valid = ds.dataset_mask(window=window) > 0
    else:
        valid = np.ones(data.shape[1:], dtype=bool)
    bands = tuple(range(1, data.shape[0] + 1)) if bands is None else tuple(bands)
    values = [info.band_nodata(b) for b in bands]
    planes = _nodata_planes(data, values)
    if not planes:
        return valid
    declared = {("nan" if v is not None and math.isnan(v) else v) for v in
                (info.nodatavals or (info.nodata,))}
    if len(declared) == 1 and len(planes) == len(bands):
        valid &= ~np.logical_and.reduce(planes)
    else:
        valid &= ~np.logical_or.reduce(planes)
    return valid
