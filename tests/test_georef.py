"""geounet.georef: one rule for pixel sizes in metres (projected, feet, geographic, rotated)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely

from geounet.georef import Frame, pixel_sides_m, pixel_size_m, units_name


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
