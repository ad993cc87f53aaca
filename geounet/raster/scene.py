"""Opening scenes: metadata only (:func:`open_scene` gives a :class:`SceneInfo`), the views a
scene may be read as (:class:`Warp`, :class:`Rescale`, :func:`warped`), and the GDAL settings
of a read (:func:`gdal_env`: block cache, directory listing skipped for remote paths).

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
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from geounet.errors import (
    GeoreferenceError,
    GeounetError,
    IncompatibleSceneError,
    InputError,
    SceneError,
    UnsupportedFormatError,
)

log = logging.getLogger(__name__)

MIN_CACHE_BYTES = 64 * 2**20
"""Lower bound of the GDAL block cache set by the reader."""

REMOTE_PREFIXES = ("/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsiadls", "/vsioss", "/vsiswift",
                   "/vsihdfs", "/vsiwebhdfs", "http://", "https://", "s3://", "gs://", "az://")
"""Paths GDAL reads over the network: their directory listing costs requests, so it is skipped."""


WARP_OPTIONS = {"UNIFIED_SRC_NODATA": "YES"}
"""A source pixel is nodata where every band equals the nodata value (as in unwarped reads)."""


def is_url(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a URL (``scheme://...``) or a GDAL virtual path (``/vsi...``), not a
    local file: the one rule for "is this path a local file?" (os.stat, abspath, exists).

    Examples
    --------
    >>> is_url("s3://bucket/a.tif"), is_url("/vsis3/bucket/a.tif"), is_url("a.tif")
    (True, True, False)
    """
    text = os.fspath(path)
    return "://" in text or text.startswith("/vsi")


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
class Stack:
    """A scene made of several files (the assets of a STAC item): one GDAL VRT whose bands are
    the files' bands on one grid, opened inside each task from its XML (see
    :mod:`geounet.raster.stac`, which builds it).

    Parameters
    ----------
    vrt : the VRT's XML; its sources are absolute GDAL paths (``/vsis3/...``, ``/vsicurl/...``).
    sources : GDAL path of each file the VRT reads, once each.
    bands : what each band of the stack is, e.g. ``red=B04`` (the name asked for, its asset key).
    """

    vrt: str
    sources: tuple[str, ...]
    bands: tuple[str, ...]


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
    stack : the scene is the band stack of a STAC item (``path`` is the item's), or None.

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
    stack: Stack | None = None

    @property
    def source(self) -> str:
        """What GDAL opens: the file (``path``), or the VRT XML of a :class:`Stack`."""
        return self.stack.vrt if self.stack is not None else self.path

    @property
    def remote(self) -> bool:
        """Whether reading it goes over the network (:func:`is_remote` of any file read)."""
        files = self.stack.sources if self.stack is not None else (self.path,)
        return any(is_remote(f) for f in files)

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

    options: dict[str, Any] = {}
    if info is not None and info.remote or info is None and (path is None or is_remote(path)):
        options["GDAL_DISABLE_READDIR_ON_OPEN"] = "EMPTY_DIR"
    if cache_bytes is None and info is not None:
        cache_bytes = _cache_bytes(info)
    if cache_bytes is not None:
        options["GDAL_CACHEMAX"] = cache_bytes
    return rasterio.Env(**options)


def open_scene(path: str | os.PathLike[str], *, stack: Stack | None = None) -> SceneInfo:
    """Open a scene (any GDAL path) and describe it.

    Parameters
    ----------
    path : local file, ``.vrt``, COG, or a GDAL virtual path such as ``/vsicurl/https://...``.
    stack : open this band stack instead, described under ``path`` (its STAC item's); use
        :func:`geounet.raster.stac.open_item`, which builds it.

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
    source = stack.vrt if stack is not None else path
    if stack is None and not is_url(path) and not os.path.exists(path):
        raise SceneError(
            f"scene {path!r} does not exist; check the path (relative paths are taken from "
            f"{os.getcwd()!r})."
        )
    if stack is None and not is_url(path) and os.path.isdir(path):
        raise SceneError(
            f"scene {path!r} is a directory, not a raster file; give the path of a GeoTIFF, "
            f"COG or VRT inside it."
        )
    try:
        with gdal_env(path=path), warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # GCP/RPC/no-georef files
            with rasterio.open(source) as ds:
                if stack is None and not is_url(path):
                    check_complete(ds, path)
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
    if stack is not None:
        info = dataclasses.replace(info, stack=stack)
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
    with WarpedVRT(ds, resampling=resampling_of("bilinear"), warp_extras=WARP_OPTIONS) as vrt:
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


def resampling_of(name: str) -> Any:
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


def check_complete(ds: Any, path: str) -> None:
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

