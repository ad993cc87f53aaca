"""One labelled chip: ChipRecord, and reading its class mask (raw values decoded, vectors burnt)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geounet.errors import LabelError
from geounet.training.chips import NODATA


@dataclass(frozen=True)
class ChipRecord:
    """One image and its labels, and the split it belongs to (``train`` or ``val``).

    Attributes
    ----------
    name : chip name (the image's stem).
    image : the image GeoTIFF.
    mask : a raster mask (same size as the image), a per-chip vector label file, or None
        when ``labels`` holds the labels of every chip.
    split : ``train`` or ``val``.
    mask_values : raw mask value of each class in class order (e.g. ``(0, 255)``); None when
        the mask holds class indices (255 nodata).
    classes : class names (needed to burn vector labels).
    labels : one vector labels file for all chips.
    line_width : metres; width of line labels without a ``width`` attribute.
    instances : per-chip vector labels of the same chip when ``mask`` is a raster mask: its
        polygons give the building instances (:func:`read_instances`), the mask the classes.
    """

    name: str
    image: Path
    mask: Path | None
    split: str
    mask_values: tuple[int, ...] | None = None
    classes: tuple[str, ...] = ()
    labels: Path | None = None
    line_width: float | None = None
    instances: Path | None = None


def decode_mask(raw: np.ndarray, mask_values: Sequence[int] | None,
                nodata: float | None = None) -> np.ndarray:
    """Raw mask values -> uint8 class indices (255 nodata).

    With ``mask_values`` the value ``mask_values[i]`` becomes class ``i`` and every other value
    255; without, the mask already holds class indices. A declared ``nodata`` (other than 0,
    which is always background) becomes 255.

    Examples
    --------
    >>> decode_mask(np.array([[0, 255]], np.uint8), (0, 255)).tolist()
    [[0, 1]]
    """
    if mask_values is None:
        out = np.where((raw >= 0) & (raw <= NODATA), raw, NODATA).astype(np.uint8)
    else:
        out = np.full(raw.shape, NODATA, dtype=np.uint8)
        for index, value in enumerate(mask_values):
            out[raw == value] = index
    if nodata is not None and nodata != 0 and (mask_values is None or nodata not in
                                                mask_values):
        out[raw == nodata] = NODATA
    return out


def read_target(rec: ChipRecord, img: Any, window: Any = None) -> np.ndarray:
    """The class mask (uint8, 255 nodata) of ``rec`` over ``window`` of its open image ``img``.

    Raster masks are read and decoded (:func:`decode_mask`); vector labels are burnt onto the
    image's grid (:func:`geounet.raster.labels.rasterize_file`), so masks without georeferencing and
    labels in any CRS line up with the image.
    """
    import rasterio
    from rasterio.windows import Window

    from geounet.raster.labels import VECTOR_SUFFIXES, rasterize_file

    if window is None:
        window = Window(0, 0, img.width, img.height)
    if rec.mask is None or rec.mask.suffix.lower() in VECTOR_SUFFIXES:
        source = rec.mask if rec.mask is not None else rec.labels
        if source is None:
            raise LabelError(f"chip {rec.name!r} has no labels; give a mask or a labels file.")
        return rasterize_file(source, img.crs, img.window_transform(window),
                              int(window.height), int(window.width), rec.classes,
                              line_width=rec.line_width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(rec.mask) as msk:
            if (msk.height, msk.width) != (img.height, img.width):
                raise LabelError(
                    f"chip {rec.name!r}: image is {img.height}x{img.width} px but its mask is "
                    f"{msk.height}x{msk.width}; image and mask must be the same size."
                )
            return decode_mask(msk.read(1, window=window), rec.mask_values, msk.nodata)


def read_instances(rec: ChipRecord, img: Any, window: Any, class_name: str) -> np.ndarray | None:
    """Instance ids (int32, 0 = none) of the ``class_name`` polygons of vector labels over
    ``window`` of the open image ``img``: one id per polygon, burnt like the class mask (later
    on top), so touching polygons stay apart. A raster mask takes them from its chip's vector
    labels (``rec.instances``); None for a raster mask without (its instances are the
    connected components, :func:`geounet.training.contact.instances_of`)."""
    from rasterio.features import rasterize
    from rasterio.transform import array_bounds
    from rasterio.windows import Window
    from shapely.geometry import box

    from geounet.raster.labels import VECTOR_SUFFIXES, load_class_shapes

    if rec.mask is not None and rec.mask.suffix.lower() not in VECTOR_SUFFIXES:
        source = rec.instances
    else:
        source = rec.mask if rec.mask is not None else rec.labels
    if source is None:
        return None
    if window is None:
        window = Window(0, 0, img.width, img.height)
    height, width = int(window.height), int(window.width)
    transform = img.window_transform(window)
    shapes = load_class_shapes(source, img.crs, rec.classes, line_width=rec.line_width)
    geoms = next((s.geometries for s in shapes if s.name == class_name), ())
    area = box(*array_bounds(height, width, transform))
    pairs = [(g, i) for i, g in enumerate(geoms, start=1) if g.intersects(area)]
    if not pairs or height == 0 or width == 0:
        return np.zeros((height, width), np.int32)
    return rasterize(pairs, out_shape=(height, width), transform=transform, dtype=np.int32)
