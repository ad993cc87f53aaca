"""Scene planning: roads, buildings, shadows and paved lots as vector geometry (pixel space)."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np

from geounet.synth.config import (
    ROAD_COLOURS,
    ROAD_P_MAIN,
    ROAD_P_SIDE,
    ROOF_COLOURS,
    ROOF_P,
    ScenePlan,
    SynthConfig,
    make_rng,
)


def _wavy_line(
    rng: np.random.Generator, along: np.ndarray, offset: float, length_scale: float
) -> np.ndarray:
    """Cross-track offsets of a gently curving road: tilt plus two sines (metres)."""
    tilt = rng.uniform(-0.1, 0.1)
    a1, l1 = rng.uniform(0, 30), rng.uniform(400, 1600)
    a2, l2 = rng.uniform(0, 6), rng.uniform(120, 400)
    p1, p2 = rng.uniform(0, 2 * np.pi, 2)
    mid = length_scale / 2
    return (
        offset
        + tilt * (along - mid)
        + a1 * np.sin(2 * np.pi * along / l1 + p1)
        + a2 * np.sin(2 * np.pi * along / l2 + p2)
    )


def _plan_roads(config: SynthConfig, rng: np.random.Generator) -> tuple[list, list, list]:
    """Road centerlines (metres), widths and kinds: a curved grid, diagonals, side streets."""
    import shapely

    p = config.pixel_size
    height_m, width_m = config.height * p, config.width * p
    margin = 80.0
    lines: list = []
    widths: list[float] = []
    kinds: list[int] = []

    def main_kind() -> int:
        return int(rng.choice(3, p=ROAD_P_MAIN))

    for axis_length, cross_length, horizontal in (
        (width_m, height_m, True),
        (height_m, width_m, False),
    ):
        spacing = rng.uniform(180, 320)
        position = rng.uniform(0.25, 0.75) * min(spacing, cross_length)
        along = np.arange(-margin, axis_length + margin + 4.0, 4.0)
        while position < cross_length:
            cross = _wavy_line(rng, along, position, axis_length)
            xy = np.column_stack([along, cross] if horizontal else [cross, along])
            lines.append(shapely.linestrings(xy))
            widths.append(float(rng.uniform(7, 14)))
            kinds.append(main_kind())
            position += spacing * rng.uniform(0.8, 1.2)
    # diagonal roads across the grid
    n_diagonal = rng.poisson(height_m * width_m / (300.0 * 300.0 * 8))
    diagonal = math.hypot(height_m, width_m) + 2 * margin
    for _ in range(int(n_diagonal)):
        angle = rng.uniform(np.pi / 9, 4 * np.pi / 9) + rng.integers(0, 2) * np.pi / 2
        cx, cy = rng.uniform(0.2, 0.8) * width_m, rng.uniform(0.2, 0.8) * height_m
        along = np.arange(-diagonal / 2, diagonal / 2, 4.0)
        cross = _wavy_line(rng, along, 0.0, 0.0)
        ux, uy = math.cos(angle), math.sin(angle)
        xy = np.column_stack([cx + along * ux - cross * uy, cy + along * uy + cross * ux])
        lines.append(shapely.linestrings(xy))
        widths.append(float(rng.uniform(6, 10)))
        kinds.append(main_kind())
    # side streets: short dead ends leaving a main road at right angles
    for line, width, kind in _side_streets(rng, list(lines)):
        lines.append(line)
        widths.append(width)
        kinds.append(kind)
    return lines, widths, kinds


def _side_streets(rng: np.random.Generator, main_lines: list) -> list[tuple[Any, float, int]]:
    """Short dead ends leaving the main roads at right angles: (line, width, kind) each."""
    import shapely

    streets = []
    total = sum(line.length for line in main_lines)
    n_side = rng.poisson(total / 250.0)
    for _ in range(int(n_side)):
        line = main_lines[int(rng.integers(len(main_lines)))]
        at = rng.uniform(0, line.length)
        a, b = shapely.line_interpolate_point(line, [at, min(at + 2.0, line.length)])
        dx, dy = b.x - a.x, b.y - a.y
        norm = math.hypot(dx, dy) or 1.0
        side = 1 if rng.random() < 0.5 else -1
        nx, ny = -dy / norm * side, dx / norm * side
        length = rng.uniform(40, 160)
        bend = rng.uniform(-0.3, 0.3)
        t = np.linspace(0.0, 1.0, 16)
        along = t * length
        cross = bend * length * t**2
        xy = np.column_stack(
            [a.x + along * nx - cross * ny, a.y + along * ny + cross * nx]
        )
        streets.append((shapely.linestrings(xy), float(rng.uniform(4, 7)),
                        int(rng.choice(3, p=ROAD_P_SIDE))))
    return streets


def _smooth_at(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray, spacing: float
) -> np.ndarray:
    """A smooth random field (about unit std) evaluated at points (metres)."""
    from scipy.ndimage import map_coordinates

    extent = max(float(np.max(x, initial=0.0)), float(np.max(y, initial=0.0))) + 4 * spacing
    n = int(extent / spacing) + 4
    grid = rng.standard_normal((n, n))
    return map_coordinates(grid, [y / spacing + 1, x / spacing + 1], order=3, mode="nearest") / 0.7


_CELL = 28.0  # grid cell of one building or paved lot (metres)
_GAP = 2.5  # least gap between the footprints of neighbouring cells (metres)


def _plan_buildings(
    config: SynthConfig, rng: np.random.Generator, road_polygons_m: list
) -> dict[str, Any]:
    """Buildings and paved lots on a jittered grid, clear of the roads, with their shadows."""
    import shapely

    d = _draw_buildings(config, rng)
    ring, centre_x, centre_y, cos, sin = _footprint_rings(d)
    footprints = shapely.make_valid(shapely.polygons(ring))
    footprints = shapely.normalize(shapely.simplify(footprints, 0.0))
    building, paved = _placed(d, footprints, centre_x, centre_y, road_polygons_m)
    shadow_parts = _shadow_parts(d, ring)
    colour = (np.asarray(ROOF_COLOURS, dtype=np.float64)[d.roof] * d.roof_gain[:, None]
              * d.roof_tint)
    lot_colour = np.asarray(ROAD_COLOURS[:2], dtype=np.float64)[d.lot_kind] * d.lot_gain[:, None]
    normal = np.stack([-sin, cos], -1)  # across the long axis (the ridge runs along it)
    # the side facing the sun is brighter: sign the gable step by the sun direction
    facing = np.sign(normal[:, 0] * math.sin(d.sun_azimuth)
                     - normal[:, 1] * math.cos(d.sun_azimuth))
    facing[facing == 0] = 1.0
    return {
        "buildings": footprints[building],
        "building_colour": colour[building].astype(np.float32),
        "building_centre": np.stack([centre_x, centre_y], -1)[building],
        "building_normal": (normal * facing[:, None])[building],
        "building_gable": d.gable[building].astype(np.float32),
        "shadows": shadow_parts[building].ravel(),
        "lots": footprints[paved],
        "lot_colour": lot_colour[paved].astype(np.float32),
    }


def _draw_buildings(config: SynthConfig, rng: np.random.Generator) -> SimpleNamespace:
    """Every random draw of the building plan (one value per grid cell), in a fixed order."""
    p = config.pixel_size
    height_m, width_m = config.height * p, config.width * p
    cell = _CELL
    offset = rng.uniform(0, cell, 2)
    cx_grid = np.arange(-offset[0], width_m + cell, cell)
    cy_grid = np.arange(-offset[1], height_m + cell, cell)
    cx, cy = (a.ravel() + cell / 2 for a in np.meshgrid(cx_grid, cy_grid))
    density = 0.74 + 0.3 * np.tanh(_smooth_at(rng, cx + cell, cy + cell, 350.0))
    angle_field = _smooth_at(rng, cx + cell, cy + cell, 500.0) * 0.6
    n = cx.size
    keep = rng.random(n) < density
    lot = rng.random(n) < 0.07
    # footprint: box A x B, L-shapes have one corner notch
    big = rng.random(n) < 0.15
    length = np.where(big, rng.uniform(16, 22, n), rng.uniform(9, 16, n))
    depth = np.minimum(length, np.where(big, rng.uniform(11, 15, n), rng.uniform(7, 12, n)))
    is_l = rng.random(n) < 0.3
    notch_a = rng.uniform(0.4, 0.65, n)
    notch_b = rng.uniform(0.4, 0.65, n)
    angle = angle_field + rng.normal(0, 0.06, n)
    free = rng.random(n) < 0.2
    angle = np.where(free, rng.uniform(0, np.pi, n), angle)
    flip_x = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    flip_y = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    lot_length, lot_depth = rng.uniform(12, 26, n), rng.uniform(9, 18, n)
    height = rng.uniform(3, 8, n) + 0.25 * length
    roof = rng.choice(len(ROOF_COLOURS), size=n, p=ROOF_P)
    roof_gain = rng.uniform(0.85, 1.15, n)
    roof_tint = rng.uniform(0.95, 1.05, (n, 4))
    gable = np.where(~is_l & (rng.random(n) < 0.6), rng.uniform(0.07, 0.18, n), 0.0)
    lot_kind = rng.choice(2, size=n, p=(0.6, 0.4))
    lot_gain = rng.uniform(0.9, 1.1, n)
    jitter = rng.uniform(-1, 1, (n, 2))
    sun_azimuth = rng.uniform(np.radians(100), np.radians(170))
    sun_factor = rng.uniform(0.5, 0.8)
    return SimpleNamespace(
        height_m=height_m, width_m=width_m, cx=cx, cy=cy, n=n, keep=keep, lot=lot,
        length=length, depth=depth, is_l=is_l, notch_a=notch_a, notch_b=notch_b, angle=angle,
        flip_x=flip_x, flip_y=flip_y, lot_length=lot_length, lot_depth=lot_depth,
        height=height, roof=roof, roof_gain=roof_gain, roof_tint=roof_tint, gable=gable,
        lot_kind=lot_kind, lot_gain=lot_gain, jitter=jitter, sun_azimuth=sun_azimuth,
        sun_factor=sun_factor,
    )


def _footprint_rings(d: SimpleNamespace) -> tuple[np.ndarray, ...]:
    """Footprint rings (6 vertices each, metres), their centres and the cos/sin of their angles."""
    cell, gap = _CELL, _GAP
    half_a = np.where(d.lot, d.lot_length, d.length) / 2
    half_b = np.where(d.lot, d.lot_depth, d.depth) / 2
    radius = np.hypot(half_a, half_b)
    scale = np.minimum(1.0, (cell / 2 - gap / 2) / radius)
    half_a, half_b, radius = half_a * scale, half_b * scale, radius * scale
    room = np.maximum(0.0, cell / 2 - gap / 2 - radius)
    centre_x = d.cx + d.jitter[:, 0] * room
    centre_y = d.cy + d.jitter[:, 1] * room

    # local vertices (6 per footprint; rectangles repeat corners harmlessly)
    a, b = half_a, half_b
    ia = -a + 2 * a * d.notch_a
    ib = -b + 2 * b * d.notch_b
    rect = np.stack(
        [np.stack(v, -1) for v in ((-a, -b), (a, -b), (a, b), (a, b), (-a, b), (-a, b))], 1
    )
    ell = np.stack(
        [np.stack(v, -1) for v in ((-a, -b), (a, -b), (a, ib), (ia, ib), (ia, b), (-a, b))], 1
    )
    local = np.where((d.is_l & ~d.lot)[:, None, None], ell, rect)
    local = local * np.stack([d.flip_x, d.flip_y], -1)[:, None, :]
    cos, sin = np.cos(d.angle), np.sin(d.angle)
    world_x = centre_x[:, None] + local[..., 0] * cos[:, None] - local[..., 1] * sin[:, None]
    world_y = centre_y[:, None] + local[..., 0] * sin[:, None] + local[..., 1] * cos[:, None]
    ring = np.stack([world_x, world_y], -1)
    return ring, centre_x, centre_y, cos, sin


def _placed(d: SimpleNamespace, footprints: np.ndarray, centre_x: np.ndarray,
            centre_y: np.ndarray, road_polygons_m: list) -> tuple[np.ndarray, np.ndarray]:
    """Which cells hold a building and which a paved lot: kept, in the scene, off the roads."""
    import shapely

    cell = _CELL
    inside = (
        (centre_x > -cell)
        & (centre_x < d.width_m + cell)
        & (centre_y > -cell)
        & (centre_y < d.height_m + cell)
    )
    tree = shapely.STRtree(road_polygons_m)
    setback = np.where(d.lot, 2.0, 3.0)
    hits = tree.query(shapely.buffer(footprints, setback, quad_segs=2), predicate="intersects")
    clear = np.ones(d.n, dtype=bool)
    clear[hits[0]] = False
    chosen = d.keep & inside & clear
    return chosen & ~d.lot, chosen & d.lot


def _shadow_parts(d: SimpleNamespace, ring: np.ndarray) -> np.ndarray:
    """Shadow pieces per footprint, (n, 7): the footprint moved away from the sun, and the
    parallelograms its edges sweep (burnt with one value, their union needs no polygon union)."""
    import shapely

    shadow_len = d.height * d.sun_factor
    sdx = -math.sin(d.sun_azimuth) * shadow_len
    sdy = math.cos(d.sun_azimuth) * shadow_len  # y grows downwards (south)
    offset_xy = np.stack([sdx, sdy], -1)[:, None, :]
    moved = ring + offset_xy
    nxt = np.roll(ring, -1, axis=1)
    quads = np.stack([ring, nxt, nxt + offset_xy, moved], 2)  # (n, 6 edges, 4, 2)
    return np.concatenate(
        [shapely.polygons(moved)[:, None], shapely.polygons(quads)], 1
    )  # (n, 7)


def _connected_roads(
    config: SynthConfig, lines: np.ndarray, widths: np.ndarray, kinds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip roads to the scene and keep the pieces of the largest connected network."""
    import shapely

    p = config.pixel_size
    scene = shapely.box(0, 0, config.width * p, config.height * p)
    parts, index = shapely.get_parts(shapely.intersection(lines, scene), return_index=True)
    parts = shapely.line_merge(parts)
    long_enough = (shapely.get_type_id(parts) == 1) & (shapely.length(parts) > 1.0)
    parts, index = parts[long_enough], index[long_enough]
    if len(parts) == 0:
        return parts, widths[index].astype(np.float64), kinds[index].astype(np.int64)
    polygons = shapely.buffer(parts, widths[index] / 2, quad_segs=8)
    networks = shapely.get_parts(shapely.union_all(polygons))
    main = networks[int(np.argmax(shapely.area(networks)))]
    keep = shapely.intersects(polygons, main)
    return parts[keep], widths[index][keep].astype(np.float64), kinds[index][keep].astype(np.int64)


def plan_scene(config: SynthConfig) -> ScenePlan:
    """Draw the vector content of a scene (deterministic for ``config.seed``).

    Roads are a connected, curved grid with diagonal roads and dead-end side streets;
    buildings (rectangles and L-shapes) fill the blocks with a setback from the roads.

    Parameters
    ----------
    config : the scene to plan.

    Returns
    -------
    ScenePlan
        Geometry in pixel coordinates of the scene (x right, y down, pixel centres at +0.5).
    """
    import shapely

    rng = make_rng(config, 1)
    lines_m, widths, kinds = _plan_roads(config, rng)
    lines_arr, widths_arr, kinds_arr = _connected_roads(
        config, np.asarray(lines_m, dtype=object), np.asarray(widths), np.asarray(kinds)
    )
    road_polygons_m = shapely.buffer(lines_arr, widths_arr / 2, quad_segs=8)
    parts = _plan_buildings(config, make_rng(config, 2), list(road_polygons_m))
    road_rng = make_rng(config, 3)
    road_colour = np.asarray(ROAD_COLOURS, dtype=np.float64)[kinds_arr]
    road_colour = road_colour * road_rng.uniform(0.88, 1.12, (len(kinds_arr), 1))
    road_colour = road_colour * road_rng.uniform(0.97, 1.03, (len(kinds_arr), 4))

    scale = 1.0 / config.pixel_size

    def to_pixels(geoms: np.ndarray) -> np.ndarray:
        return shapely.transform(np.asarray(geoms, dtype=object), lambda c: c * scale)

    return ScenePlan(
        roads=to_pixels(lines_arr),
        road_width_m=widths_arr,
        road_kind=kinds_arr,
        road_polygons=to_pixels(road_polygons_m),
        road_colour=road_colour.astype(np.float32),
        buildings=to_pixels(parts["buildings"]),
        building_colour=parts["building_colour"],
        building_centre=parts["building_centre"] * scale,
        building_normal=parts["building_normal"],
        building_gable=parts["building_gable"],
        shadows=to_pixels(parts["shadows"]),
        lots=to_pixels(parts["lots"]),
        lot_colour=parts["lot_colour"],
    )
