"""Scene rendering: the pixels and class mask of one window, from the plan and global fields."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from geounet.synth.config import (
    DRY,
    GRASS,
    GRAVEL,
    MASK_NODATA,
    NOISE_BLOCK,
    SCENE_NODATA,
    SHADOW_TINT,
    SOIL,
    TREE,
    ScenePlan,
    SynthConfig,
    make_rng,
)

_HALO = 4  # context pixels per side for the blur (radius 2)
_BLUR_SIGMA = 0.7
_GAIN = 1.5  # reflectance to display-like brightness (before scaling to the dtype)


_LATTICE_BLOCK = 64


def _lattice(config: SynthConfig, key: int, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """Standard normal lattice values for nodes [r0, r1) x [c0, c1); depends only on position."""
    block = _LATTICE_BLOCK
    out = np.empty((r1 - r0, c1 - c0), dtype=np.float32)
    for bi in range(r0 // block, (r1 - 1) // block + 1):
        for bj in range(c0 // block, (c1 - 1) // block + 1):
            values = make_rng(config, 10, key, bi, bj).standard_normal((block, block), np.float32)
            ys, ye = max(r0, bi * block), min(r1, (bi + 1) * block)
            xs, xe = max(c0, bj * block), min(c1, (bj + 1) * block)
            out[ys - r0 : ye - r0, xs - c0 : xe - c0] = values[
                ys - bi * block : ye - bi * block, xs - bj * block : xe - bj * block
            ]
    return out


def _bspline(coords: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Lattice index of the first tap and the 4 cubic B-spline weights per coordinate."""
    u = (coords + 0.5) / spacing + 4.0
    i = np.floor(u).astype(np.int64)
    t = (u - i).astype(np.float32)
    t2, t3 = t * t, t * t * t
    weights = np.stack(
        [
            (1 - t) ** 3 / 6,
            (3 * t3 - 6 * t2 + 4) / 6,
            (-3 * t3 + 3 * t2 + 3 * t + 1) / 6,
            t3 / 6,
        ]
    ).astype(np.float32)
    return i - 1, weights


def _field(
    config: SynthConfig, key: int, rows: np.ndarray, cols: np.ndarray, spacing: float
) -> np.ndarray:
    """A smooth random field (about unit std) at the pixels rows x cols of the global grid."""
    iy, wy = _bspline(rows, spacing)
    ix, wx = _bspline(cols, spacing)
    r0, r1 = int(iy.min()), int(iy.max()) + 4
    c0, c1 = int(ix.min()), int(ix.max()) + 4
    lattice = _lattice(config, key, r0, r1, c0, c1) * np.float32(1 / 0.48)
    part = wy[0][:, None] * lattice[iy - r0]
    for k in range(1, 4):
        part += wy[k][:, None] * lattice[iy - r0 + k]
    out = part[:, ix - c0] * wx[0][None, :]
    for k in range(1, 4):
        out += part[:, ix - c0 + k] * wx[k][None, :]
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function."""
    return 1.0 / (1.0 + np.exp(-x))


def _rasterize(
    geoms: np.ndarray, values: np.ndarray, y0: int, x0: int, shape: tuple[int, int], dtype: str
) -> np.ndarray:
    """Burn ``geoms`` with ``values`` onto the window of ``shape`` at (y0, x0) (0 elsewhere)."""
    from affine import Affine
    from rasterio.features import rasterize

    if len(geoms) == 0:
        return np.zeros(shape, dtype=dtype)
    return rasterize(
        zip(geoms, values.tolist()),
        out_shape=shape,
        transform=Affine.translation(x0, y0),
        fill=0,
        dtype=dtype,
    )


class _Index:
    """Which geometries touch a window (STRtree over pixel-space geometry)."""

    def __init__(self, geoms: np.ndarray) -> None:
        import shapely

        self.geoms = geoms
        self.tree = shapely.STRtree(geoms) if len(geoms) else None

    def query(self, y0: int, x0: int, height: int, width: int) -> np.ndarray:
        import shapely

        if self.tree is None:
            return np.zeros(0, dtype=np.int64)
        box = shapely.box(x0, y0, x0 + width, y0 + height)
        return np.sort(self.tree.query(box, predicate="intersects"))


def render_indexed_window(
    config: SynthConfig,
    plan: ScenePlan,
    indexes: dict[str, _Index],
    y0: int,
    x0: int,
    height: int,
    width: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (band, height, width) in output dtype and the class mask of one window."""
    h = _HALO
    hy0, hx0, hh, hw = y0 - h, x0 - h, height + 2 * h, width + 2 * h
    layers = _window_layers(plan, indexes, hy0, hx0, hh, hw)
    ground = _ground(config, np.arange(hy0, hy0 + hh), np.arange(hx0, hx0 + hw))
    roof_gain = _roof_gain(plan, layers, hy0, hx0)
    image = _paint(config, plan, layers, ground, roof_gain)
    image = image[:, h:-h, h:-h]
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[layers.is_building[h:-h, h:-h]] = 1
    mask[layers.is_road[h:-h, h:-h]] = 2
    _add_noise(config, image, y0, x0, height, width)
    top = config.max_value
    image *= np.float32(top * _GAIN)
    np.rint(image, out=image)
    np.clip(image, 1, top, out=image)
    pixels = image.astype(config.dtype)
    if config.nodata_border:
        _mark_border(config, pixels, mask, y0, x0, height, width)
    return pixels, mask


def _window_layers(plan: ScenePlan, indexes: dict[str, _Index], hy0: int, hx0: int, hh: int,
                   hw: int) -> SimpleNamespace:
    """The plan burnt onto the haloed window: building, road and lot ids, shadow, their masks."""
    shape = (hh, hw)

    def layer(name: str, values: np.ndarray | None = None, dtype: str = "int32") -> tuple:
        index = indexes[name]
        found = index.query(hy0, hx0, hh, hw)
        vals = (found + 1) if values is None else values[found]
        return _rasterize(index.geoms[found], vals, hy0, hx0, shape, dtype), found

    building_id, _ = layer("buildings")
    road_id, _ = layer("roads")
    lot_id, _ = layer("lots")
    shadow, _ = layer("shadows", np.ones(len(plan.shadows), dtype=np.uint8), "uint8")
    is_building = building_id > 0
    is_road = road_id > 0
    return SimpleNamespace(
        building_id=building_id, road_id=road_id, lot_id=lot_id, is_building=is_building,
        is_road=is_road, is_lot=(lot_id > 0) & ~is_road & ~is_building,
        in_shadow=(shadow > 0) & ~is_building,
    )


def _ground(config: SynthConfig, rows: np.ndarray, cols: np.ndarray) -> SimpleNamespace:
    """Ground cover weights (grass, soil, dry, gravel), tree cover and brightness gains."""
    px = 1.0 / config.pixel_size  # pixels per metre
    macro = _field(config, 1, rows, cols, 220.0 * px)
    meso = _field(config, 2, rows, cols, 55.0 * px)
    bright = _field(config, 3, rows, cols, 14.0 * px)
    crowns = _field(config, 4, rows, cols, max(2.0, 2.2 * px))
    fine = _field(config, 5, rows, cols, 1.5)

    veg = _sigmoid(2.6 * macro + 1.4 * meso)
    soil_mix = _sigmoid(1.8 * meso - 0.8 * macro)
    dry_mix = _sigmoid(1.5 * _field(config, 6, rows, cols, 90.0 * px))
    bare = 1.0 - veg
    w_grass = veg
    w_soil = bare * soil_mix
    w_rest = bare - w_soil
    w_dry = w_rest * dry_mix
    w_gravel = w_rest - w_dry
    tree = np.clip((crowns + 0.9 * meso + 1.6 * veg - 2.3) * 2.5, 0.0, 1.0).astype(np.float32)
    ground_gain = (1.0 + 0.09 * bright + 0.07 * fine).astype(np.float32)
    smooth_gain = (1.0 + 0.03 * bright + 0.025 * fine).astype(np.float32)
    return SimpleNamespace(grass=w_grass, soil=w_soil, dry=w_dry, gravel=w_gravel, tree=tree,
                           ground_gain=ground_gain, smooth_gain=smooth_gain)


def _roof_gain(plan: ScenePlan, layers: SimpleNamespace, hy0: int, hx0: int) -> np.ndarray:
    """Gabled roofs: one side of the ridge lit, the other darker (1 elsewhere)."""
    building_id = layers.building_id
    roof_gain = np.ones(building_id.shape, dtype=np.float32)
    by, bx = np.nonzero(layers.is_building)
    if by.size:
        ids = building_id[by, bx] - 1
        dx = (bx + hx0 + 0.5) - plan.building_centre[ids, 0]
        dy = (by + hy0 + 0.5) - plan.building_centre[ids, 1]
        side = np.sign(dx * plan.building_normal[ids, 0] + dy * plan.building_normal[ids, 1])
        roof_gain[by, bx] = 1.0 + side * plan.building_gable[ids]
    return roof_gain


def _paint(config: SynthConfig, plan: ScenePlan, layers: SimpleNamespace,
           ground: SimpleNamespace, roof_gain: np.ndarray) -> np.ndarray:
    """Reflectance per band (ground, trees, roads, lots, shadows, roofs), blurred; float32."""
    from scipy.ndimage import gaussian_filter1d

    is_building, is_road, is_lot = layers.is_building, layers.is_road, layers.is_lot
    in_shadow, smooth_gain = layers.in_shadow, ground.smooth_gain
    road_idx = layers.road_id[is_road] - 1
    lot_idx = layers.lot_id[is_lot] - 1
    roof_idx = layers.building_id[is_building] - 1
    image = np.empty((config.band_count, *is_building.shape), dtype=np.float32)
    for band in range(config.band_count):
        value = (
            ground.grass * GRASS[band]
            + ground.soil * SOIL[band]
            + ground.dry * DRY[band]
            + ground.gravel * GRAVEL[band]
        ).astype(np.float32)
        value += ground.tree * (np.float32(TREE[band]) - value)
        value *= ground.ground_gain
        value[is_road] = plan.road_colour[road_idx, band] * smooth_gain[is_road]
        value[is_lot] = plan.lot_colour[lot_idx, band] * smooth_gain[is_lot]
        value[in_shadow] *= np.float32(SHADOW_TINT[band])
        value[is_building] = (
            plan.building_colour[roof_idx, band] * smooth_gain[is_building] * roof_gain[is_building]
        )
        value = gaussian_filter1d(value, _BLUR_SIGMA, axis=0, truncate=3.0)
        image[band] = gaussian_filter1d(value, _BLUR_SIGMA, axis=1, truncate=3.0)
    return image


def _add_noise(config: SynthConfig, image: np.ndarray, y0: int, x0: int, height: int,
               width: int) -> None:
    """Add sensor noise in place, seeded per block of the global NOISE_BLOCK grid (so windows
    agree)."""
    noise_sigma = np.float32(0.008)
    for by0 in range(y0, y0 + height, NOISE_BLOCK):
        for bx0 in range(x0, x0 + width, NOISE_BLOCK):
            rng = make_rng(config, 20, by0 // NOISE_BLOCK, bx0 // NOISE_BLOCK)
            noise = rng.standard_normal((4, NOISE_BLOCK, NOISE_BLOCK), np.float32)
            bh = min(NOISE_BLOCK, y0 + height - by0)
            bw = min(NOISE_BLOCK, x0 + width - bx0)
            ys, xs = by0 - y0, bx0 - x0
            image[:, ys : ys + bh, xs : xs + bw] += (
                noise[: config.band_count, :bh, :bw] * noise_sigma
            )


def _mark_border(config: SynthConfig, pixels: np.ndarray, mask: np.ndarray, y0: int, x0: int,
                 height: int, width: int) -> None:
    """Set the window's part of the scene's nodata frame to nodata, in place."""
    border = config.nodata_border
    valid = np.zeros((height, width), dtype=bool)
    ry0, ry1 = max(border - y0, 0), min(config.height - border - y0, height)
    rx0, rx1 = max(border - x0, 0), min(config.width - border - x0, width)
    if ry1 > ry0 and rx1 > rx0:
        valid[ry0:ry1, rx0:rx1] = True
    pixels[:, ~valid] = SCENE_NODATA
    mask[~valid] = MASK_NODATA


def render_window(
    config: SynthConfig, plan: ScenePlan, y0: int, x0: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Render one window of the scene: pixels (band, height, width) and the class mask.

    The result depends only on the window's position, never on how the scene is cut into
    windows.
    """
    indexes = window_indexes(plan)
    return render_indexed_window(config, plan, indexes, y0, x0, height, width)


def window_indexes(plan: ScenePlan) -> dict[str, _Index]:
    """A spatial index per burnt layer of the plan."""
    return {
        "buildings": _Index(plan.buildings),
        "roads": _Index(plan.road_polygons),
        "lots": _Index(plan.lots),
        "shadows": _Index(plan.shadows),
    }
