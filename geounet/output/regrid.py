"""A prediction store written onto another grid: the raster output of a resampled run on the
scene's own grid (``output_grid="scene"``, docs/predict.md).

:func:`regrid_store` reads the source store window by window and reprojects it with
``rasterio.warp.reproject``: the class probabilities weighted by validity (a nodata pixel
carries no weight), ``average`` when the target pixels are coarser than the source's (each
target pixel is the mean over its footprint), ``bilinear`` when they are finer; a target pixel
is valid where at least half of that weight is valid data. The class mask is then computed
from the reprojected probabilities by the run's own rule (``classify``, e.g. argmax or the
threshold), so mask and probabilities agree on the new grid as they do on the model's. Memory
is one window per side: target windows are sized so the source window stays about
:data:`SOURCE_WINDOW` pixels on a side.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from geounet.config import NODATA_CLASS
from geounet.output.prediction import PredictionReader
from geounet.output.store import create_store, write_chunk

SOURCE_WINDOW = 2048
"""Side, in source pixels, of the source window read for one target window (about)."""

Classify = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``classify(probabilities (K, y, x) float32, valid (y, x) bool) -> class mask uint8``."""


def _pixel_step(transform: tuple[float, ...]) -> float:
    a, b, _, d, e, _ = transform[:6]
    return math.sqrt(abs(a * e - b * d))


def regrid_store(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    crs_wkt: str | None,
    transform: tuple[float, ...],
    height: int,
    width: int,
    classify: Classify,
) -> Path:
    """Write the prediction store ``source`` onto the grid (``crs_wkt``, ``transform``,
    ``height``, ``width``) as a new store ``target`` (which must not exist); return it.

    The new store has the source's classes, probability type and ``geounet`` attributes, plus
    ``output_grid`` (``"scene"``) and ``model_grid`` (the source grid) in them.
    """
    import zarr
    from affine import Affine

    with PredictionReader(source, require_crs=False) as reader:
        group = zarr.open_group(str(source), mode="r")
        attrs = dict(group.attrs.get("geounet", {}))
        if isinstance(attrs, str):
            attrs = json.loads(attrs)
        ratio = _pixel_step(transform) / _pixel_step(reader.transform)
        side = int(max(64, min(2048, SOURCE_WINDOW // max(1.0, ratio))))
        dtype = attrs.get("probability_dtype", "uint8")
        extra = {k: v for k, v in attrs.items()
                 if k not in ("classes", "chunk_size", "probability_dtype", "nodata_class")}
        extra.update(output_grid="scene",
                     model_grid={"transform": list(reader.transform), "height": reader.height,
                                 "width": reader.width})
        spec = create_store(target, height=height, width=width, classes=reader.classes,
                            chunk_size=side, crs_wkt=crs_wkt, transform=tuple(transform),
                            probability_dtype=dtype, attrs=extra)
        method = "average" if ratio > 1.0 + 1e-9 else "bilinear"
        grid = (crs_wkt, Affine(*transform[:6]))
        for y0 in range(0, height, side):
            for x0 in range(0, width, side):
                h, w = min(side, height - y0), min(side, width - x0)
                probs, valid = _window(reader, grid, y0, x0, h, w, method)
                write_chunk(spec, y0, x0, probs, classify(probs, valid), valid)
    return Path(target)


def _window(reader: PredictionReader, grid: tuple[str | None, Any], y0: int, x0: int,
            height: int, width: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (K, height, width) and validity of one target window."""
    from affine import Affine
    from rasterio.warp import Resampling, reproject, transform_bounds
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    crs_wkt, target = grid
    k = len(reader.classes)
    dst_transform = window_transform(Window(x0, y0, width, height), target)
    xs, ys = zip(*(dst_transform * (c, r) for c, r in ((0, 0), (width, 0), (0, height),
                                                       (width, height))))
    bounds = (min(xs), min(ys), max(xs), max(ys))
    if crs_wkt and reader.crs_wkt and crs_wkt != reader.crs_wkt:
        bounds = transform_bounds(crs_wkt, reader.crs_wkt, *bounds, densify_pts=21)
    src = Affine(*reader.transform[:6])
    cols, rows = zip(*(~src * (x, y) for x in (bounds[0], bounds[2])
                       for y in (bounds[1], bounds[3])))
    c0, c1 = max(0, math.floor(min(cols)) - 2), min(reader.width, math.ceil(max(cols)) + 2)
    r0, r1 = max(0, math.floor(min(rows)) - 2), min(reader.height, math.ceil(max(rows)) + 2)
    out = np.zeros((k + 1, height, width), np.float32)
    if c1 > c0 and r1 > r0:
        valid = (reader.read_mask(r0, c0, r1 - r0, c1 - c0) != NODATA_CLASS).astype(np.float32)
        block = np.empty((k + 1, r1 - r0, c1 - c0), np.float32)
        for index in range(k):
            block[index] = reader.read_probability(index, r0, c0, r1 - r0, c1 - c0) * valid
        block[k] = valid
        reproject(block, out, src_transform=window_transform(Window(c0, r0, c1 - c0, r1 - r0),
                                                             src),
                  src_crs=reader.crs_wkt or crs_wkt, dst_transform=dst_transform,
                  dst_crs=crs_wkt or reader.crs_wkt, resampling=getattr(Resampling, method))
    weight = out[k]
    valid_out = weight >= 0.5
    probs = np.where(valid_out[None], out[:k] / np.maximum(weight, 1e-6)[None], 0.0)
    return np.clip(probs, 0.0, 1.0).astype(np.float32), valid_out
