"""Open scenes and read windows with a mirrored halo and a valid-pixel mask.

Everything outside the scene is filled by whole-sample symmetric mirroring (``np.pad`` mode
``"symmetric"``: the edge pixel is repeated, ``... 2 1 0 | 0 1 2 ...``), repeated as often as
needed, so a window of any size anywhere equals the same window cut from
``np.pad(scene, width, mode="symmetric")``. The engine and the whole-scene reference use this
one mirror (:data:`MIRROR_MODE`).

Windows are read clipped to the scene with rasterio (``boundless=True`` is 3.9x slower) and the
outside part is filled with numpy by index mirroring.

A scene may be a *view* of its file: :class:`Warp` (a GDAL WarpedVRT at the model's pixel size,
or the grid of a GCP-georeferenced scene) and :class:`Rescale` (values mapped into the model's
range). Both are plain values in :class:`SceneInfo`, so tasks pickle them and open the view
themselves; :mod:`geounet.fitting` decides them.

Local scenes are opened with GDAL's directory listing on, so sidecars (``.msk`` masks,
``.aux.xml`` CRS/transform/nodata, ``.ovr``, ``.tfw``/``.wld``/``.tifw`` world files) are
honoured; remote paths (``/vsicurl/``, ``/vsis3/``, ``http(s)://``, ``s3://``) skip the listing,
which saves requests.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from geounet import _faults
from geounet.errors import (
    GeoreferenceError,
    GeounetError,
    IncompatibleSceneError,
    InputError,
    SceneError,
    TransientError,
    UnsupportedFormatError,
)

log = logging.getLogger(__name__)

MIRROR_MODE = "symmetric"
"""The ``np.pad`` mode equal to the mirroring used for scene borders everywhere in geounet."""

MIN_CACHE_BYTES = 64 * 2**20
"""Lower bound of the GDAL block cache set by the reader."""

REMOTE_PREFIXES = ("/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsiadls", "/vsioss", "/vsiswift",
                   "/vsihdfs", "/vsiwebhdfs", "http://", "https://", "s3://", "gs://", "az://")
"""Paths GDAL reads over the network: their directory listing costs requests, so it is skipped."""


def is_remote(path: str) -> bool:
    """True for a network path (:data:`REMOTE_PREFIXES`), where sidecar lookups cost requests."""
    return str(path).lower().startswith(REMOTE_PREFIXES)


@dataclass(frozen=True)
class Warp:
    """A warped view of a scene file, opened inside each task as a GDAL WarpedVRT.

    Parameters
    ----------
    gcps : the file is georeferenced by ground control points only: it is first warped to
        the grid GDAL suggests for its GCPs (in the GCPs' CRS).
    crs_wkt, transform, height, width : the target grid, or None to read the GCP grid as is.
    resampling : GDAL resampling name (``bilinear``, ``cubic``, ``nearest``, ``average``...).
    """

    gcps: bool = False
    crs_wkt: str | None = None
    transform: tuple[float, ...] | None = None
    height: int = 0
    width: int = 0
    resampling: str = "bilinear"

    @property
    def regrid(self) -> bool:
        """Whether the view has a target grid of its own (else the GCP grid as GDAL suggests)."""
        return self.transform is not None


@dataclass(frozen=True)
class Rescale:
    """A linear map of raw band values into a model's value range, applied as pixels are read.

    ``out = clip((x - low) / (high - low), 0, 1) * (out_high - out_low) + out_low`` per band,
    rounded to ``dtype`` when it is an integer type.

    Parameters
    ----------
    bands : 1-based scene bands the map is for.
    low, high : per band, the raw values mapped to ``out_low`` and ``out_high``.
    out_low, out_high : the model's training value range.
    dtype : type of the values read (the model card's).
    method : how the map was chosen (for logs and the run record), e.g. ``percentile:2,98``.
    """

    bands: tuple[int, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    out_low: float
    out_high: float
    dtype: str
    method: str = ""

    def apply(self, data: np.ndarray, bands: Sequence[int]) -> np.ndarray:
        """Map ``data`` (band, y, x) whose planes are the scene ``bands``."""
        index = {b: i for i, b in enumerate(self.bands)}
        missing = [b for b in bands if b not in index]
        if missing:
            raise InputError(
                f"band(s) {missing} have no rescale parameters (computed for bands "
                f"{list(self.bands)}); read the bands the rescale was planned for."
            )
        rows = [index[b] for b in bands]
        low = np.asarray([self.low[i] for i in rows], dtype=np.float32).reshape(-1, 1, 1)
        high = np.asarray([self.high[i] for i in rows], dtype=np.float32).reshape(-1, 1, 1)
        span = np.maximum(high - low, np.float32(1e-12))
        out = (data.astype(np.float32) - low) / span
        np.clip(out, 0.0, 1.0, out=out)
        out = out * np.float32(self.out_high - self.out_low) + np.float32(self.out_low)
        kind = np.dtype(self.dtype)
        if np.issubdtype(kind, np.integer):
            return np.rint(out).astype(kind)
        return out.astype(kind, copy=False)


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
    has_mask : the scene has an internal/dataset mask, a ``.msk`` sidecar or an alpha band
        (beyond ``nodata``).
    nodatavals : declared nodata per band (None where a band has none).
    georef : how the file is georeferenced: ``transform`` (a geotransform, from the file, an
        ``.aux.xml`` or a world file), ``gcps``, ``rpcs`` or ``none``.
    warp : the warped view read instead of the file's own grid (then ``height``, ``width``,
        ``crs_wkt`` and ``transform`` are the view's), or None.
    rescale : the value map applied as pixels are read, or None.

    Pixel sizes, windows and outputs all refer to the grid described here: the file's own, or
    the warped view's when ``warp`` is set.
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
    nodatavals: tuple[float | None, ...] = ()
    georef: str = "transform"
    warp: Warp | None = None
    rescale: Rescale | None = None

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
    def read_dtype(self) -> str:
        """Type of the pixels :func:`read_window` returns (the rescale's, else the file's)."""
        return self.rescale.dtype if self.rescale is not None else self.dtype

    def band_nodata(self, band: int) -> float | None:
        """Declared nodata of 1-based ``band`` (band 1's for scenes described without per-band
        values)."""
        if len(self.nodatavals) >= band:
            return self.nodatavals[band - 1]
        return self.nodata

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


def gdal_env(
    info: SceneInfo | None = None, *, cache_bytes: int | None = None, path: str | None = None
) -> Any:
    """A ``rasterio.Env`` for reading ``info`` (or ``path``) with a bounded GDAL block cache.

    GDAL's default cache is 5% of RAM; filled by a scene read once window by window it makes
    a process's memory grow with the scene. Two rows of internal blocks are enough for
    windowed reads (see :func:`_cache_bytes`).

    The directory listing on open (which finds sidecars: ``.msk``, ``.aux.xml``, ``.ovr``,
    world files) is kept for local files and skipped for remote ones (:func:`is_remote`) and
    when neither ``info`` nor ``path`` says which file is read.
    """
    import rasterio

    target = info.path if info is not None else path
    options: dict[str, Any] = {}
    if target is None or is_remote(target):
        options["GDAL_DISABLE_READDIR_ON_OPEN"] = "EMPTY_DIR"
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
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

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
        with gdal_env(path=path), warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # GCP/RPC/no-georef files
            with rasterio.open(path) as ds:
                if not is_virtual:
                    _check_complete(ds, path)
                info = _describe(ds, path)
    except RasterioIOError as exc:
        raise SceneError(
            f"scene {path!r} cannot be opened as a raster ({exc}); give a GeoTIFF, COG, VRT or "
            f"another format GDAL reads, and check that the file is complete."
        ) from exc
    except GeounetError:
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


def _describe(ds: Any, path: str) -> SceneInfo:
    """SceneInfo of an open dataset; a GCP-only file is described as its warped view."""
    from rasterio.enums import MaskFlags

    dtypes = tuple(str(d) for d in ds.dtypes)
    if len(set(dtypes)) > 1:
        raise UnsupportedFormatError(
            f"scene {path!r} has bands of different data types ({', '.join(dtypes)}); geounet "
            f"reads all bands as one type: convert it to one type first, e.g. gdal_translate "
            f"-ot {_gdal_type(dtypes)} {os.path.basename(path)} out.tif."
        )
    flags = ds.mask_flag_enums
    has_mask = any(
        MaskFlags.per_dataset in f or MaskFlags.alpha in f for f in flags
    ) or any(ci.name == "alpha" for ci in ds.colorinterp)
    nodatavals = tuple(None if v is None else float(v) for v in ds.nodatavals)
    transform = tuple(float(v) for v in tuple(ds.transform)[:6])
    identity = transform == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    georef = "transform"
    if ds.crs is None and identity:
        if ds.gcps[0]:
            georef = "gcps"
        elif ds.rpcs is not None:
            georef = "rpcs"
        else:
            georef = "none"
    info = SceneInfo(
        path=path,
        height=int(ds.height),
        width=int(ds.width),
        count=int(ds.count),
        dtype=dtypes[0],
        crs_wkt=ds.crs.to_wkt() if ds.crs else None,
        transform=transform,
        nodata=nodatavals[0] if nodatavals else None,
        block_shape=tuple(int(v) for v in ds.block_shapes[0]),  # type: ignore[arg-type]
        has_mask=bool(has_mask),
        nodatavals=nodatavals,
        georef=georef,
    )
    if georef == "gcps":
        info = _gcp_view(ds, info)
    return info


def _gdal_type(dtypes: Sequence[str]) -> str:
    """GDAL name of the widest of ``dtypes`` (for the conversion hint)."""
    widest = np.result_type(*[np.dtype(d) for d in dtypes]).name
    return {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16",
            "uint32": "UInt32", "int32": "Int32", "float32": "Float32",
            "float64": "Float64"}.get(widest, "Float32")


def _gcp_view(ds: Any, info: SceneInfo) -> SceneInfo:
    """The warped view of a GCP-georeferenced file: the grid GDAL suggests for its GCPs."""
    from rasterio.vrt import WarpedVRT

    _, gcp_crs = ds.gcps
    if gcp_crs is None:
        raise GeoreferenceError(
            f"scene {info.path!r} has ground control points without a CRS, so it cannot be "
            f"placed on the map; set the GCPs' CRS (gdal_edit.py -a_srs EPSG:XXXX) or "
            f"georeference it with gdalwarp."
        )
    _check_uniform_nodata(info, "GCP-georeferenced")
    with WarpedVRT(ds, resampling=_resampling("bilinear"), warp_extras=_WARP_OPTIONS) as vrt:
        return dataclasses.replace(
            info,
            height=int(vrt.height),
            width=int(vrt.width),
            crs_wkt=gcp_crs.to_wkt(),
            transform=tuple(float(v) for v in tuple(vrt.transform)[:6]),
            has_mask=True,
            warp=Warp(gcps=True),
        )


def _check_uniform_nodata(info: SceneInfo, why: str) -> None:
    """GDAL's warper takes one nodata value for all bands: refuse mixed ones for a warp."""
    values = {("nan" if v is not None and math.isnan(v) else v) for v in info.nodatavals}
    if len(values) > 1:
        raise IncompatibleSceneError(
            f"scene {info.path!r} declares different nodata per band "
            f"({', '.join(str(v) for v in info.nodatavals)}) and must be warped ({why}); the "
            f"warp takes one nodata value for all bands: set one (gdal_edit.py -a_nodata VALUE) "
            f"or warp it yourself with gdalwarp -srcnodata \"V1 V2 ...\"."
        )


def _resampling(name: str) -> Any:
    from rasterio.enums import Resampling

    try:
        return Resampling[name]
    except KeyError:
        raise InputError(
            f"resampling {name!r} is not a GDAL resampling method; use e.g. bilinear, cubic, "
            f"nearest or average."
        ) from None


def warped(info: SceneInfo, warp: Warp) -> SceneInfo:
    """``info`` as read through ``warp``'s target grid (the same file, a new grid)."""
    if not warp.regrid:
        raise InputError("warped() needs a Warp with a target grid (transform, height, width).")
    _check_uniform_nodata(info, "resampled")
    return dataclasses.replace(
        info,
        height=int(warp.height),
        width=int(warp.width),
        crs_wkt=warp.crs_wkt,
        transform=tuple(float(v) for v in warp.transform[:6]),  # type: ignore[index]
        has_mask=True,
        warp=warp,
    )


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
        self.open: dict[tuple[Any, ...], _Opened] = {}


_HANDLES = _Handles()
_MAX_HANDLES = 4


_WARP_OPTIONS = {"UNIFIED_SRC_NODATA": "YES"}
"""A source pixel is nodata where every band equals the nodata value (as in unwarped reads)."""


class _Opened:
    """An open scene: the file and, for a warped view, the WarpedVRT(s) on top of it."""

    def __init__(self, info: SceneInfo) -> None:
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning
        from rasterio.vrt import WarpedVRT

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            self.stack: list[Any] = [rasterio.open(info.path)]
        warp = info.warp
        if warp is not None:
            try:
                resampling = _resampling(warp.resampling)
                if warp.gcps:  # GDAL's grid for the GCPs (rasterio ignores GCPs with a grid)
                    self.stack.append(
                        WarpedVRT(self.stack[-1], resampling=resampling, add_alpha=True,
                                  warp_extras=_WARP_OPTIONS)
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
                        warp_extras=_WARP_OPTIONS,
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
    if not (info.path.startswith("/vsi") or "://" in info.path):
        try:
            st = os.stat(info.path)
        except OSError as exc:
            raise SceneError(
                f"scene {info.path!r} disappeared after it was opened ({exc}); keep inputs in "
                f"place until the run ends."
            ) from exc
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    key = (info.path, stamp, info.warp)
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
            if info.warp is not None:
                data, valid = _read_warped(ds, info, bands, ry0, rx0, ry1 - ry0, rx1 - rx0)
            else:
                data = ds.read(list(bands), window=window)
                valid = _read_valid(ds, info, data, window, bands)
            if info.rescale is not None:
                data = info.rescale.apply(data, bands)
    except RasterioError as exc:
        close_datasets()
        if is_remote(info.path):  # a network read may pass: retried (geounet.cluster)
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
