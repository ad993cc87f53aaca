"""Finished objects to features: cleaning, measuring and writing polygons of one class
(:class:`PolygonLayer`, in batches of :data:`BATCH`) and road centerlines (:func:`write_lines`),
in map coordinates."""

from __future__ import annotations

from typing import Any

import numpy as np

from geounet.georef import Frame
from geounet.vectorization._defaults import ROAD_CLASS
from geounet.vectorization._regularize import regularize_polygon
from geounet.vectorization._writer import FeatureWriter

BATCH = 4096
"""Objects of one class buffered before they are cleaned and written."""


def _regularize(geoms: np.ndarray, frame: Frame, tolerance_m: float) -> np.ndarray:
    """Regularize pixel-coordinate footprints in a local ground frame (metres, square)."""
    import shapely

    out = np.empty(len(geoms), dtype=object)
    for i, geom in enumerate(geoms):
        point = geom.centroid
        matrix = frame.ground_matrix(point.x, point.y)
        inverse = np.linalg.inv(matrix)
        ground = shapely.transform(geom, lambda xy, m=matrix: xy @ m.T)
        regular = regularize_polygon(ground, tolerance_m)
        out[i] = shapely.transform(regular, lambda xy, m=inverse: xy @ m.T)
    return out


class PolygonLayer:
    """Buffers finished objects of one class and writes them cleaned, in map coordinates."""

    def __init__(
        self,
        *,
        name: str,
        layer: str,
        writer: FeatureWriter,
        frame: Frame,
        pixel_m: float,
        fill_holes: bool,
        min_area: float,
        tolerance: float,
        regularize: bool,
        has_probabilities: bool,
        min_confidence: float | None = None,
    ) -> None:
        self.name, self.layer, self.writer, self.frame = name, layer, writer, frame
        self.pixel_m = pixel_m  # ground size of a pixel (m)
        self.fill_holes = fill_holes
        self.min_area = min_area  # m^2
        self.tolerance = tolerance  # pixels
        self.regularize = regularize
        self.has_probabilities = has_probabilities
        self.min_confidence = min_confidence  # drop objects whose mean probability is below
        self.geoms: list[Any] = []
        self.pixels: list[int] = []
        self.psums: list[float] = []
        self.pmins: list[float] = []

    def add(self, polygon: Any, pixels: int, psum: float, pmin: float) -> None:
        self.geoms.append(polygon)
        self.pixels.append(pixels)
        self.psums.append(psum)
        self.pmins.append(pmin)
        if len(self.geoms) >= BATCH:
            self.flush()

    def flush(self) -> None:
        import shapely

        if not self.geoms:
            return
        geoms = np.empty(len(self.geoms), dtype=object)
        geoms[:] = self.geoms
        pixels = np.asarray(self.pixels, dtype=np.float64)
        psums = np.asarray(self.psums, dtype=np.float64)
        pmins = np.asarray(self.pmins, dtype=np.float64)
        self.geoms, self.pixels, self.psums, self.pmins = [], [], [], []
        geoms, index = shapely.get_parts(geoms, return_index=True)
        if self.min_confidence is not None and self.has_probabilities:
            # per object (all its parts), on the object's own pixels, before any cleaning
            confident = psums[index] / np.maximum(pixels[index], 1) >= self.min_confidence
            geoms, index = geoms[confident], index[confident]
        keep = shapely.get_type_id(geoms) == 3  # polygons only
        geoms, index = geoms[keep], index[keep]
        if self.fill_holes:
            geoms = shapely.polygons(shapely.get_exterior_ring(geoms))
        if self.min_area > 0:
            area, _ = self.frame.area_perimeter(self.frame.to_map(geoms))
            keep = area >= self.min_area
            geoms, index = geoms[keep], index[keep]
        if self.tolerance > 0:
            geoms = shapely.simplify(geoms, self.tolerance, preserve_topology=True)
        if self.regularize:
            geoms = _regularize(geoms, self.frame, max(self.tolerance, 1.0) * self.pixel_m)
        geoms = self.frame.to_map(geoms)
        invalid = ~shapely.is_valid(geoms)
        if invalid.any():
            geoms[invalid] = shapely.make_valid(geoms[invalid])
            geoms, parts = shapely.get_parts(geoms, return_index=True)
            index = index[parts]
            keep = shapely.get_type_id(geoms) == 3
            geoms, index = geoms[keep], index[keep]
        area, perimeter = self.frame.area_perimeter(geoms)
        if self.has_probabilities:
            mean_p = psums[index] / np.maximum(pixels[index], 1)
            min_p = pmins[index]
        else:
            mean_p = np.full(len(geoms), np.nan)
            min_p = np.full(len(geoms), np.nan)
        self.writer.write(
            self.layer,
            geoms,
            {
                "class": np.full(len(geoms), self.name, dtype=object),
                "area_m2": area,
                "perimeter_m": perimeter,
                "mean_probability": mean_p,
                "min_probability": min_p,
            },
        )


def write_lines(
    lines: list[np.ndarray],
    writer: FeatureWriter,
    layer: str,
    frame: Frame,
    tolerance: float,
) -> None:
    import shapely

    if not lines:
        return
    geoms = np.array([shapely.linestrings(xy) for xy in lines], dtype=object)
    if tolerance > 0:
        geoms = shapely.simplify(geoms, tolerance, preserve_topology=True)
    geoms = frame.to_map(geoms)
    writer.write(
        layer,
        geoms,
        {"class": np.full(len(geoms), ROAD_CLASS, dtype=object), "length_m": frame.length(geoms)},
    )
