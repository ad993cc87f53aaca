"""Quicklook PNGs: a decimated, stretched view of a scene with vector layers drawn on top.

The scene is read once as a decimated overview (rasterio ``out_shape`` read, so memory is
set by ``max_size``, not by the scene), stretched to 8 bits per band, and the layers of a
GeoPackage (by default the ``buildings`` and ``roads`` polygons and ``road_centerlines`` that
``geounet segment`` writes) are burnt in as 1-pixel outlines and lines.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geounet.errors import InputError, SceneError, UnsupportedFormatError
from geounet.output import check_new_path

log = logging.getLogger(__name__)

#: Default outline colours (RGB) per layer name; other layers cycle through ``_CYCLE``.
LAYER_COLORS: dict[str, tuple[int, int, int]] = {
    "buildings": (255, 40, 40),
    "roads": (255, 220, 0),
    "road_centerlines": (0, 230, 255),
}
_CYCLE = ((255, 0, 255), (0, 255, 0), (255, 128, 0), (128, 128, 255))
_NODATA_RGB = (0, 0, 0)


@dataclass(frozen=True)
class QuicklookResult:
    """What :func:`write_quicklook` wrote.

    Attributes
    ----------
    path : the PNG.
    height, width : PNG size in pixels.
    scale : scene pixels per PNG pixel (>= 1).
    counts : features drawn per layer.
    """

    path: Path
    height: int
    width: int
    scale: float
    counts: dict[str, int]


def quicklook_shape(height: int, width: int, max_size: int) -> tuple[int, int]:
    """PNG size for a ``height`` x ``width`` scene: the longer side at most ``max_size``.

    Scenes smaller than ``max_size`` keep their size (no upsampling).

    Examples
    --------
    >>> quicklook_shape(4096, 2048, 1024)
    (1024, 512)
    >>> quicklook_shape(300, 200, 1024)
    (300, 200)
    """
    if not isinstance(max_size, int) or max_size < 16:
        raise InputError(f"max_size {max_size!r} must be a whole number >= 16; use e.g. 1024.")
    scale = max(1.0, max(height, width) / max_size)
    return max(1, math.ceil(height / scale - 1e-9)), max(1, math.ceil(width / scale - 1e-9))


def stretch(pixels: np.ndarray, valid: np.ndarray, percent: float = 2.0) -> np.ndarray:
    """Stretch each band linearly from its ``percent`` to ``100 - percent`` percentile to 0-255.

    Percentiles are taken over ``valid`` pixels only; invalid pixels become 0.

    Parameters
    ----------
    pixels : (band, y, x) array of any numeric type.
    valid : (y, x) bool.
    percent : clip share at each end.

    Returns
    -------
    uint8 array of the same shape.
    """
    out = np.zeros(pixels.shape, dtype=np.uint8)
    if not valid.any():
        return out
    for band in range(pixels.shape[0]):
        values = pixels[band][valid].astype(np.float64)
        lo, hi = np.percentile(values, [percent, 100.0 - percent])
        if hi <= lo:
            hi = lo + 1.0
        scaled = (pixels[band].astype(np.float64) - lo) * (255.0 / (hi - lo))
        out[band] = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        out[band][~valid] = 0
    return out


def _read_overview(
    scene: str, bands: Sequence[int] | None, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, Any, Any]:
    """Decimated read of 1 or 3 bands: (rgb uint8 (3, y, x), valid, overview transform, crs)."""
    import rasterio
    from rasterio.enums import Resampling

    try:
        src = rasterio.open(scene)
    except rasterio.errors.RasterioIOError as exc:
        raise SceneError(f"cannot open scene {scene!r}: {exc}; check the path.") from exc
    with src:
        if bands is None:
            bands = [1, 2, 3] if src.count >= 3 else [1]
        bands = [int(b) for b in bands]
        bad = [b for b in bands if b < 1 or b > src.count]
        if bad or len(bands) not in (1, 3):
            raise InputError(
                f"bands {bands} are not 1 or 3 band indices within 1..{src.count}; "
                "pass e.g. bands=(1, 2, 3) or bands=(1,)."
            )
        try:
            pixels = src.read(bands, out_shape=(len(bands), *shape),
                              resampling=Resampling.average)
            masks = src.read_masks(bands, out_shape=(len(bands), *shape),
                                   resampling=Resampling.nearest)
        except rasterio.errors.RasterioIOError as exc:
            raise SceneError(
                f"cannot read scene {scene!r}: {exc}; the file may be corrupt."
            ) from exc
        valid = np.all(masks > 0, axis=0)
        transform = src.transform @ src.transform.scale(src.width / shape[1],
                                                        src.height / shape[0])
        crs = src.crs
    rgb = stretch(pixels, valid)
    if rgb.shape[0] == 1:
        rgb = np.repeat(rgb, 3, axis=0)
    for band, value in enumerate(_NODATA_RGB):
        rgb[band][~valid] = value
    return rgb, valid, transform, crs


def _draw_layers(rgb: np.ndarray, vectors: str, layers: Sequence[str] | None,
                 colors: Mapping[str, tuple[int, int, int]], transform: Any,
                 crs: Any) -> dict[str, int]:
    """Burn polygon outlines and lines of the GeoPackage layers onto ``rgb`` in place."""
    import geopandas as gpd
    import pyogrio
    from rasterio.features import rasterize

    available = [str(name) for name, _ in pyogrio.list_layers(vectors)]
    if layers is None:
        layers = available
    missing = [name for name in layers if name not in available]
    if missing:
        raise InputError(
            f"layers {missing} are not in {vectors!r} (it has {available}); pass layers= "
            "with names from that list."
        )
    counts: dict[str, int] = {}
    height, width = rgb.shape[1:]
    for index, name in enumerate(layers):
        frame = gpd.read_file(vectors, layer=name, engine="pyogrio")
        frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
        counts[name] = int(len(frame))
        if frame.empty:
            continue
        if crs is not None and frame.crs is not None and frame.crs != crs:
            frame = frame.to_crs(crs)
        # polygons are drawn as their outlines, lines as they are
        geoms = [g.boundary if g.geom_type in ("Polygon", "MultiPolygon") else g
                 for g in frame.geometry]
        burnt = rasterize(((g, 1) for g in geoms if not g.is_empty), out_shape=(height, width),
                          transform=transform, fill=0, all_touched=True, dtype="uint8")
        color = colors.get(name, _CYCLE[index % len(_CYCLE)])
        hit = burnt.astype(bool)
        for band in range(3):
            rgb[band][hit] = color[band]
    return counts


def write_quicklook(
    scene: str | os.PathLike[str],
    vectors_gpkg: str | os.PathLike[str] | None,
    out_png: str | os.PathLike[str],
    *,
    max_size: int = 1024,
    bands: Sequence[int] | None = None,
    layers: Sequence[str] | None = None,
    colors: Mapping[str, tuple[int, int, int]] | None = None,
    overwrite: bool = False,
) -> QuicklookResult:
    """Write a PNG quicklook of ``scene`` with the layers of ``vectors_gpkg`` drawn on it.

    Parameters
    ----------
    scene : any raster rasterio opens (GeoTIFF, COG, VRT).
    vectors_gpkg : GeoPackage (or any OGR file) whose layers are drawn; None for the image only.
        Layers in another CRS are reprojected to the scene's.
    out_png : output ``.png``, written under a temporary name and renamed when complete.
    max_size : longest PNG side; the scene is decimated (area average) to fit, never enlarged.
    bands : 1-based bands shown as RGB (3) or grey (1); default 1, 2, 3 (or 1 for 1-2 bands).
    layers : layer names to draw (default all, in file order; later layers on top).
    colors : RGB per layer name, overriding :data:`LAYER_COLORS`.
    overwrite : replace an existing ``out_png``.

    Returns
    -------
    QuicklookResult

    Raises
    ------
    UnsupportedFormatError, OutputExistsError, InputError, SceneError

    Examples
    --------
    >>> write_quicklook("scene.tif", "pred.gpkg", "quicklook.png")  # doctest: +SKIP
    QuicklookResult(path=PosixPath('quicklook.png'), height=1024, width=1024, ...)
    """
    import rasterio
    from PIL import Image

    out_png = Path(out_png)
    if out_png.suffix.lower() != ".png":
        raise UnsupportedFormatError(
            f"quicklook output {str(out_png)!r} must end in .png; use e.g. quicklook.png."
        )
    check_new_path(out_png, overwrite=overwrite)
    if vectors_gpkg is not None and not Path(vectors_gpkg).exists():
        raise InputError(f"vector file {str(vectors_gpkg)!r} does not exist; check the path.")
    try:
        with rasterio.open(scene) as src:
            size = (src.height, src.width)
    except rasterio.errors.RasterioIOError as exc:
        raise SceneError(f"cannot open scene {str(scene)!r}: {exc}; check the path.") from exc
    shape = quicklook_shape(*size, max_size)
    rgb, _valid, transform, crs = _read_overview(str(scene), bands, shape)
    counts: dict[str, int] = {}
    if vectors_gpkg is not None:
        palette = dict(LAYER_COLORS)
        palette.update(colors or {})
        counts = _draw_layers(rgb, str(vectors_gpkg), layers, palette, transform, crs)
    tmp = out_png.with_name(f".{out_png.name}.geounet-partial.png")
    try:
        Image.fromarray(np.ascontiguousarray(np.moveaxis(rgb, 0, -1))).save(
            tmp, format="PNG")
        os.replace(tmp, out_png)
    finally:
        if tmp.exists():
            tmp.unlink()
    scale = max(size) / max(shape)
    log.info("wrote quicklook %s (%d x %d, 1:%.2f)", out_png, shape[1], shape[0], scale)
    return QuicklookResult(out_png, shape[0], shape[1], scale, counts)
