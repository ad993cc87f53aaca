"""Open scenes and read windows with a mirrored halo and a valid-pixel mask.

Everything outside the scene is filled by whole-sample symmetric mirroring (``np.pad`` mode
``"symmetric"``: the edge pixel is repeated, ``... 2 1 0 | 0 1 2 ...``), repeated as often as
needed, so a window of any size anywhere equals the same window cut from
``np.pad(scene, width, mode="symmetric")``. The engine and the whole-scene reference use this
one mirror (:data:`MIRROR_MODE`).

Windows are read clipped to the scene with rasterio (``boundless=True`` is 3.9x slower) and the
outside part is filled with numpy by index mirroring.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from geounet import _faults
from geounet.errors import InputError, SceneError, TransientError

log = logging.getLogger(__name__)

MIRROR_MODE = "symmetric"
"""The ``np.pad`` mode equal to the mirroring used for scene borders everywhere in geounet."""

MIN_CACHE_BYTES = 64 * 2**20
"""Lower bound of the GDAL block cache set by the reader."""


@dataclass(frozen=True)
class SceneInfo:
    """Everything about a scene that tasks need; cheap to pickle.

    Parameters
    ----------
    path : GDAL path or URL (``/vsicurl/...``, ``.vrt``, COG, GeoTIFF).
    height, width, count : size and band count.
    dtype : numpy name of the pixel type (``"uint8"``, ``"uint16"``, ...).
    crs_wkt : CRS as WKT, or None without one.
    transform : affine ``(a, b, c, d, e, f)`` pixel-to-CRS transform.
    nodata : declared nodata value of band 1, or None.
    block_shape : internal block ``(height, width)`` of band 1.
    has_mask : the scene has an internal/dataset mask or an alpha band (beyond ``nodata``).
    """

    path: str
    height: int
    width: int
    count: int
    dtype: str
    crs_wkt: str | None
    transform: tuple[float, ...]
    nodata: float | None
    block_shape: tuple[int, int]
    has_mask: bool = False

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(count, height, width)``."""
        return (self.count, self.height, self.width)

    @property
    def pixel_size(self) -> float | None:
        """Ground size of a pixel in metres at the scene centre (geodesic for a geographic CRS,
        rotation-aware), or None without a CRS: see :func:`geounet.georef.pixel_size_m`."""
        from geounet.georef import pixel_size_m

        return pixel_size_m(self.crs_wkt or None, self.transform, self.width, self.height)

    @property
    def block_row_bytes(self) -> int:
        """Decoded bytes of one row of internal blocks across the whole scene, all bands."""
        itemsize = np.dtype(self.dtype).itemsize
        return int(self.width * self.block_shape[0] * self.count * itemsize)


def _cache_bytes(info: SceneInfo) -> int:
    """GDAL block cache for ``info``: see :func:`block_cache_bytes`."""
    return block_cache_bytes(info.block_row_bytes)


def block_cache_bytes(block_row_bytes: int) -> int:
    """GDAL block cache for windowed reads: two rows of internal blocks (``block_row_bytes``
    each), at least 64 MiB, at most a quarter of the machine's memory."""
    need = max(MIN_CACHE_BYTES, 2 * block_row_bytes)
    try:
        import psutil

        need = min(need, psutil.virtual_memory().total // 4)
    except Exception:  # noqa: BLE001 - psutil is optional for this bound
        pass
    return int(need)


def gdal_env(info: SceneInfo | None = None, *, cache_bytes: int | None = None) -> Any:
    """A ``rasterio.Env`` for reading ``info`` with a bounded GDAL block cache.

    GDAL's default cache is 5% of RAM; filled by a scene read once window by window it makes
    a process's memory grow with the scene. Two rows of internal blocks are enough for
    windowed reads (see :func:`_cache_bytes`).
    """
    import rasterio

    options: dict[str, Any] = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}
    if cache_bytes is None and info is not None:
        cache_bytes = _cache_bytes(info)
    if cache_bytes is not None:
        options["GDAL_CACHEMAX"] = cache_bytes
    return rasterio.Env(**options)


def open_scene(path: str | os.PathLike[str]) -> SceneInfo:
    """Open a scene (any GDAL path) and describe it.

    Parameters
    ----------
    path : local file, ``.vrt``, COG, or a GDAL virtual path such as ``/vsicurl/https://...``.

    Returns
    -------
    SceneInfo

    Raises
    ------
    SceneError
        The file is missing, not a raster GDAL can read, or corrupt.

    Examples
    --------
    >>> info = open_scene("scene.tif")  # doctest: +SKIP
    >>> info.height, info.width, info.count  # doctest: +SKIP
    (257, 300, 3)
    """
    import rasterio
    from rasterio.enums import MaskFlags
    from rasterio.errors import RasterioIOError

    path = os.fspath(path)
    is_virtual = path.startswith("/vsi") or "://" in path
    if not is_virtual and not os.path.exists(path):
        raise SceneError(
            f"scene {path!r} does not exist; check the path (relative paths are taken from "
            f"{os.getcwd()!r})."
        )
    if not is_virtual and os.path.isdir(path):
        raise SceneError(
            f"scene {path!r} is a directory, not a raster file; give the path of a GeoTIFF, "
            f"COG or VRT inside it."
        )
    try:
        with gdal_env(), rasterio.open(path) as ds:
            if not is_virtual:
                _check_complete(ds, path)
            flags = ds.mask_flag_enums
            has_mask = any(
                MaskFlags.per_dataset in f or MaskFlags.alpha in f for f in flags
            ) or any(ci.name == "alpha" for ci in ds.colorinterp)
            info = SceneInfo(
                path=path,
                height=int(ds.height),
                width=int(ds.width),
                count=int(ds.count),
                dtype=str(ds.dtypes[0]),
                crs_wkt=ds.crs.to_wkt() if ds.crs else None,
                transform=tuple(float(v) for v in tuple(ds.transform)[:6]),
                nodata=None if ds.nodata is None else float(ds.nodata),
                block_shape=tuple(int(v) for v in ds.block_shapes[0]),  # type: ignore[arg-type]
                has_mask=bool(has_mask),
            )
    except RasterioIOError as exc:
        raise SceneError(
            f"scene {path!r} cannot be opened as a raster ({exc}); give a GeoTIFF, COG, VRT or "
            f"another format GDAL reads, and check that the file is complete."
        ) from exc
    except SceneError:
        raise
    except Exception as exc:  # noqa: BLE001 - GDAL raises several classes for corrupt files
        raise SceneError(
            f"scene {path!r} is unreadable or corrupt ({type(exc).__name__}: {exc}); "
            f"re-download or re-export it."
        ) from exc
    if info.height <= 0 or info.width <= 0 or info.count <= 0:
        raise SceneError(f"scene {path!r} has no pixels ({info.shape}); give a non-empty raster.")
    log.debug("opened %s: %s", path, info)
    return info


def _check_complete(ds: Any, path: str) -> None:
    """Raise SceneError if a local GeoTIFF's blocks reach past the end of the file (truncated).

    Reads only the TIFF block index (no pixels), so a cut-off download fails before any work
    instead of in the middle of a run.
    """
    if ds.driver != "GTiff":
        return
    size = os.path.getsize(path)
    rows, cols = ds.block_shapes[0]
    n_rows, n_cols = -(-ds.height // rows), -(-ds.width // cols)
    bands = range(1, ds.count + 1) if ds.interleaving and ds.interleaving.name == "band" else (1,)
    for band in bands:
        for row in range(n_rows):
            for col in range(n_cols):
                offset = ds.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=band)
                length = ds.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=band)
                if offset and length and int(offset) + int(length) > size:
                    raise SceneError(
                        f"scene {path!r} is truncated: block ({row}, {col}) of band {band} "
                        f"ends at byte {int(offset) + int(length)} but the file has {size} "
                        f"bytes; re-download or re-export it."
                    )


def mirror_indices(start: int, stop: int, length: int) -> np.ndarray:
    """Scene indices for positions ``start..stop-1`` with symmetric mirroring outside
    ``[0, length)``, repeated as often as needed (period ``2 * length``).

    Examples
    --------
    >>> mirror_indices(-3, 6, 4).tolist()
    [2, 1, 0, 0, 1, 2, 3, 3, 2]
    """
    idx = np.arange(start, stop) % (2 * length)
    return np.where(idx >= length, 2 * length - 1 - idx, idx)


def mirror_pad(array: np.ndarray, before: tuple[int, int], after: tuple[int, int]) -> np.ndarray:
    """Mirror-pad the last two axes of ``array`` like :func:`read_window` does.

    ``before = (top, left)``, ``after = (bottom, right)``; pads wider than the array mirror
    repeatedly. Equals ``np.pad(..., mode="symmetric")``.
    """
    height, width = array.shape[-2:]
    rows = mirror_indices(-before[0], height + after[0], height)
    cols = mirror_indices(-before[1], width + after[1], width)
    return array[..., rows[:, None], cols[None, :]]


class _Handles(threading.local):
    """Per-thread open datasets, so neighbouring chunks reuse GDAL's block cache."""

    def __init__(self) -> None:
        self.open: dict[tuple[str, Any], Any] = {}


_HANDLES = _Handles()
_MAX_HANDLES = 4


def _dataset(info: SceneInfo) -> Any:
    import rasterio

    stamp: Any = None
    if not (info.path.startswith("/vsi") or "://" in info.path):
        try:
            st = os.stat(info.path)
        except OSError as exc:
            raise SceneError(
                f"scene {info.path!r} disappeared after it was opened ({exc}); keep inputs in "
                f"place until the run ends."
            ) from exc
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    key = (info.path, stamp)
    ds = _HANDLES.open.get(key)
    if ds is None or ds.closed:
        for old_key in [k for k in _HANDLES.open if k[0] == info.path]:
            _HANDLES.open.pop(old_key).close()
        while len(_HANDLES.open) >= _MAX_HANDLES:
            _HANDLES.open.pop(next(iter(_HANDLES.open))).close()
        ds = rasterio.open(info.path)
        _HANDLES.open[key] = ds
    return ds


def close_datasets() -> None:
    """Close the datasets this thread keeps open for reading (e.g. at the end of a task)."""
    for ds in _HANDLES.open.values():
        ds.close()
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
    from rasterio.errors import RasterioError
    from rasterio.windows import Window

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
    rows = mirror_indices(y0 - halo, y0 + height + halo, info.height)
    cols = mirror_indices(x0 - halo, x0 + width + halo, info.width)
    ry0, ry1 = int(rows.min()), int(rows.max()) + 1
    rx0, rx1 = int(cols.min()), int(cols.max()) + 1
    window = Window(rx0, ry0, rx1 - rx0, ry1 - ry0)
    try:
        _faults.before_read(info.path)
        with gdal_env(info):
            ds = _dataset(info)
            data = ds.read(list(bands), window=window)
            valid = _read_valid(ds, info, data, window)
    except (SceneError, TransientError):
        raise
    except RasterioError as exc:
        close_datasets()
        if _is_remote(info.path):  # a network read may pass: retried (geounet.cluster)
            raise TransientError(
                f"scene {info.path!r}: reading rows {ry0}:{ry1}, columns {rx0}:{rx1} failed "
                f"({exc}); a remote read that may pass on retry."
            ) from exc
        raise SceneError(
            f"scene {info.path!r}: reading rows {ry0}:{ry1}, columns {rx0}:{rx1} failed "
            f"({exc}); the file is truncated or corrupt: re-download or re-export it."
        ) from exc
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


def _is_remote(path: str) -> bool:
    """Whether ``path`` is read over a network (a URL or a GDAL ``/vsicurl/``-style path)."""
    return "://" in path or (path.startswith("/vsi") and not path.startswith(("/vsimem",
                                                                              "/vsizip/")))


def _simple_pads(start: int, stop: int, length: int) -> tuple[int, int]:
    """``(before, after)`` mirror widths if ``np.pad`` of the clipped range gives the scene
    mirror along one axis (pads no wider than the in-scene part), else ``(-1, -1)``."""
    inside = min(stop, length) - max(start, 0)
    before, after = max(0, -start), max(0, stop - length)
    if inside <= 0 or before > inside or after > inside:
        return (-1, -1)
    return (before, after)


def _read_valid(ds: Any, info: SceneInfo, data: np.ndarray, window: Any) -> np.ndarray:
    """Valid mask for the clipped window ``data`` (bands, y, x)."""
    if info.has_mask:
        valid = ds.dataset_mask(window=window) > 0
    else:
        valid = np.ones(data.shape[1:], dtype=bool)
    nodata = info.nodata
    if nodata is not None:
        if isinstance(nodata, float) and math.isnan(nodata):
            is_nodata = np.isnan(data)
        elif np.issubdtype(data.dtype, np.integer):
            limits = np.iinfo(data.dtype)
            if nodata != int(nodata) or not limits.min <= nodata <= limits.max:
                return valid  # a nodata value the dtype cannot hold marks nothing
            is_nodata = data == data.dtype.type(int(nodata))
        else:
            is_nodata = data == data.dtype.type(nodata)
        valid &= ~np.all(is_nodata, axis=0)
    return valid
