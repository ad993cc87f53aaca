"""Rectilinear building footprints: snap edges to the dominant orientation and its normal."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def dominant_angle(polygon: Any) -> float:
    """Dominant edge orientation in degrees, in [-45, 45), from a length-weighted histogram.

    Edge directions are folded modulo 90 degrees (angle x 4 on the circle) so that both walls of
    a rectangle vote for the same orientation.
    """
    import shapely

    rings = [polygon.exterior, *polygon.interiors]
    c_sum = s_sum = 0.0
    for ring in rings:
        xy = shapely.get_coordinates(ring)
        d = np.diff(xy, axis=0)
        length = np.hypot(d[:, 0], d[:, 1])
        phi = np.arctan2(d[:, 1], d[:, 0]) * 4.0
        c_sum += float(np.sum(length * np.cos(phi)))
        s_sum += float(np.sum(length * np.sin(phi)))
    if c_sum == 0.0 and s_sum == 0.0:
        return 0.0
    return math.degrees(math.atan2(s_sum, c_sum) / 4.0)


def _rectilinear_ring(xy: np.ndarray, min_run: float) -> np.ndarray | None:
    """Snap a closed ring (already rotated so walls are near 0/90 degrees) to axis-parallel runs."""
    pts = xy[:-1]
    if len(pts) < 4:
        return None
    d = np.diff(xy, axis=0)
    length = np.hypot(d[:, 0], d[:, 1])
    horizontal = np.abs(d[:, 0]) >= np.abs(d[:, 1])
    mid = (xy[:-1] + xy[1:]) / 2.0
    # runs of consecutive edges with the same orientation (cyclic)
    runs: list[list[float]] = []  # [is_horizontal, total_length, weighted_coordinate_sum]
    for i in range(len(d)):
        coord = mid[i, 1] if horizontal[i] else mid[i, 0]
        if runs and bool(runs[-1][0]) == bool(horizontal[i]):
            runs[-1][1] += length[i]
            runs[-1][2] += length[i] * coord
        else:
            runs.append([float(horizontal[i]), float(length[i]), float(length[i] * coord)])
    if len(runs) > 1 and runs[0][0] == runs[-1][0]:
        last = runs.pop()
        runs[0][1] += last[1]
        runs[0][2] += last[2]
    # drop tiny jogs: removing a run merges its two neighbours (same orientation)
    while len(runs) > 4:
        k = min(range(len(runs)), key=lambda i: runs[i][1])
        if runs[k][1] >= min_run:
            break
        n = len(runs)
        prev, nxt = (k - 1) % n, (k + 1) % n
        runs[prev][1] += runs[nxt][1]
        runs[prev][2] += runs[nxt][2]
        for index in sorted((k, nxt), reverse=True):
            runs.pop(index)
    if len(runs) < 4 or len(runs) % 2:
        return None
    values = [r[2] / r[1] if r[1] > 0 else 0.0 for r in runs]
    out = []
    n = len(runs)
    for i in range(n):
        j = (i + 1) % n
        if runs[i][0]:  # horizontal run i meets vertical run j
            out.append((values[j], values[i]))
        else:  # vertical run i meets horizontal run j
            out.append((values[i], values[j]))
    out.append(out[0])
    return np.asarray(out, dtype=np.float64)


def regularize_polygon(polygon: Any, tolerance: float = 1.0, max_area_change: float = 0.2) -> Any:
    """Return a rectilinear version of a building polygon.

    The polygon must be in a frame with equal units on both axes (e.g. ground metres), where
    right angles are right angles on the ground; :func:`geounet.vectorize` regularizes in a
    local metric frame, so this holds for non-square pixels and geographic CRSs too.

    The polygon is simplified (Douglas-Peucker, ``tolerance`` in the polygon's units) to drop
    the pixel staircase, its dominant orientation is found from the edge-direction histogram,
    and every wall is snapped to that orientation or its normal. When the result is invalid or
    its area differs by more than ``max_area_change`` the simplified polygon is returned
    instead.

    Examples
    --------
    >>> from shapely import box
    >>> regularize_polygon(box(0, 0, 10, 5)).area
    50.0
    """
    import shapely
    from shapely import affinity
    from shapely.geometry import Polygon

    simplified = shapely.simplify(polygon, tolerance, preserve_topology=True)
    if simplified.is_empty or simplified.geom_type != "Polygon":
        return polygon
    angle = dominant_angle(simplified)
    origin = simplified.centroid
    rotated = affinity.rotate(simplified, -angle, origin=origin)
    min_run = 2.0 * tolerance
    shell = _rectilinear_ring(shapely.get_coordinates(rotated.exterior), min_run)
    if shell is None:
        return simplified
    holes = []
    for ring in rotated.interiors:
        hole = _rectilinear_ring(shapely.get_coordinates(ring), min_run)
        if hole is not None:
            holes.append(hole)
    result = affinity.rotate(Polygon(shell, holes), angle, origin=origin)
    if not result.is_valid or result.area <= 0:
        return simplified
    if abs(result.area / polygon.area - 1.0) > max_area_change:
        return simplified
    return result
