"""A realistic proxy for real aerial building data (issue 21): labelled 256 px chips of dense
settlements, harder than ``geounet synth``.

Usage::

    PYTHONPATH=. python benchmarks/proxy_data.py OUT --seed 0 [--train 120 --eval 30]

writes ``OUT/train/NAME.tif`` + ``OUT/train/NAME.mask.tif`` (0/1 building masks) +
``OUT/train/labels/NAME.geojson`` (the same noisy footprints as polygons, EPSG:4326), the
layout of the published dataset of issue 21 (images, masks and per-chip OSM labels) that
``geounet train OUT/train`` reads, and ``OUT/eval/`` (images and exact masks), plus ``OUT/eval/objects.json`` (the true building outlines of every eval chip,
in the chip's CRS, as WKT) and ``OUT/proxy.json`` (what was made).

What makes it hard (each scene draws its own values from the seed):

- **dense settlements** of rows of roofs along a street grid; about 40% of the neighbours
  touch (no gap) or are < 0.5 m apart; rectangles and L-shapes, a little rotation each;
- **roof materials**: corrugated metal (stripes along the slope, silver, rusty or painted),
  red/orange tile (courses), concrete (flat, stained), thatch-like (fine directional noise);
  gable roofs have two shades;
- **mixed ground resolutions in one dataset**: scenes at 0.075, 0.15 and 0.30 m (70/20/10%
  of the chips), UTM GeoTIFFs (EPSG:32737) with a real transform; each scene's chips form a
  contiguous grid, scenes lie kilometres apart;
- dirt/grass ground, dirt or asphalt **roads**, **cast shadows** (one sun per scene),
  **trees** (canopies over roofs and ground, with shadows: the label keeps the roof under a
  tree), sensor blur and noise, a smooth **haze** field, **JPEG** artefacts (Pillow, quality
  35-85 per chip);
- **OSM-like label noise on the training labels only**: the scene's footprints offset by
  0.5-2 m (one direction per scene plus 0.3 m per building), ~10% of buildings missing,
  outlines simplified (L-shapes become their bounding rectangle; sizes +-10%, +-3 degrees).
  Evaluation chips come from other scenes and have exact labels.

numpy, scipy, scikit-image and Pillow draw it; rasterio writes it.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHIP = 256
CRS = "EPSG:32737"
#: share of chips at each ground resolution (metres)
RESOLUTIONS = ((0.075, 0.7), (0.15, 0.2), (0.30, 0.1))


@dataclass
class Scene:
    name: str
    pixel: float
    rows: int
    cols: int
    origin: tuple[float, float]
    noisy: bool


def _smooth(rng: np.random.Generator, shape: tuple[int, int], cells: float) -> np.ndarray:
    """A smooth field in [0, 1] with features about ``cells`` px apart."""
    from scipy.ndimage import zoom

    gh, gw = max(2, int(shape[0] / cells) + 2), max(2, int(shape[1] / cells) + 2)
    small = rng.random((gh, gw)).astype(np.float32)
    big = zoom(small, (shape[0] / gh * 1.0001, shape[1] / gw * 1.0001), order=3)
    big = big[: shape[0], : shape[1]]
    lo, hi = float(big.min()), float(big.max())
    return (big - lo) / max(hi - lo, 1e-6)


def _rect(cx: float, cy: float, w: float, d: float, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    pts = np.array([[-w / 2, -d / 2], [w / 2, -d / 2], [w / 2, d / 2], [-w / 2, d / 2]])
    return np.stack([cx + pts[:, 0] * c - pts[:, 1] * s, cy + pts[:, 0] * s + pts[:, 1] * c], 1)


def _ell(cx: float, cy: float, w: float, d: float, angle: float, cut: tuple[float, float]
         ) -> np.ndarray:
    """An L-shaped outline: the rectangle minus one corner (``cut`` shares of w and d)."""
    c, s = np.cos(angle), np.sin(angle)
    a, b = w * cut[0], d * cut[1]
    pts = np.array([[-w / 2, -d / 2], [w / 2, -d / 2], [w / 2, d / 2 - b],
                    [w / 2 - a, d / 2 - b], [w / 2 - a, d / 2], [-w / 2, d / 2]])
    return np.stack([cx + pts[:, 0] * c - pts[:, 1] * s, cy + pts[:, 0] * s + pts[:, 1] * c], 1)


def _plan(rng: np.random.Generator, width_m: float, height_m: float) -> dict:
    """Streets, buildings (outlines in metres, scene x right / y down) and trees."""
    theta = rng.uniform(0, np.pi / 2)
    c, s = np.cos(theta), np.sin(theta)
    diag = float(np.hypot(width_m, height_m))
    block_w = rng.uniform(45, 90)
    block_d = rng.uniform(30, 50)
    road_w = rng.uniform(3.5, 7.0)
    buildings, kinds, axes = [], [], []
    density = rng.uniform(0.85, 0.98)
    open_field = rng.random((32, 32))
    # walk a rotated street grid covering the scene
    v = -diag / 2
    while v < diag / 2:
        depth = rng.uniform(6, 11)
        u = -diag / 2 + rng.uniform(0, 3)
        while u < diag / 2:
            w = rng.uniform(4, 12)
            gap = 0.0 if rng.random() < 0.45 else rng.uniform(0.2, 1.5)
            cu, cv = u + w / 2, v + depth / 2
            u += w + gap
            # streets: every block_w along u, every block_d along v
            if (cu % (block_w + road_w)) > block_w - w / 3 or (cv % (block_d + road_w)) > \
                    block_d - depth / 3:
                continue
            x = width_m / 2 + cu * c - cv * s
            y = height_m / 2 + cu * s + cv * c
            if not (-8 < x < width_m + 8 and -8 < y < height_m + 8):
                continue
            fi, fj = int(np.clip(y / height_m * 31, 0, 31)), int(np.clip(x / width_m * 31, 0, 31))
            if rng.random() > density or open_field[fi, fj] < 0.06:
                continue
            d = depth * rng.uniform(0.7, 1.0)
            ang = theta + rng.normal(0, 0.06)
            if rng.random() < 0.25:
                poly = _ell(x, y, w, d, ang, (rng.uniform(0.3, 0.6), rng.uniform(0.3, 0.6)))
                kinds.append("L")
            else:
                poly = _rect(x, y, w, d, ang)
                kinds.append("R")
            buildings.append(poly)
            axes.append((x, y, ang))
        v += depth + (rng.uniform(1, 3) if rng.random() < 0.2 else rng.uniform(0, 0.8))
    # roads: the street grid lines, as (u or v, orientation) in the rotated frame
    n_trees = int(width_m * height_m / rng.uniform(150, 400))
    trees = np.stack([rng.uniform(0, width_m, n_trees), rng.uniform(0, height_m, n_trees),
                      rng.uniform(1.2, 4.0, n_trees)], 1)
    return dict(theta=theta, block_w=block_w, block_d=block_d, road_w=road_w,
                buildings=buildings, kinds=kinds, axes=axes, trees=trees)


MATERIALS = ("metal", "rust", "painted", "tile", "concrete", "thatch")


def _render(rng: np.random.Generator, plan: dict, scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """RGB float image (H, W, 3) in [0, 255] and the building id raster (0 = none)."""
    from scipy.ndimage import gaussian_filter
    from skimage.draw import disk, polygon

    p = scene.pixel
    h, w = scene.rows * CHIP, scene.cols * CHIP
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xm, ym = (xx + 0.5) * p, (yy + 0.5) * p
    # ground: dirt / grass / bare mix
    dirt = np.array(rng.choice([[150, 120, 90], [170, 140, 105], [125, 100, 80], [185, 160, 130]]),
                    np.float32)
    grass = np.array(rng.choice([[90, 110, 60], [110, 120, 75], [75, 95, 55]]), np.float32)
    g = _smooth(rng, (h, w), 40 / p)[..., None]
    img = dirt * (1 - 0.6 * g) + grass * (0.6 * g)
    img *= (0.85 + 0.3 * _smooth(rng, (h, w), 3 / p))[..., None]
    img += rng.normal(0, 6, (h, w, 1)).astype(np.float32)
    # roads along the street grid
    c, s = np.cos(plan["theta"]), np.sin(plan["theta"])
    cx, cy = w * p / 2, h * p / 2
    uu = (xm - cx) * c + (ym - cy) * s
    vv = -(xm - cx) * s + (ym - cy) * c
    rw = plan["road_w"]
    on_road = ((uu % (plan["block_w"] + rw)) > plan["block_w"] + 0.3) | \
              ((vv % (plan["block_d"] + rw)) > plan["block_d"] + 0.3)
    on_road &= _smooth(rng, (h, w), 30 / p) > 0.15
    road_col = np.array(rng.choice([[175, 160, 140], [120, 118, 115], [190, 170, 140]]),
                        np.float32)
    img[on_road] = road_col * (0.9 + 0.2 * rng.random((int(on_road.sum()), 1), np.float32))
    # buildings: id raster
    ids = np.zeros((h, w), np.int32)
    for i, poly in enumerate(plan["buildings"], start=1):
        rr, cc = polygon(poly[:, 1] / p - 0.5, poly[:, 0] / p - 0.5, shape=(h, w))
        ids[rr, cc] = i
    n = len(plan["buildings"])
    roof = ids > 0
    # shadows: buildings of one height band cast along the sun azimuth
    az = rng.uniform(0, 2 * np.pi)
    length = rng.uniform(0.6, 2.5) / p
    sdy, sdx = np.sin(az), np.cos(az)
    shadow = np.zeros((h, w), bool)
    steps = max(1, int(length))
    for t in range(1, steps + 1):
        dy, dx = int(round(t * sdy)), int(round(t * sdx))
        shadow |= np.roll(np.roll(roof, dy, 0), dx, 1)
    shadow &= ~roof
    img[shadow] *= rng.uniform(0.4, 0.6)
    img[shadow] += np.array([0, 4, 14], np.float32)
    # roofs: per-building material, colour and pattern along its axis
    mats = rng.integers(0, len(MATERIALS), n + 1)
    mat_mix = rng.dirichlet(np.ones(len(MATERIALS)) * 1.5)
    mats = rng.choice(len(MATERIALS), n + 1, p=mat_mix)
    bx = np.array([0.0] + [a[0] for a in plan["axes"]], np.float32)
    by = np.array([0.0] + [a[1] for a in plan["axes"]], np.float32)
    ba = np.array([0.0] + [a[2] for a in plan["axes"]], np.float32)
    base = np.zeros((n + 1, 3), np.float32)
    period = np.zeros(n + 1, np.float32)
    palette = {
        "metal": [[175, 180, 185], [200, 205, 210], [150, 155, 160]],
        "rust": [[140, 85, 60], [120, 90, 70], [160, 110, 80]],
        "painted": [[60, 100, 150], [60, 130, 110], [170, 60, 50], [200, 200, 190]],
        "tile": [[180, 80, 50], [200, 110, 70], [150, 70, 50]],
        "concrete": [[190, 185, 175], [160, 160, 155], [210, 205, 195]],
        "thatch": [[165, 140, 95], [140, 120, 85], [185, 160, 110]],
    }
    for i in range(1, n + 1):
        name = MATERIALS[mats[i]]
        base[i] = np.array(palette[name][rng.integers(len(palette[name]))], np.float32)
        base[i] *= rng.uniform(0.8, 1.15)
        period[i] = {"metal": 0.25, "rust": 0.25, "painted": 0.25, "tile": 0.35,
                     "concrete": 1e9, "thatch": 1e9}[name] * rng.uniform(0.8, 1.4)
    k = ids[roof]
    du, dv = xm[roof] - bx[k], ym[roof] - by[k]
    ca, sa = np.cos(ba[k]), np.sin(ba[k])
    ru = du * ca + dv * sa
    rv = -du * sa + dv * ca
    m = mats[k]
    gable = np.isin(m, [0, 1, 2, 3, 5]) & (rng.random(n + 1) < 0.7)[k]
    shade = np.where(gable, np.where(rv > 0, 0.82, 1.08), 1.0)
    stripes = 1 + 0.14 * np.sin(2 * np.pi * ru / period[k])
    col = base[k] * (shade * stripes)[:, None]
    roof_img = np.zeros((h, w, 3), np.float32)
    roof_img[roof] = col
    tex = gaussian_filter(rng.normal(0, 1, (h, w)).astype(np.float32), (0.6, 2.5))
    stain = _smooth(rng, (h, w), 4 / p)
    tmat = np.zeros((h, w), np.int64)
    tmat[roof] = m
    thatch = roof & (tmat == 5)
    roof_img[thatch] *= (1 + 0.5 * tex[thatch])[:, None]
    conc = roof & (tmat == 4)
    roof_img[conc] *= (0.8 + 0.3 * stain[conc])[:, None]
    rust = roof & (tmat == 1)
    roof_img[rust] *= (0.75 + 0.4 * stain[rust])[:, None]
    # roof edges slightly darker (eaves)
    from scipy.ndimage import binary_erosion

    edge = roof & ~binary_erosion(roof, iterations=max(1, int(round(0.15 / p))))
    roof_img[edge] *= 0.85
    img[roof] = roof_img[roof]
    # trees over everything (canopy occludes roofs; the label keeps the roof)
    canopy = np.zeros((h, w), bool)
    for tx, ty, tr in plan["trees"]:
        rr, cc = disk((ty / p, tx / p), tr / p, shape=(h, w))
        canopy[rr, cc] = True
    tshadow = np.zeros((h, w), bool)
    for t in range(1, max(2, int(2.5 / p)), max(1, int(0.5 / p))):
        tshadow |= np.roll(np.roll(canopy, int(round(t * sdy)), 0), int(round(t * sdx)), 1)
    tshadow &= ~canopy
    img[tshadow] *= 0.6
    leaf = np.array(rng.choice([[60, 85, 45], [45, 70, 40], [80, 100, 55]]), np.float32)
    ctex = 0.7 + 0.6 * _smooth(rng, (h, w), 0.6 / p)
    img[canopy] = leaf * ctex[canopy][:, None]
    # optics: blur, haze, noise
    for b in range(3):
        img[..., b] = gaussian_filter(img[..., b], rng.uniform(0.4, 1.0))
    haze = (rng.uniform(0.0, 0.3) * _smooth(rng, (h, w), 150 / p))[..., None]
    haze_col = np.array([200, 205, 215], np.float32)
    img = img * (1 - haze) + haze_col * haze
    img = img * rng.uniform(0.85, 1.15, 3).astype(np.float32) + rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255), ids


def _noisy_labels(rng: np.random.Generator, plan: dict, scene: Scene
                  ) -> tuple[np.ndarray, list[np.ndarray]]:
    """OSM-like labels: offset, missing, simplified outlines; rasterized, and the outlines
    (metres from the scene's top-left corner, y down)."""
    from skimage.draw import polygon

    p = scene.pixel
    h, w = scene.rows * CHIP, scene.cols * CHIP
    mag, ang = rng.uniform(0.5, 2.0), rng.uniform(0, 2 * np.pi)
    off = np.array([mag * np.cos(ang), mag * np.sin(ang)])
    mask = np.zeros((h, w), np.uint8)
    outlines = []
    for poly, kind, (x, y, a) in zip(plan["buildings"], plan["kinds"], plan["axes"]):
        if rng.random() < 0.10:
            continue
        if kind == "L":  # simplified: the bounding rectangle in the building's frame
            c, s = np.cos(a), np.sin(a)
            u = (poly[:, 0] - x) * c + (poly[:, 1] - y) * s
            v = -(poly[:, 0] - x) * s + (poly[:, 1] - y) * c
            poly = _rect(x, y, float(u.max() - u.min()), float(v.max() - v.min()), a)
        f = rng.uniform(0.9, 1.1)
        rot = rng.normal(0, np.radians(3))
        cr, sr = np.cos(rot), np.sin(rot)
        q = (poly - [x, y]) * f
        q = np.stack([q[:, 0] * cr - q[:, 1] * sr, q[:, 0] * sr + q[:, 1] * cr], 1)
        q = q + [x, y] + off + rng.normal(0, 0.3, 2)
        rr, cc = polygon(q[:, 1] / p - 0.5, q[:, 0] / p - 0.5, shape=(h, w))
        mask[rr, cc] = 1
        outlines.append(q)
    return mask, outlines


def _write_labels(path: Path, outlines: list[np.ndarray], scene: Scene, bounds) -> None:
    """The noisy outlines that meet the chip ``bounds`` as a per-chip GeoJSON in EPSG:4326
    (what OSM exports and the published dataset's ``labels/`` hold), clipped to the chip."""
    import geopandas as gpd
    from shapely.geometry import Polygon

    ox, oy = scene.origin
    geoms = []
    for q in outlines:
        poly = Polygon([(ox + x, oy - y) for x, y in q])
        if poly.is_valid and poly.intersects(bounds):
            piece = poly.intersection(bounds)
            if piece.area > 0:
                geoms.append(piece)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = gpd.GeoDataFrame({"building": ["yes"] * len(geoms)}, geometry=geoms, crs=CRS)
    frame.to_crs("EPSG:4326").to_file(path, driver="GeoJSON")


def _jpeg(rng: np.random.Generator, chip: np.ndarray) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(chip).save(buf, format="JPEG", quality=int(rng.integers(35, 86)))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def _scenes(seed: int, count: int, prefix: str, noisy: bool, base_x: float) -> list[Scene]:
    """Scenes whose chips split ``count`` 70/20/10 over the resolutions."""
    scenes = []
    counts = [int(round(count * share)) for _, share in RESOLUTIONS]
    counts[0] = count - sum(counts[1:])
    k = 0
    for (pixel, _), n in zip(RESOLUTIONS, counts):
        parts = [n] if n <= 48 else [n // 2, n - n // 2]  # large shares: two scenes
        for part in parts:
            if part <= 0:
                continue
            cols = int(np.ceil(np.sqrt(part)))
            rows = int(np.ceil(part / cols))
            origin = (base_x + 5000.0 * k + 20000.0 * seed, 9300000.0 - 3000.0 * k)
            scenes.append(Scene(f"{prefix}{k}_{int(round(pixel * 1000)):03d}mm", pixel, rows,
                                cols, origin, noisy))
            scenes[-1].count = part  # type: ignore[attr-defined]
            k += 1
    return scenes


def _write(path: Path, data: np.ndarray, transform, count: int) -> None:
    import rasterio

    with rasterio.open(path, "w", driver="GTiff", height=CHIP, width=CHIP, count=count,
                       dtype="uint8", crs=CRS, transform=transform) as dst:
        dst.write(data if data.ndim == 3 else data[None])


def make_proxy(out: str | Path, seed: int = 0, n_train: int = 120, n_eval: int = 30) -> dict:
    """Write the proxy dataset under ``out``; return a summary (also ``out/proxy.json``)."""
    from rasterio.transform import from_origin
    from shapely.geometry import Polygon

    out = Path(out)
    start = time.perf_counter()
    summary: dict = {"seed": seed, "scenes": []}
    objects: dict[str, list[str]] = {}
    for split, count, noisy, base in (("train", n_train, True, 300000.0),
                                      ("eval", n_eval, False, 700000.0)):
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        prefix = "t" if split == "train" else "e"
        for scene in _scenes(seed, count, prefix, noisy, base):
            key = (seed, 0 if noisy else 1, len(summary["scenes"]))
            rng = np.random.default_rng(key)
            p = scene.pixel
            plan = _plan(rng, scene.cols * CHIP * p, scene.rows * CHIP * p)
            img, ids = _render(rng, plan, scene)
            img8 = img.astype(np.uint8)
            labels, outlines = (_noisy_labels(rng, plan, scene) if noisy
                                else ((ids > 0).astype(np.uint8), []))
            written = 0
            for r in range(scene.rows):
                for c in range(scene.cols):
                    if written >= scene.count:  # type: ignore[attr-defined]
                        break
                    sl = (slice(r * CHIP, (r + 1) * CHIP), slice(c * CHIP, (c + 1) * CHIP))
                    chip = _jpeg(rng, np.ascontiguousarray(img8[sl]))
                    x0 = scene.origin[0] + c * CHIP * p
                    y0 = scene.origin[1] - r * CHIP * p
                    transform = from_origin(x0, y0, p, p)
                    name = f"{scene.name}_r{r:02d}_c{c:02d}"
                    _write(folder / f"{name}.tif", chip.transpose(2, 0, 1), transform, 3)
                    _write(folder / f"{name}.mask.tif", labels[sl], transform, 1)
                    from shapely.geometry import box

                    bounds = box(x0, y0 - CHIP * p, x0 + CHIP * p, y0)
                    if noisy:
                        _write_labels(folder / "labels" / f"{name}.geojson", outlines, scene,
                                      bounds)
                    else:
                        polys = []
                        for i in np.unique(ids[sl]):
                            if i == 0:
                                continue
                            ring = plan["buildings"][i - 1]
                            world = Polygon([(scene.origin[0] + px, scene.origin[1] - py)
                                             for px, py in ring])
                            world = world.intersection(bounds)
                            if not world.is_empty and world.area > 0:
                                polys.append(world.wkt)
                        objects[name] = polys
                    written += 1
            summary["scenes"].append({"name": scene.name, "split": split, "pixel_m": p,
                                      "chips": written, "buildings": len(plan["buildings"]),
                                      "building_share": round(float((ids > 0).mean()), 3)})
    (out / "eval" / "objects.json").write_text(json.dumps(objects))
    summary["seconds"] = round(time.perf_counter() - start, 1)
    (out / "proxy.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=120)
    parser.add_argument("--eval", type=int, default=30)
    args = parser.parse_args(argv)
    print(json.dumps(make_proxy(args.out, args.seed, args.train, args.eval), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
