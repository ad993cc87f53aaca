"""geounet.georef: one rule for pixel sizes in metres (projected, feet, geographic, rotated)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely

from geounet.georef import Frame, metres_per_degree, pixel_sides_m, pixel_size_m, units_name


def test_projected_metres_and_feet() -> None:
    assert pixel_size_m("EPSG:32633", (0.5, 0, 500000, 0, -0.5, 0)) == pytest.approx(0.5)
    # NAD83 / Massachusetts Mainland (ftUS): one US survey foot per unit
    size = pixel_size_m("EPSG:2249", (1.0, 0, 0, 0, -1.0, 0))
    assert size == pytest.approx(1200 / 3937, rel=1e-9)
    assert units_name("EPSG:2249").lower().startswith("us survey foot")


def test_geographic_is_geodesic_at_the_centre() -> None:
    deg = 0.5 / 111_320  # about half a metre of longitude at the equator
    at_equator = pixel_sides_m("EPSG:4326", (deg, 0, 10.0, 0, -deg, 0.0), 0, 0)
    assert at_equator[0] == pytest.approx(0.5, rel=0.01)
    # at 60 deg north a degree of longitude is half as long; latitude stays ~the same
    sx, sy = pixel_sides_m("EPSG:4326", (deg, 0, 10.0, 0, -deg, 60.0), 0, 0)
    assert sx == pytest.approx(at_equator[0] * math.cos(math.radians(60)), rel=0.01)
    assert sy == pytest.approx(0.5, rel=0.02)
    # centre of a 1000 x 1000 grid whose top edge is at 60.0 N
    size = pixel_size_m("EPSG:4326", (deg, 0, 10.0, 0, -deg, 60.0), 1000, 1000)
    assert size == pytest.approx(math.sqrt(sx * sy), rel=0.01)
    assert units_name("EPSG:4326") == "degree"


def test_rotation_does_not_change_the_pixel_size() -> None:
    theta = math.radians(30)
    a, b = 0.5 * math.cos(theta), -0.5 * math.sin(theta)
    d, e = 0.5 * math.sin(theta), 0.5 * math.cos(theta) * -1
    assert pixel_size_m("EPSG:32633", (a, b, 0, d, e, 0)) == pytest.approx(0.5)


def test_no_or_bad_crs_is_unknown() -> None:
    assert pixel_size_m(None, (1, 0, 0, 0, -1, 0)) is None
    assert pixel_size_m("not a crs", (1, 0, 0, 0, -1, 0)) is None


def test_frame_area_in_square_metres_for_projected_and_geographic() -> None:
    square = np.array([shapely.box(0, 0, 10, 10)])
    utm = Frame("EPSG:32633", (0.5, 0, 500000, 0, -0.5, 0))
    area, perimeter = utm.area_perimeter(utm.to_map(square))
    assert area[0] == pytest.approx(25.0) and perimeter[0] == pytest.approx(20.0)
    deg = 0.5 / 111_320
    geo = Frame("EPSG:4326", (deg, 0, 10.0, 0, -deg, 0.0))
    area, _ = geo.area_perimeter(geo.to_map(square))
    assert area[0] == pytest.approx(25.0, rel=0.02)


@pytest.mark.parametrize("lat", [0.0, 33.5, -45.0, 60.0, 80.0])
def test_one_geodesic_rule_matches_pyproj_geod(lat: float) -> None:
    """Pixel sides and ground frames share one rule (metres per degree from centred geodesic
    steps); it agrees with the closed-form ellipsoid radii and with pyproj.Geod's geodesic
    across a pixel, for north-up and rotated geographic grids."""
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    a, f = geod.a, geod.f
    e2 = f * (2 - f)
    phi = math.radians(lat)
    w = 1 - e2 * math.sin(phi) ** 2
    east_exact = math.pi / 180 * a * math.cos(phi) / math.sqrt(w)  # parallel radius
    north_exact = math.pi / 180 * a * (1 - e2) / w**1.5  # meridian radius of curvature
    east, north = metres_per_degree("EPSG:4326", 12.0, lat)
    assert east == pytest.approx(east_exact, rel=1e-7)
    assert north == pytest.approx(north_exact, rel=1e-7)
    theta = math.radians(25)
    for deg in (1e-5, 3e-4):  # about 1 m and 30 m pixels
        for t in ((deg, 0.0, 12.0, 0.0, -deg, lat),
                  (deg * math.cos(theta), -deg * math.sin(theta), 12.0,
                   deg * math.sin(theta), deg * math.cos(theta) * -1, lat)):
            sides = pixel_sides_m("EPSG:4326", t, 0, 0)
            for (da, dd), side in zip(((t[0], t[3]), (t[1], t[4])), sides):
                # the geodesic across one pixel step centred on the point
                _, _, dist = geod.inv(12.0 - da / 2, lat - dd / 2, 12.0 + da / 2, lat + dd / 2)
                assert side == pytest.approx(dist, rel=1e-6)
            matrix = Frame("EPSG:4326", t).ground_matrix(0, 0)
            assert tuple(np.hypot(matrix[0], matrix[1])) == pytest.approx(sides, rel=1e-12)


def test_no_crs_sides_are_the_transform_units() -> None:
    assert pixel_sides_m(None, (3.0, 4.0, 0, 0, -2.0, 0), 5, 5) == (3.0, pytest.approx(4.47213595))
