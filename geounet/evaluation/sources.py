"""The two sides of an evaluation, read window by window on one grid: a class-mask raster
(:class:`_RasterSource`) or vector labels burnt onto the raster side's grid
(:class:`VectorSource`)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geounet.errors import GeoreferenceError, SceneError

VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb")


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, affine transform and size; ground sizes from :mod:`geounet.georef`."""

    crs: Any
    transform: Any
    height: int
    width: int

    @property
    def crs_unit_step(self) -> float:
        """Length of one pixel step along columns in CRS units (for transform comparisons)."""
        from geounet.georef import pixel_sides_m

        return pixel_sides_m(None, tuple(self.transform)[:6], 0, 0)[0]

    def pixel_sides_m(self, col: float, row: float) -> tuple[float, float]:
        """Ground metres of one pixel step along columns and along rows near ``(col, row)``
        (:func:`geounet.georef.pixel_sides_m`: rotation-aware, geodesic in a geographic CRS).
        Without a CRS the transform's units are taken as metres (a warning says so once, in
        :func:`evaluate`)."""
        from geounet.georef import pixel_sides_m

        crs = self.crs.to_wkt() if self.crs is not None else None
        return pixel_sides_m(crs, tuple(self.transform)[:6], col, row)


class _RasterSource:
    """A class-mask raster read window by window through the shared
    :class:`geounet.output.prediction.PredictionReader` (GeoTIFF band 1, COG, Zarr ``mask``)."""

    def __init__(self, path: Path) -> None:
        from affine import Affine
        from rasterio.crs import CRS

        from geounet.output.prediction import PredictionReader

        self.path = path
        self._reader = PredictionReader(path, require_crs=False)
        r = self._reader
        self.classes: tuple[str, ...] | None = r.named_classes
        crs = CRS.from_wkt(r.crs_wkt) if r.crs_wkt else None
        self.grid = Grid(crs, Affine(*r.transform), r.height, r.width)

    def read(self, y0: int, x0: int, height: int, width: int) -> np.ndarray:
        """Class mask window (uint8, 255 = nodata), inside the grid."""
        return self._reader.read_mask(y0, x0, height, width)

    def close(self) -> None:
        self._reader.close()


def _footprint(height: int, width: int, transform: Any) -> tuple[float, float, float, float]:
    """Map bounds (minx, miny, maxx, maxy) of a grid from all four corners (rotation-aware)."""
    xs, ys = zip(*(transform * (c, r) for c, r in ((0, 0), (width, 0), (0, height),
                                                   (width, height))))
    return min(xs), min(ys), max(xs), max(ys)


class VectorSource:
    """Label layers burnt onto another source's grid, window by window."""

    def __init__(self, path: Path, class_layers: Mapping[str, str], line_width: float | None):
        self.path = path
        self.class_layers = dict(class_layers)
        self.line_width = line_width
        self.classes = None
        self.shapes: list[Any] = []
        self.grid: Grid | None = None

    def attach(self, grid: Grid, background: str = "background") -> None:
        """Read the labels onto ``grid`` by the rule training uses
        (:func:`geounet.raster.labels.load_class_shapes`): layers named like the classes; else
        one layer with a ``class`` column; else, with one foreground class, every feature."""
        from geounet.raster.labels import load_class_shapes

        self.grid = grid
        classes = (background, *self.class_layers)
        self.shapes = load_class_shapes(self.path, grid.crs, classes, line_width=self.line_width)
        from shapely import STRtree

        self._trees = {c.index: STRtree(list(c.geometries)) for c in self.shapes}

    def read(self, y0: int, x0: int, height: int, width: int) -> np.ndarray:
        from rasterio.windows import Window
        from rasterio.windows import transform as window_transform
        from shapely.geometry import box

        from geounet.raster.labels import ClassShapes, rasterize_shapes

        transform = window_transform(Window(x0, y0, width, height), self.grid.transform)
        window = box(*_footprint(height, width, transform))
        subset = []
        for cls in self.shapes:
            hits = self._trees[cls.index].query(window)
            subset.append(ClassShapes(cls.index, cls.name,
                                      tuple(cls.geometries[i] for i in hits)))
        return rasterize_shapes(subset, transform, height, width)

    def objects(self, index: int) -> list[Any]:
        """The original polygons of class ``index`` that touch the grid."""
        from shapely.geometry import box

        extent = box(*_footprint(self.grid.height, self.grid.width, self.grid.transform))
        for cls in self.shapes:
            if cls.index == index:
                out = []
                for g in cls.geometries:
                    if g.intersects(extent):
                        out.extend(getattr(g, "geoms", [g]))
                return out
        return []

    def close(self) -> None:
        pass


def open_source(path: str | os.PathLike[str], class_layers: Mapping[str, str],
                 line_width: float | None) -> _RasterSource | VectorSource:
    path = Path(path)
    if not path.exists():
        raise SceneError(f"{str(path)!r} does not exist; give a mask GeoTIFF, Zarr or GeoPackage.")
    if path.suffix.lower() in VECTOR_SUFFIXES:
        return VectorSource(path, class_layers, line_width)
    return _RasterSource(path)


class AlignedSource:
    """A class-mask raster read onto another grid, window by window, nearest neighbour.

    For predictions geounet wrote on the model's grid (a resampled run) scored against a truth
    on the scene's grid, or any two georeferenced rasters of one area: each window of the target
    grid reads the covering window of the source (plus one pixel) and reprojects it with
    ``rasterio.warp.reproject`` (nearest: a class mask has no in-between values; 255 where the
    source has no pixel). Memory stays one window per side.
    """

    def __init__(self, source: _RasterSource, grid: Grid) -> None:
        self.source, self.grid = source, grid
        self.path, self.classes = source.path, source.classes

    def read(self, y0: int, x0: int, height: int, width: int) -> np.ndarray:
        from rasterio.warp import Resampling, reproject, transform_bounds
        from rasterio.windows import Window
        from rasterio.windows import transform as window_transform

        src = self.source.grid
        dst_transform = window_transform(Window(x0, y0, width, height), self.grid.transform)
        bounds = _footprint(height, width, dst_transform)
        if self.grid.crs != src.crs:
            bounds = transform_bounds(self.grid.crs, src.crs, *bounds, densify_pts=21)
        inverse = ~src.transform
        corners = [inverse * (x, y) for x in (bounds[0], bounds[2]) for y in (bounds[1], bounds[3])]
        cols, rows = zip(*corners)
        c0, c1 = max(0, math.floor(min(cols)) - 1), min(src.width, math.ceil(max(cols)) + 1)
        r0, r1 = max(0, math.floor(min(rows)) - 1), min(src.height, math.ceil(max(rows)) + 1)
        out = np.full((height, width), 255, np.uint8)
        if c1 <= c0 or r1 <= r0:
            return out
        block = self.source.read(r0, c0, r1 - r0, c1 - c0)
        reproject(block, out, src_transform=window_transform(Window(c0, r0, c1 - c0, r1 - r0),
                                                             src.transform),
                  src_crs=src.crs, dst_transform=dst_transform, dst_crs=self.grid.crs,
                  resampling=Resampling.nearest, src_nodata=255, dst_nodata=255)
        return out

    def close(self) -> None:
        self.source.close()


def same_grid(a: Grid, b: Grid) -> bool:
    """Whether two grids are one: size, transform (to 1e-3 of a pixel) and CRS."""
    return ((a.height, a.width) == (b.height, b.width)
            and a.transform.almost_equals(b.transform, precision=1e-3 * a.crs_unit_step)
            and (a.crs is None or b.crs is None or a.crs == b.crs))


def check_same_grid(a: Grid, b: Grid, names: tuple[str, str]) -> None:
    if (a.height, a.width) != (b.height, b.width):
        raise GeoreferenceError(
            f"{names[0]} is {a.height}x{a.width} px but {names[1]} is {b.height}x{b.width}; "
            "both rasters must share one grid (resample one onto the other, or give a "
            "GeoPackage for the truth)."
        )
    if not a.transform.almost_equals(b.transform, precision=1e-3 * a.crs_unit_step):
        raise GeoreferenceError(
            f"{names[0]} transform {tuple(a.transform)[:6]} differs from {names[1]} "
            f"{tuple(b.transform)[:6]}; both rasters must share one grid."
        )
    if a.crs is not None and b.crs is not None and a.crs != b.crs:
        raise GeoreferenceError(
            f"{names[0]} CRS differs from {names[1]} CRS; reproject one onto the other's grid."
        )


def score_windows(height: int, width: int, size: int) -> Iterator[tuple[int, int, int, int]]:
    for y0 in range(0, height, size):
        for x0 in range(0, width, size):
            yield y0, x0, min(size, height - y0), min(size, width - x0)

