"""Read a prediction window by window: the one reader behind ``vectorize`` and ``evaluate``.

A prediction is a geounet Zarr store (arrays ``mask`` and ``probabilities``, grid mapping
``spatial_ref``), a geounet COG (band 1 the class index, bands 2..K+1 the probabilities) or
any single-band integer class-mask GeoTIFF (e.g. ``truth_mask.tif`` from ``geounet synth``).
The reader gives the class mask (255 = nodata, wherever the raster's own mask says so too),
probabilities, CRS, affine transform, class names and chunking; it never reads more than the
window asked for, so memory is bounded by the window, not the scene.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from geounet.config import DEFAULT_CLASSES, NODATA_CLASS
from geounet.errors import (
    GeoreferenceError,
    GeounetError,
    SceneError,
    UnsupportedFormatError,
)

__all__ = ["DEFAULT_CLASSES", "NODATA_CLASS", "PredictionReader", "zarr_georeference"]

_INTEGER = ("uint8", "int8", "uint16", "int16", "int32", "uint32")


class PredictionReader:
    """Open a prediction once and read windows of its class mask and probabilities.

    Parameters
    ----------
    path : a geounet ``.zarr`` store (arrays ``mask`` and ``probabilities``) or a GeoTIFF whose
        band 1 is the class index (bands 2..K+1, when present, the class probabilities).
    require_crs : raise :class:`GeoreferenceError` when the prediction has no CRS or
        geotransform (vectorize needs map coordinates; evaluate of two rasters does not).

    Attributes
    ----------
    height, width : scene size in pixels.
    crs_wkt : WKT of the scene CRS (``None`` without one, only when ``require_crs=False``).
    transform : affine coefficients ``(a, b, c, d, e, f)`` (pixel -> CRS), rotation included.
    named_classes : class names stored with the prediction, or ``None`` when it names none.
    classes : ``named_classes`` or :data:`geounet.config.DEFAULT_CLASSES`.
    chunk_shape : the store's (height, width) chunking / the GeoTIFF's block shape.
    has_probabilities : whether class probabilities can be read.
    """

    def __init__(self, path: str | Path, *, require_crs: bool = True) -> None:
        self.path = str(path)
        self.require_crs = require_crs
        self._dataset: Any = None
        self._env: Any = None
        self._mask: Any = None
        self._probabilities: Any = None
        self._probability_scale = 1.0
        self._gdal_mask = False
        self.named_classes: tuple[str, ...] | None = None
        if not Path(self.path).exists():
            raise SceneError(
                f"prediction {self.path!r} does not exist; give a geounet .zarr store or a "
                "GeoTIFF class mask written by `geounet predict`."
            )
        if Path(self.path).is_dir():
            self._open_zarr()
        else:
            self._open_tiff()

    @property
    def classes(self) -> tuple[str, ...]:
        return self.named_classes or DEFAULT_CLASSES

    # -- opening -----------------------------------------------------------------------------
    def _open_zarr(self) -> None:
        import zarr

        try:
            with warnings.catch_warnings():
                # a store still being resumed holds its completion markers (_geounet_done)
                warnings.filterwarnings("ignore", message=".*not recognized as a component")
                group = zarr.open_group(self.path, mode="r")
                members = set(group.keys())
        except Exception as exc:  # zarr raises several unrelated types
            raise UnsupportedFormatError(
                f"{self.path!r} is a folder but not a readable Zarr store ({exc}); give a "
                "geounet prediction store (.zarr) or a GeoTIFF."
            ) from exc
        if "mask" not in members:
            raise UnsupportedFormatError(
                f"Zarr store {self.path!r} has no 'mask' array (it has {sorted(members)}); "
                "give a geounet prediction store written by `geounet predict`."
            )
        self._mask = group["mask"]
        if self._mask.ndim != 2:
            raise UnsupportedFormatError(
                f"'mask' in {self.path!r} has {self._mask.ndim} dimensions; it must be (y, x)."
            )
        self.height, self.width = (int(s) for s in self._mask.shape)
        self.chunk_shape = tuple(int(c) for c in self._mask.chunks)
        attrs = dict(group.attrs).get("geounet") or {}
        if isinstance(attrs, str):
            attrs = json.loads(attrs)
        classes = attrs.get("classes") or (attrs.get("model_card") or {}).get("classes")
        self.named_classes = tuple(classes) if classes else None
        if "probabilities" in members:
            self._probabilities = group["probabilities"]
            if self._probabilities.dtype == np.uint8:
                self._probability_scale = 1.0 / 255.0
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not recognized as a component")
            self.crs_wkt, self.transform = zarr_georeference(group, self._mask, self.path,
                                                             require_crs=self.require_crs)

    def _open_tiff(self) -> None:
        import rasterio
        from rasterio.enums import MaskFlags
        from rasterio.errors import RasterioIOError

        from geounet.raster import block_cache_bytes, gdal_env

        try:
            self._dataset = rasterio.open(self.path)
        except RasterioIOError as exc:
            raise SceneError(
                f"cannot open {self.path!r} as a raster ({exc}); give a GeoTIFF class mask or a "
                "geounet .zarr store."
            ) from exc
        ds = self._dataset
        # A bounded GDAL block cache while the reader is open: GDAL's default (5% of RAM),
        # filled by a scene read once window by window, grows memory with the scene.
        row = ds.width * ds.block_shapes[0][0] * ds.count * np.dtype(ds.dtypes[0]).itemsize
        self._env = gdal_env(cache_bytes=block_cache_bytes(row), path=self.path)
        self._env.__enter__()
        try:
            _check_tiff(ds, self.path, self.require_crs)
        except GeounetError:
            self.close()
            raise
        self.height, self.width = ds.height, ds.width
        self.chunk_shape = tuple(int(v) for v in ds.block_shapes[0])
        self.crs_wkt = ds.crs.to_wkt() if ds.crs is not None else None
        t = ds.transform
        self.transform = (t.a, t.b, t.c, t.d, t.e, t.f)
        # a declared nodata value or a mask band (internal, .msk) marks nodata pixels
        self._gdal_mask = MaskFlags.all_valid not in ds.mask_flag_enums[0]
        named = _tiff_classes(ds)
        if named is not None:
            self.named_classes = named
        if ds.count >= 2 and ds.count - 1 == len(self.classes):
            self._probabilities = True
            if ds.dtypes[1] == "uint8":
                self._probability_scale = 1.0 / 255.0

    # -- reading -----------------------------------------------------------------------------
    @property
    def has_probabilities(self) -> bool:
        return self._probabilities is not None

    def read_mask(self, y0: int, x0: int, height: int, width: int) -> np.ndarray:
        """Class mask window (uint8, height x width); nodata, values outside 0-254 and parts
        outside the scene read as 255."""
        out = np.full((height, width), NODATA_CLASS, dtype=np.uint8)
        ys, ye = max(y0, 0), min(y0 + height, self.height)
        xs, xe = max(x0, 0), min(x0 + width, self.width)
        if ye <= ys or xe <= xs:
            return out
        if self._dataset is not None:
            from rasterio.windows import Window

            window = Window(xs, ys, xe - xs, ye - ys)
            data = self._dataset.read(1, window=window)
            if self._gdal_mask:
                data = np.where(self._dataset.read_masks(1, window=window) > 0, data,
                                NODATA_CLASS)
        else:
            data = np.asarray(self._mask[ys:ye, xs:xe])
        data = np.where((data >= 0) & (data < NODATA_CLASS), data, NODATA_CLASS).astype(np.uint8)
        out[ys - y0 : ye - y0, xs - x0 : xe - x0] = data
        return out

    def read_probability(self, index: int, y0: int, x0: int, height: int, width: int) -> np.ndarray:
        """Probability (0-1, float32) of class ``index`` in a window inside the scene."""
        if self._dataset is not None:
            from rasterio.windows import Window

            data = self._dataset.read(index + 2, window=Window(x0, y0, width, height))
        else:
            data = np.asarray(self._probabilities[index, y0 : y0 + height, x0 : x0 + width])
        return data.astype(np.float32) * np.float32(self._probability_scale)

    def pixel_size_m(self) -> float:
        """Ground size of one pixel in metres at the scene centre (:mod:`geounet.georef`);
        1.0 without a CRS (pixel units taken as metres)."""
        from geounet.georef import pixel_size_m

        size = pixel_size_m(self.crs_wkt, self.transform, self.width, self.height)
        return float(size) if size is not None else 1.0

    def close(self) -> None:
        if self._dataset is not None:
            self._dataset.close()
            self._dataset = None
        if self._env is not None:
            self._env.__exit__(None, None, None)
            self._env = None

    def __enter__(self) -> PredictionReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def zarr_georeference(
    group: Any, mask: Any, path: str, *, require_crs: bool = True
) -> tuple[str | None, tuple[float, ...]]:
    """CRS WKT and affine coefficients of a Zarr store, from its CF grid mapping.

    The grid mapping's ``GeoTransform`` (GDAL order, as rioxarray writes it) is the full
    transform, rotation included; 1-D ``x``/``y`` coordinates are used only when it is absent
    (a north-up grid written by another tool).

    Raises
    ------
    GeoreferenceError
        When there is no CRS (and ``require_crs``), or neither a GeoTransform nor x/y.
    """
    fix = (
        "Fix: write the store with rioxarray (`ds.rio.write_crs(...)`, `ds.rio.write_transform"
        "(...)`) so 'spatial_ref' carries crs_wkt and GeoTransform."
    )
    name = dict(mask.attrs).get("grid_mapping", "spatial_ref")
    attrs = dict(group[name].attrs) if name in group else {}
    wkt = attrs.get("crs_wkt") or attrs.get("spatial_ref") or None
    if not wkt and require_crs:
        raise GeoreferenceError(f"Zarr store {path!r} has no CRS (no {name!r} with crs_wkt). {fix}")
    geotransform = attrs.get("GeoTransform")
    if geotransform:
        c, a, b, f, d, e = (float(v) for v in str(geotransform).split())
        return (str(wkt) if wkt else None), (a, b, c, d, e, f)
    if "x" in group and "y" in group and group["x"].ndim == 1 and group["y"].ndim == 1 \
            and group["x"].shape[0] > 1 and group["y"].shape[0] > 1:
        x = np.asarray(group["x"][:2], dtype=np.float64)
        y = np.asarray(group["y"][:2], dtype=np.float64)
        a, e = x[1] - x[0], y[1] - y[0]
        return (str(wkt) if wkt else None), (a, 0.0, x[0] - a / 2, 0.0, e, y[0] - e / 2)
    raise GeoreferenceError(f"Zarr store {path!r} has no GeoTransform or x/y coordinates. {fix}")


def _check_tiff(ds: Any, path: str, require_crs: bool) -> None:
    """Refuse a GeoTIFF that is not a class mask (or a geounet COG), or one without
    georeferencing where polygons need it."""
    if ds.crs is None or ds.transform.is_identity:
        if require_crs:
            raise GeoreferenceError(
                f"{path!r} has no CRS or geotransform; polygons need map coordinates. "
                "Fix: write the mask with the scene's CRS and transform (e.g. `gdal_edit.py "
                "-a_srs EPSG:XXXX -a_ullr ...` or rasterio's crs=/transform=)."
            )
    first = ds.descriptions[0]
    if ds.count >= 2 and first not in (None, "", "class"):
        raise UnsupportedFormatError(
            f"{path!r} has {ds.count} bands and band 1 is {first!r}, not 'class': it "
            "looks like an image, not a prediction. Give a class mask (band 1 = class index) "
            "or the .zarr store / COG written by `geounet predict`."
        )
    integer = ds.dtypes[0] in _INTEGER
    if not integer and not (first == "class" and ds.dtypes[0] in ("float32", "float64")):
        raise UnsupportedFormatError(
            f"band 1 of {path!r} is {ds.dtypes[0]}; it must be an integer class mask "
            "(uint8 class index, 255 = nodata) or the 'class' band of a geounet COG."
        )


def _tiff_classes(ds: Any) -> tuple[str, ...] | None:
    """The class names a GeoTIFF prediction names: its ``classes`` tag, its probability band
    descriptions, or band 1's ``classes`` tag (None when it names none)."""
    tags = ds.tags()
    descriptions = ds.descriptions[1:]
    if tags.get("classes"):
        return tuple(tags["classes"].split(","))
    if ds.count >= 2 and all(descriptions):
        return tuple(str(d) for d in descriptions)
    band_tags = ds.tags(1)
    if band_tags.get("classes"):
        return tuple(band_tags["classes"].split(","))
    return None
