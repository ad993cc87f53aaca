"""Georeferencing: the one home for pixel sizes in metres, CRS units and pixel <-> ground frames.

Every module that needs "how big is a pixel on the ground" or "how long is this line in metres"
asks this module, so raster reading, the model-card resolution check, training chips,
vectorization and evaluation agree on one rule:

- A **projected** CRS: the pixel's side lengths from the affine transform (rotation-aware:
  ``hypot(a, d)`` and ``hypot(b, e)``), times the CRS's linear unit in metres (feet, US feet...).
- A **geographic** CRS (degrees): the pixel's steps in degrees scaled by the metres per degree
  of longitude and of latitude at the given point (the scene centre by default), geodesic on
  the CRS's ellipsoid (:func:`metres_per_degree`, centred steps). Pixel sides
  (:func:`pixel_sides_m`) and ground frames (:meth:`Frame.ground_matrix`) use this one rule.
- No CRS: unknown (``None``); callers decide whether that is an error (:func:`pixel_sides_m`
  gives the transform's own units).

The size of a pixel is the geometric mean of its two sides (``sqrt(x_side * y_side)``): the
side of the square with the same ground area, which is what a resolution comparison needs.
Nothing here reads pixels; this module imports neither torch nor rasterio's dataset layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

Transform = Sequence[float]
"""Affine coefficients ``(a, b, c, d, e, f)``: ``x = a*col + b*row + c``, ``y = d*col + e*row + f``."""


@lru_cache(maxsize=64)
def _crs(text: str) -> Any:
    from pyproj import CRS

    return CRS.from_user_input(text)


def crs_from(crs: Any) -> Any:
    """A :class:`pyproj.CRS` from WKT, an ``"EPSG:n"`` string, a rasterio CRS or a pyproj CRS."""
    from pyproj import CRS

    if crs is None:
        raise ValueError("no CRS")
    if isinstance(crs, CRS):
        return crs
    if isinstance(crs, str):
        return _crs(crs)
    to_wkt = getattr(crs, "to_wkt", None)
    if to_wkt is not None:
        return _crs(to_wkt())
    return CRS.from_user_input(crs)


def is_geographic(crs: Any) -> bool:
    """True for a CRS in angular units (degrees)."""
    return bool(crs_from(crs).is_geographic)


def linear_unit_factor(crs: Any) -> float:
    """Metres per CRS unit along the first axis of a projected CRS (1.0 when unknown)."""
    c = crs_from(crs)
    try:
        return float(c.axis_info[0].unit_conversion_factor) if c.axis_info else 1.0
    except Exception:  # noqa: BLE001 - an unusual axis description: take metres
        return 1.0


def units_name(crs: Any) -> str:
    """``"degree"`` for a geographic CRS, else the first axis' unit name (``"metre"``...)."""
    c = crs_from(crs)
    if c.is_geographic:
        return "degree"
    try:
        return str(c.axis_info[0].unit_name) if c.axis_info else "metre"
    except Exception:  # noqa: BLE001
        return "metre"


def _geod(crs: Any) -> Any:
    from pyproj import Geod

    ell = crs.ellipsoid
    if ell is None:
        return Geod(ellps="WGS84")
    return Geod(a=ell.semi_major_metre, b=ell.semi_minor_metre)


GEODESIC_STEP = 1e-4
"""Half the step in degrees of the centred geodesic differences of :func:`metres_per_degree`
(about 11 m: far below any pixel that matters, far above the geodesic's rounding)."""


def _metres_per_degree(geod: Any, lon: float, lat: float) -> tuple[float, float]:
    """Ground metres per degree of longitude (east) and of latitude (north) at ``(lon, lat)``:
    geodesic lengths of centred steps of +-:data:`GEODESIC_STEP` degrees (latitudes within
    0.1 degree of a pole taken at 89.9)."""
    lat = max(-89.9, min(89.9, lat))
    step = GEODESIC_STEP
    _, _, east = geod.inv(lon - step, lat, lon + step, lat)
    _, _, north = geod.inv(lon, lat - step, lon, lat + step)
    return float(east) / (2 * step), float(north) / (2 * step)


def metres_per_degree(crs: Any, lon: float, lat: float) -> tuple[float, float]:
    """Ground metres per degree of longitude and of latitude at ``(lon, lat)`` on the
    ellipsoid of the geographic ``crs``: the one geodesic rule of geounet (pixel sides and
    ground frames both scale degrees by it)."""
    return _metres_per_degree(_geod(crs_from(crs)), lon, lat)


def pixel_sides_m(crs: Any, transform: Transform, col: float, row: float) -> tuple[float, float]:
    """Ground length in metres of one pixel step along columns and along rows at ``(col, row)``.

    Rotation-aware. Geographic CRS: the pixel's steps in degrees scaled by
    :func:`metres_per_degree` there (geodesic on the ellipsoid). No CRS (``None``): the
    transform's own units, which the caller decides how to read.
    """
    a, b, c, d, e, f = (float(v) for v in transform[:6])
    if crs is None:
        return float(math.hypot(a, d)), float(math.hypot(b, e))
    pc = crs_from(crs)
    if pc.is_geographic:
        east, north = _metres_per_degree(_geod(pc), a * col + b * row + c, d * col + e * row + f)
        return float(math.hypot(a * east, d * north)), float(math.hypot(b * east, e * north))
    factor = linear_unit_factor(pc)
    return float(math.hypot(a, d) * factor), float(math.hypot(b, e) * factor)


def pixel_size_m(crs: Any, transform: Transform, width: int = 0, height: int = 0) -> float | None:
    """Ground size of one pixel in metres at the grid's centre (``None`` without a CRS).

    The geometric mean of the two pixel sides (see the module docstring); geodesic for a
    geographic CRS, evaluated at the centre of a ``width`` x ``height`` grid.
    """
    if crs is None or crs == "":
        return None
    try:
        pc = crs_from(crs)
    except Exception:  # noqa: BLE001 - an unparsable CRS has no metric size
        return None
    sx, sy = pixel_sides_m(pc, transform, width / 2.0, height / 2.0)
    size = math.sqrt(sx * sy)
    return float(size) if math.isfinite(size) and size > 0 else None


def rotated(transform: Transform) -> bool:
    """True when the transform has rotation or shear terms (``b`` or ``d`` non-zero)."""
    return bool(transform[1] != 0 or transform[3] != 0)


class Frame:
    """Pixel -> map coordinates, and areas and lengths in metres in any CRS (geodesic on the
    ellipsoid when the CRS is geographic)."""

    def __init__(self, crs: Any, transform: Transform) -> None:
        pc = crs_from(crs)
        self.crs = pc
        self.transform = tuple(float(v) for v in transform[:6])
        self.geographic = bool(pc.is_geographic)
        self.geod = _geod(pc) if self.geographic else None
        self.factor = 1.0 if self.geographic else linear_unit_factor(pc)

    def to_map(self, geoms: np.ndarray) -> np.ndarray:
        """Geometries in pixel coordinates (x = column, y = row) -> the CRS."""
        import shapely

        a, b, c, d, e, f = self.transform
        return shapely.transform(
            geoms,
            lambda xy: np.column_stack(
                [a * xy[:, 0] + b * xy[:, 1] + c, d * xy[:, 0] + e * xy[:, 1] + f]
            ),
        )

    def ground_matrix(self, col: float, row: float) -> np.ndarray:
        """2 x 2 linear map from pixel offsets to ground metres (east, north) near a pixel.

        Pixels need not be square: in a geographic CRS a degree of longitude is shorter than
        a degree of latitude away from the equator, and projected rasters may have different
        x and y pixel sizes. Right angles and areas are judged in this frame.
        """
        a, b, c, d, e, f = self.transform
        linear = np.array([[a, b], [d, e]], dtype=np.float64)
        if self.geod is None:
            return linear * self.factor
        east, north = _metres_per_degree(self.geod, a * col + b * row + c, d * col + e * row + f)
        return np.diag([east, north]) @ linear

    def area_perimeter(self, geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Area (m^2) and perimeter (m) of map-coordinate polygons."""
        import shapely

        if self.geod is None:
            return shapely.area(geoms) * self.factor**2, shapely.length(geoms) * self.factor
        pairs = [self.geod.geometry_area_perimeter(g) for g in geoms]
        area = np.array([abs(a) for a, _ in pairs], dtype=np.float64)
        return area, np.array([p for _, p in pairs], dtype=np.float64)

    def length(self, geoms: np.ndarray) -> np.ndarray:
        """Length (m) of map-coordinate lines."""
        import shapely

        if self.geod is None:
            return shapely.length(geoms) * self.factor
        return np.array([self.geod.geometry_length(g) for g in geoms], dtype=np.float64)
