"""Synthetic georeferenced scenes with ground truth: imagery, vector truth and a class mask.

The scene is planned as vector geometry first (roads, buildings, shadows, paved lots: cheap
for any size), then rendered window by window: each window rasterizes the geometry that
touches it, evaluates texture fields that are defined globally (smooth noise interpolated
from a lattice whose values depend only on the seed and the lattice position), blurs with a
halo and adds sensor noise seeded per 256-pixel block. The pixels therefore do not depend on
the window size, and no seams appear at window borders.

Examples
--------
>>> from geounet.synth import synthesize_scene
>>> result = synthesize_scene("out", size=1024, seed=0)  # doctest: +SKIP
>>> result.scene_path.name, result.summary.n_buildings  # doctest: +SKIP
('scene.tif', 211)
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geounet.config import DEFAULT_CLASSES, NODATA_CLASS, DType, choices
from geounet.errors import GeoreferenceError, InputError, OutputExistsError

logger = logging.getLogger(__name__)

DEFAULT_CRS = "EPSG:32633"
"""WGS 84 / UTM zone 33N."""

DEFAULT_ORIGIN = (500_000.0, 5_000_000.0)
"""(x, y) of the upper-left corner in the scene CRS."""

SCENE_NAME = "scene.tif"
TRUTH_NAME = "truth.gpkg"
MASK_NAME = "truth_mask.tif"
SUMMARY_NAME = "synth.json"
OUTPUT_NAMES = (SCENE_NAME, TRUTH_NAME, MASK_NAME, SUMMARY_NAME)

CLASS_NAMES = DEFAULT_CLASSES
MASK_NODATA = NODATA_CLASS
SCENE_NODATA = 0  # valid pixels are always >= 1
NOISE_BLOCK = 256  # sensor noise is seeded per block of this size on the global grid
_HALO = 4  # context pixels per side for the blur (radius 2)
_BLUR_SIGMA = 0.7
_GAIN = 1.5  # reflectance to display-like brightness (before scaling to the dtype)
_FIXED_GPKG_DATE = "2000-01-01T00:00:00.000Z"

# Reflectance-like colours (R, G, B, NIR) of the materials.
_GRASS = (0.12, 0.17, 0.08, 0.46)
_DRY = (0.30, 0.27, 0.17, 0.34)
_SOIL = (0.37, 0.29, 0.21, 0.37)
_GRAVEL = (0.31, 0.31, 0.30, 0.23)
_TREE = (0.05, 0.085, 0.04, 0.34)
_SHADOW_TINT = (0.36, 0.39, 0.47, 0.30)
_ROAD_COLOURS = (
    (0.19, 0.19, 0.20, 0.27),  # asphalt
    (0.42, 0.41, 0.40, 0.38),  # concrete
    (0.38, 0.30, 0.22, 0.34),  # dirt
)
_ROAD_P_MAIN = (0.6, 0.3, 0.1)
_ROAD_P_SIDE = (0.45, 0.2, 0.35)
_ROOF_COLOURS = (
    (0.45, 0.22, 0.15, 0.33),  # terracotta
    (0.30, 0.30, 0.31, 0.27),  # grey
    (0.15, 0.15, 0.16, 0.14),  # dark
    (0.55, 0.55, 0.54, 0.50),  # white
    (0.31, 0.23, 0.17, 0.28),  # brown
    (0.27, 0.32, 0.37, 0.29),  # blue metal
    (0.36, 0.35, 0.30, 0.31),  # beige
)
_ROOF_P = (0.22, 0.2, 0.12, 0.1, 0.14, 0.1, 0.12)


@dataclass(frozen=True)
class SynthConfig:
    """What to synthesize; validated on creation.

    Parameters
    ----------
    height, width : scene size in pixels.
    seed : random seed; the same config gives the same bytes.
    band_count : 3 (R, G, B) or 4 (R, G, B, NIR).
    dtype : ``uint8`` (0-255) or ``uint16`` (12-bit range, values up to 4095).
    crs : any projected CRS in metres rasterio understands (``EPSG:32633``, WKT, PROJ string).
    pixel_size : metres per pixel.
    nodata_border : width in pixels of a nodata frame around the scene (0: none, and no
        nodata value is declared).
    chunk_size : side of the windows rendered at once (multiple of 256); the output does not
        depend on it, only memory and speed do.
    origin : (x, y) of the upper-left corner in the CRS.
    """

    height: int = 4096
    width: int = 4096
    seed: int = 0
    band_count: int = 3
    dtype: DType = "uint8"
    crs: str = DEFAULT_CRS
    pixel_size: float = 0.5
    nodata_border: int = 0
    chunk_size: int = 1024
    origin: tuple[float, float] = DEFAULT_ORIGIN

    def __post_init__(self) -> None:
        for name in ("height", "width"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or not 64 <= value <= 200_000:
                raise InputError(
                    f"scene {name} {value!r} is outside 64-200000 pixels; "
                    f"give a whole number in that range (e.g. 4096)."
                )
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise InputError(f"seed {self.seed!r} is not a whole number >= 0; use e.g. 0.")
        if self.band_count not in (3, 4):
            raise InputError(
                f"band count {self.band_count!r} is not supported; synthetic scenes have 3 "
                f"(R, G, B) or 4 (R, G, B, NIR) bands; use 3 or 4."
            )
        if self.dtype not in choices(DType):
            raise InputError(
                f"dtype {self.dtype!r} is not supported; use one of {', '.join(choices(DType))}."
            )
        if not (isinstance(self.pixel_size, (int, float)) and 0.05 <= self.pixel_size <= 10):
            raise InputError(
                f"pixel size {self.pixel_size!r} m is outside 0.05-10 m; buildings of 7-30 m "
                f"need to span pixels: use e.g. 0.5."
            )
        border = self.nodata_border
        if not isinstance(border, (int, np.integer)) or border < 0:
            raise InputError(f"nodata border {border!r} is not a whole number >= 0; use e.g. 16.")
        if 2 * border >= min(self.height, self.width):
            raise InputError(
                f"nodata border {border} px leaves no valid pixels in a "
                f"{self.height} x {self.width} scene (needs 2*border < the shorter side); "
                f"use a border below {min(self.height, self.width) // 2}."
            )
        if self.chunk_size < NOISE_BLOCK or self.chunk_size % NOISE_BLOCK:
            raise InputError(
                f"chunk size {self.chunk_size} is not a positive multiple of {NOISE_BLOCK}; "
                f"use e.g. 1024."
            )
        from rasterio.crs import CRS
        from rasterio.errors import CRSError

        try:
            crs = CRS.from_user_input(self.crs)
        except CRSError as exc:
            raise GeoreferenceError(
                f"CRS {self.crs!r} is not understood ({exc}); give e.g. EPSG:32633."
            ) from None
        if not crs.is_projected:
            raise GeoreferenceError(
                f"CRS {self.crs!r} is not projected; synthetic scenes are laid out in metres: "
                f"use a projected CRS such as a UTM zone (e.g. EPSG:32633)."
            )
        units, factor = crs.linear_units_factor
        if abs(factor - 1.0) > 1e-9:
            raise GeoreferenceError(
                f"CRS {self.crs!r} has units of {units}, not metres; pixel sizes and object "
                f"sizes of synthetic scenes are in metres: use a metric projected CRS such as "
                f"a UTM zone (e.g. EPSG:32633)."
            )

    @property
    def nodata(self) -> int | None:
        """Declared nodata value of the scene (only when there is a nodata border)."""
        return SCENE_NODATA if self.nodata_border > 0 else None

    @property
    def max_value(self) -> int:
        """Largest pixel value: 255 for uint8, 4095 (12 bit) for uint16."""
        return 255 if self.dtype == "uint8" else 4095

    @property
    def block_size(self) -> int:
        """Internal GeoTIFF tile side."""
        return 512 if self.chunk_size % 512 == 0 else 256


@dataclass(frozen=True)
class SynthSummary:
    """What a synthetic scene contains (also written as ``synth.json``)."""

    height: int
    width: int
    band_count: int
    dtype: str
    crs: str
    pixel_size: float
    nodata: int | None
    seed: int
    n_buildings: int
    n_roads: int
    road_length_m: float
    class_fractions: tuple[float, float, float]  # background, buildings, roads of valid pixels
    nodata_fraction: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        return asdict(self)


@dataclass(frozen=True)
class SynthResult:
    """Paths of the written files and the summary."""

    out_dir: Path
    scene_path: Path
    truth_path: Path
    mask_path: Path
    summary_path: Path
    summary: SynthSummary

    def describe(self) -> list[str]:
        """Human-readable lines about the written files (for the CLI and examples)."""
        s = self.summary
        fractions = ", ".join(
            f"{name} {fraction:.1%}" for name, fraction in zip(CLASS_NAMES, s.class_fractions)
        )
        return [
            f"scene      {self.scene_path}  ({s.height} x {s.width}, {s.band_count} bands, "
            f"{s.dtype}, {s.crs}, {s.pixel_size} m)",
            f"truth      {self.truth_path}  ({s.n_buildings} buildings, {s.n_roads} roads, "
            f"{s.road_length_m / 1000:.1f} km)",
            f"mask       {self.mask_path}  ({fractions}; nodata {s.nodata_fraction:.1%})",
            f"summary    {self.summary_path}",
        ]


@dataclass(frozen=True)
class ScenePlan:
    """The vector content of a scene, in pixel coordinates (x right, y down)."""

    roads: np.ndarray  # shapely LineStrings (pixel space)
    road_width_m: np.ndarray  # float64 per road
    road_kind: np.ndarray  # int, index into _ROAD_COLOURS
    road_polygons: np.ndarray  # roads buffered by width / 2 (pixel space)
    road_colour: np.ndarray  # (n, 4) float32
    buildings: np.ndarray  # shapely Polygons (pixel space)
    building_colour: np.ndarray  # (n, 4) float32
    building_centre: np.ndarray  # (n, 2) pixel x, y
    building_normal: np.ndarray  # (n, 2) unit normal of the ridge
    building_gable: np.ndarray  # (n,) brightness step across the ridge (0 for flat roofs)
    shadows: np.ndarray  # shapely Polygons (pixel space)
    lots: np.ndarray  # paved lots (distractors, class background)
    lot_colour: np.ndarray  # (n, 4) float32


def synthesize_scene(
    out_dir: str | Path,
    size: int = 4096,
    seed: int = 0,
    *,
    height: int | None = None,
    width: int | None = None,
    band_count: int = 3,
    dtype: DType = "uint8",
    crs: str = DEFAULT_CRS,
    pixel_size: float = 0.5,
    nodata_border: int = 0,
    chunk_size: int = 1024,
    origin: tuple[float, float] = DEFAULT_ORIGIN,
    overwrite: bool = False,
) -> SynthResult:
    """Write a synthetic scene with ground truth into ``out_dir``.

    Writes ``scene.tif`` (tiled DEFLATE GeoTIFF), ``truth.gpkg`` (layers ``buildings``:
    polygons, ``roads``: centerlines with a ``width`` attribute in metres), ``truth_mask.tif``
    (uint8: 0 background, 1 buildings, 2 roads, 255 nodata) and ``synth.json`` (summary).
    Each file appears under its final name only when complete.

    Parameters
    ----------
    out_dir : directory to write into (created if missing).
    size : side of a square scene in pixels; ``height`` / ``width`` override it.
    seed : random seed; the same arguments give byte-identical files.
    band_count : 3 (RGB) or 4 (RGB + NIR).
    dtype : ``uint8`` or ``uint16`` (12-bit values, up to 4095).
    crs : projected CRS of the scene, in metres.
    pixel_size : metres per pixel.
    nodata_border : width of a nodata frame in pixels; when > 0 the scene declares nodata 0.
    chunk_size : rendering window side (multiple of 256); affects memory and speed only.
    origin : (x, y) of the upper-left corner in the CRS.
    overwrite : replace existing output files in ``out_dir``.

    Returns
    -------
    SynthResult

    Raises
    ------
    InputError, GeoreferenceError : invalid arguments.
    OutputExistsError : an output file exists and ``overwrite`` is False.

    Examples
    --------
    >>> r = synthesize_scene("demo", size=512, seed=1, band_count=4)  # doctest: +SKIP
    >>> r.summary.class_fractions  # doctest: +SKIP
    (0.68, 0.22, 0.10)
    """
    config = SynthConfig(
        height=size if height is None else height,
        width=size if width is None else width,
        seed=seed,
        band_count=band_count,
        dtype=dtype,
        crs=crs,
        pixel_size=float(pixel_size),
        nodata_border=nodata_border,
        chunk_size=chunk_size,
        origin=(float(origin[0]), float(origin[1])),
    )
    return write_synthetic_scene(out_dir, config, overwrite=overwrite)


def write_synthetic_scene(
    out_dir: str | Path, config: SynthConfig, *, overwrite: bool = False
) -> SynthResult:
    """Write the scene described by ``config``; see :func:`synthesize_scene`."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(
            f"output directory {str(out_dir)!r} is a file; give a directory path."
        )
    existing = [name for name in OUTPUT_NAMES if (out_dir / name).exists()]
    not_files = [name for name in existing if not (out_dir / name).is_file()]
    if not_files:
        raise OutputExistsError(
            f"{str(out_dir / not_files[0])!r} is a directory, not a file, so it cannot be "
            f"replaced by synth's {not_files[0]}; remove it or choose another directory."
        )
    if existing and not overwrite:
        raise OutputExistsError(
            f"{str(out_dir)!r} already holds {', '.join(existing)}; "
            f"use --overwrite (overwrite=True) to replace them, or choose another directory."
        )
    created = _make_directory(out_dir)
    tmp = None
    try:
        plan = plan_scene(config)
        tmp = Path(tempfile.mkdtemp(prefix=".synth-", dir=out_dir))
        counts = _render(config, plan, tmp / SCENE_NAME, tmp / MASK_NAME)
        road_length = _write_truth(config, plan, tmp / TRUTH_NAME)
        valid = int(counts[:3].sum())
        summary = SynthSummary(
            height=config.height,
            width=config.width,
            band_count=config.band_count,
            dtype=config.dtype,
            crs=config.crs,
            pixel_size=config.pixel_size,
            nodata=config.nodata,
            seed=int(config.seed),
            n_buildings=len(plan.buildings),
            n_roads=len(plan.roads),
            road_length_m=round(road_length, 1),
            class_fractions=(
                round(float(counts[0]) / max(valid, 1), 4),
                round(float(counts[1]) / max(valid, 1), 4),
                round(float(counts[2]) / max(valid, 1), 4),
            ),
            nodata_fraction=round(float(counts[3]) / (config.height * config.width), 4),
        )
        (tmp / SUMMARY_NAME).write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
        for name in OUTPUT_NAMES:
            os.replace(tmp / name, out_dir / name)
    except BaseException:
        # nothing is left behind: no temporary files, no directory this call created
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        _remove_created(created)
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    logger.info(
        "synthesized %d x %d scene with %d buildings and %d roads in %s",
        config.height,
        config.width,
        summary.n_buildings,
        summary.n_roads,
        out_dir,
    )
    return SynthResult(
        out_dir=out_dir,
        scene_path=out_dir / SCENE_NAME,
        truth_path=out_dir / TRUTH_NAME,
        mask_path=out_dir / MASK_NAME,
        summary_path=out_dir / SUMMARY_NAME,
        summary=summary,
    )


def _make_directory(out_dir: Path) -> list[Path]:
    """Create ``out_dir`` and missing parents; return the directories created (deepest last)."""
    created = []
    for directory in [*reversed(out_dir.parents), out_dir]:
        if directory.is_dir():
            continue
        try:
            directory.mkdir()
        except OSError as exc:
            _remove_created(created)
            raise InputError(
                f"output directory {str(out_dir)!r} cannot be created ({exc.strerror or exc}); "
                f"choose a directory you can write to."
            ) from exc
        created.append(directory)
    return created


def _remove_created(created: list[Path]) -> None:
    """Remove the directories :func:`_make_directory` created, if they are still empty."""
    for directory in reversed(created):
        try:
            directory.rmdir()
        except OSError:
            return


# ----------------------------------------------------------------------------- vector plan


def _rng(config: SynthConfig, *key: int) -> np.random.Generator:
    return np.random.default_rng([int(config.seed), *key])


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
    import shapely

    p = config.pixel_size
    height_m, width_m = config.height * p, config.width * p
    margin = 80.0
    lines: list = []
    widths: list[float] = []
    kinds: list[int] = []

    def main_kind() -> int:
        return int(rng.choice(3, p=_ROAD_P_MAIN))

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
    main_lines = list(lines)
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
        lines.append(shapely.linestrings(xy))
        widths.append(float(rng.uniform(4, 7)))
        kinds.append(int(rng.choice(3, p=_ROAD_P_SIDE)))
    return lines, widths, kinds


def _smooth_at(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray, spacing: float
) -> np.ndarray:
    """A smooth random field (about unit std) evaluated at points (metres)."""
    from scipy.ndimage import map_coordinates

    extent = max(float(np.max(x, initial=0.0)), float(np.max(y, initial=0.0))) + 4 * spacing
    n = int(extent / spacing) + 4
    grid = rng.standard_normal((n, n))
    return map_coordinates(grid, [y / spacing + 1, x / spacing + 1], order=3, mode="nearest") / 0.7


def _plan_buildings(
    config: SynthConfig, rng: np.random.Generator, road_polygons_m: list
) -> dict[str, Any]:
    import shapely

    p = config.pixel_size
    height_m, width_m = config.height * p, config.width * p
    cell = 28.0
    gap = 2.5
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
    roof = rng.choice(len(_ROOF_COLOURS), size=n, p=_ROOF_P)
    roof_gain = rng.uniform(0.85, 1.15, n)
    roof_tint = rng.uniform(0.95, 1.05, (n, 4))
    gable = np.where(~is_l & (rng.random(n) < 0.6), rng.uniform(0.07, 0.18, n), 0.0)
    lot_kind = rng.choice(2, size=n, p=(0.6, 0.4))
    lot_gain = rng.uniform(0.9, 1.1, n)
    jitter = rng.uniform(-1, 1, (n, 2))
    sun_azimuth = rng.uniform(np.radians(100), np.radians(170))
    sun_factor = rng.uniform(0.5, 0.8)

    half_a = np.where(lot, lot_length, length) / 2
    half_b = np.where(lot, lot_depth, depth) / 2
    radius = np.hypot(half_a, half_b)
    scale = np.minimum(1.0, (cell / 2 - gap / 2) / radius)
    half_a, half_b, radius = half_a * scale, half_b * scale, radius * scale
    room = np.maximum(0.0, cell / 2 - gap / 2 - radius)
    centre_x = cx + jitter[:, 0] * room
    centre_y = cy + jitter[:, 1] * room

    # local vertices (6 per footprint; rectangles repeat corners harmlessly)
    a, b = half_a, half_b
    ia = -a + 2 * a * notch_a
    ib = -b + 2 * b * notch_b
    rect = np.stack(
        [np.stack(v, -1) for v in ((-a, -b), (a, -b), (a, b), (a, b), (-a, b), (-a, b))], 1
    )
    ell = np.stack(
        [np.stack(v, -1) for v in ((-a, -b), (a, -b), (a, ib), (ia, ib), (ia, b), (-a, b))], 1
    )
    local = np.where((is_l & ~lot)[:, None, None], ell, rect)
    local = local * np.stack([flip_x, flip_y], -1)[:, None, :]
    cos, sin = np.cos(angle), np.sin(angle)
    world_x = centre_x[:, None] + local[..., 0] * cos[:, None] - local[..., 1] * sin[:, None]
    world_y = centre_y[:, None] + local[..., 0] * sin[:, None] + local[..., 1] * cos[:, None]
    ring = np.stack([world_x, world_y], -1)
    footprints = shapely.make_valid(shapely.polygons(ring))
    footprints = shapely.normalize(shapely.simplify(footprints, 0.0))

    inside = (
        (centre_x > -cell)
        & (centre_x < width_m + cell)
        & (centre_y > -cell)
        & (centre_y < height_m + cell)
    )
    tree = shapely.STRtree(road_polygons_m)
    setback = np.where(lot, 2.0, 3.0)
    hits = tree.query(shapely.buffer(footprints, setback, quad_segs=2), predicate="intersects")
    clear = np.ones(n, dtype=bool)
    clear[hits[0]] = False
    chosen = keep & inside & clear
    building = chosen & ~lot
    paved = chosen & lot

    # shadows: the footprint swept away from the sun, as the union of the translated
    # footprint and one parallelogram per edge (rasterizing them all with one value burns
    # their union, so no polygon union is needed)
    shadow_len = height * sun_factor
    sdx = -math.sin(sun_azimuth) * shadow_len
    sdy = math.cos(sun_azimuth) * shadow_len  # y grows downwards (south)
    offset_xy = np.stack([sdx, sdy], -1)[:, None, :]
    moved = ring + offset_xy
    nxt = np.roll(ring, -1, axis=1)
    quads = np.stack([ring, nxt, nxt + offset_xy, moved], 2)  # (n, 6 edges, 4, 2)
    shadow_parts = np.concatenate(
        [shapely.polygons(moved)[:, None], shapely.polygons(quads)], 1
    )  # (n, 7)
    colour = np.asarray(_ROOF_COLOURS, dtype=np.float64)[roof] * roof_gain[:, None] * roof_tint
    lot_colour = np.asarray(_ROAD_COLOURS[:2], dtype=np.float64)[lot_kind] * lot_gain[:, None]
    normal = np.stack([-sin, cos], -1)  # across the long axis (the ridge runs along it)
    # the side facing the sun is brighter: sign the gable step by the sun direction
    facing = np.sign(normal[:, 0] * math.sin(sun_azimuth) - normal[:, 1] * math.cos(sun_azimuth))
    facing[facing == 0] = 1.0
    return {
        "buildings": footprints[building],
        "building_colour": colour[building].astype(np.float32),
        "building_centre": np.stack([centre_x, centre_y], -1)[building],
        "building_normal": (normal * facing[:, None])[building],
        "building_gable": gable[building].astype(np.float32),
        "shadows": shadow_parts[building].ravel(),
        "lots": footprints[paved],
        "lot_colour": lot_colour[paved].astype(np.float32),
    }


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

    rng = _rng(config, 1)
    lines_m, widths, kinds = _plan_roads(config, rng)
    lines_arr, widths_arr, kinds_arr = _connected_roads(
        config, np.asarray(lines_m, dtype=object), np.asarray(widths), np.asarray(kinds)
    )
    road_polygons_m = shapely.buffer(lines_arr, widths_arr / 2, quad_segs=8)
    parts = _plan_buildings(config, _rng(config, 2), list(road_polygons_m))
    road_rng = _rng(config, 3)
    road_colour = np.asarray(_ROAD_COLOURS, dtype=np.float64)[kinds_arr]
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


# ----------------------------------------------------------------------------- raster


_LATTICE_BLOCK = 64


def _lattice(config: SynthConfig, key: int, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """Standard normal lattice values for nodes [r0, r1) x [c0, c1); depends only on position."""
    block = _LATTICE_BLOCK
    out = np.empty((r1 - r0, c1 - c0), dtype=np.float32)
    for bi in range(r0 // block, (r1 - 1) // block + 1):
        for bj in range(c0 // block, (c1 - 1) // block + 1):
            values = _rng(config, 10, key, bi, bj).standard_normal((block, block), np.float32)
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
    return 1.0 / (1.0 + np.exp(-x))


def _rasterize(
    geoms: np.ndarray, values: np.ndarray, y0: int, x0: int, shape: tuple[int, int], dtype: str
) -> np.ndarray:
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


def _render_window(
    config: SynthConfig,
    plan: ScenePlan,
    indexes: dict[str, _Index],
    y0: int,
    x0: int,
    height: int,
    width: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (band, height, width) in output dtype and the class mask of one window."""
    from scipy.ndimage import gaussian_filter1d

    h = _HALO
    hy0, hx0, hh, hw = y0 - h, x0 - h, height + 2 * h, width + 2 * h
    rows = np.arange(hy0, hy0 + hh)
    cols = np.arange(hx0, hx0 + hw)
    shape = (hh, hw)
    px = 1.0 / config.pixel_size  # pixels per metre

    def layer(name: str, values: np.ndarray | None = None, dtype: str = "int32") -> tuple:
        index = indexes[name]
        found = index.query(hy0, hx0, hh, hw)
        vals = (found + 1) if values is None else values[found]
        return _rasterize(index.geoms[found], vals, hy0, hx0, shape, dtype), found

    building_id, _ = layer("buildings")
    road_id, _ = layer("roads")
    lot_id, _ = layer("lots")
    shadow, _ = layer("shadows", np.ones(len(plan.shadows), dtype=np.uint8), "uint8")

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

    is_building = building_id > 0
    is_road = road_id > 0
    is_lot = (lot_id > 0) & ~is_road & ~is_building
    in_shadow = (shadow > 0) & ~is_building
    # gabled roofs: one side of the ridge lit, the other darker
    roof_gain = np.ones(shape, dtype=np.float32)
    by, bx = np.nonzero(is_building)
    if by.size:
        ids = building_id[by, bx] - 1
        dx = (bx + hx0 + 0.5) - plan.building_centre[ids, 0]
        dy = (by + hy0 + 0.5) - plan.building_centre[ids, 1]
        side = np.sign(dx * plan.building_normal[ids, 0] + dy * plan.building_normal[ids, 1])
        roof_gain[by, bx] = 1.0 + side * plan.building_gable[ids]
    road_idx = road_id[is_road] - 1
    lot_idx = lot_id[is_lot] - 1
    roof_idx = building_id[is_building] - 1

    image = np.empty((config.band_count, hh, hw), dtype=np.float32)
    for band in range(config.band_count):
        value = (
            w_grass * _GRASS[band]
            + w_soil * _SOIL[band]
            + w_dry * _DRY[band]
            + w_gravel * _GRAVEL[band]
        ).astype(np.float32)
        value += tree * (np.float32(_TREE[band]) - value)
        value *= ground_gain
        value[is_road] = plan.road_colour[road_idx, band] * smooth_gain[is_road]
        value[is_lot] = plan.lot_colour[lot_idx, band] * smooth_gain[is_lot]
        value[in_shadow] *= np.float32(_SHADOW_TINT[band])
        value[is_building] = (
            plan.building_colour[roof_idx, band] * smooth_gain[is_building] * roof_gain[is_building]
        )
        value = gaussian_filter1d(value, _BLUR_SIGMA, axis=0, truncate=3.0)
        image[band] = gaussian_filter1d(value, _BLUR_SIGMA, axis=1, truncate=3.0)

    image = image[:, h:-h, h:-h]
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[is_building[h:-h, h:-h]] = 1
    mask[is_road[h:-h, h:-h]] = 2

    # sensor noise: seeded per block of the global NOISE_BLOCK grid, so windows agree
    noise_sigma = np.float32(0.008)
    for by0 in range(y0, y0 + height, NOISE_BLOCK):
        for bx0 in range(x0, x0 + width, NOISE_BLOCK):
            rng = _rng(config, 20, by0 // NOISE_BLOCK, bx0 // NOISE_BLOCK)
            noise = rng.standard_normal((4, NOISE_BLOCK, NOISE_BLOCK), np.float32)
            bh = min(NOISE_BLOCK, y0 + height - by0)
            bw = min(NOISE_BLOCK, x0 + width - bx0)
            ys, xs = by0 - y0, bx0 - x0
            image[:, ys : ys + bh, xs : xs + bw] += (
                noise[: config.band_count, :bh, :bw] * noise_sigma
            )
    top = config.max_value
    image *= np.float32(top * _GAIN)
    np.rint(image, out=image)
    np.clip(image, 1, top, out=image)
    pixels = image.astype(config.dtype)

    border = config.nodata_border
    if border:
        valid = np.zeros((height, width), dtype=bool)
        ry0, ry1 = max(border - y0, 0), min(config.height - border - y0, height)
        rx0, rx1 = max(border - x0, 0), min(config.width - border - x0, width)
        if ry1 > ry0 and rx1 > rx0:
            valid[ry0:ry1, rx0:rx1] = True
        pixels[:, ~valid] = SCENE_NODATA
        mask[~valid] = MASK_NODATA
    return pixels, mask


def render_window(
    config: SynthConfig, plan: ScenePlan, y0: int, x0: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Render one window of the scene: pixels (band, height, width) and the class mask.

    The result depends only on the window's position, never on how the scene is cut into
    windows.
    """
    indexes = _indexes(plan)
    return _render_window(config, plan, indexes, y0, x0, height, width)


def _indexes(plan: ScenePlan) -> dict[str, _Index]:
    return {
        "buildings": _Index(plan.buildings),
        "roads": _Index(plan.road_polygons),
        "lots": _Index(plan.lots),
        "shadows": _Index(plan.shadows),
    }


def _transform(config: SynthConfig) -> Any:
    from rasterio.transform import from_origin

    return from_origin(config.origin[0], config.origin[1], config.pixel_size, config.pixel_size)


def _render(config: SynthConfig, plan: ScenePlan, scene_path: Path, mask_path: Path) -> np.ndarray:
    """Write scene and mask window by window; return pixel counts per class + nodata."""
    import rasterio
    from rasterio.windows import Window

    common = {
        "driver": "GTiff",
        "height": config.height,
        "width": config.width,
        "crs": config.crs,
        "transform": _transform(config),
        "tiled": True,
        "blockxsize": config.block_size,
        "blockysize": config.block_size,
        "compress": "deflate",
    }
    scene_profile = dict(
        common, count=config.band_count, dtype=config.dtype, predictor=2, nodata=config.nodata
    )
    if config.band_count == 4:  # NIR, not GDAL's default alpha for a 4th band (a mask)
        scene_profile.update(photometric="RGB", alpha="UNSPECIFIED")
    mask_profile = dict(common, count=1, dtype="uint8", nodata=MASK_NODATA)
    indexes = _indexes(plan)
    counts = np.zeros(256, dtype=np.int64)
    step = config.chunk_size
    names = ("red", "green", "blue", "nir")
    with rasterio.Env(GDAL_CACHEMAX=256 * 1024 * 1024), rasterio.open(
        scene_path, "w", **scene_profile
    ) as scene, rasterio.open(mask_path, "w", **mask_profile) as mask_file:
        for band in range(config.band_count):
            scene.set_band_description(band + 1, names[band])
        mask_file.set_band_description(1, "class")
        mask_file.update_tags(1, classes=",".join(CLASS_NAMES), nodata_class=str(MASK_NODATA))
        for y0 in range(0, config.height, step):
            for x0 in range(0, config.width, step):
                height = min(step, config.height - y0)
                width = min(step, config.width - x0)
                pixels, mask = _render_window(config, plan, indexes, y0, x0, height, width)
                window = Window(x0, y0, width, height)
                scene.write(pixels, window=window)
                mask_file.write(mask, 1, window=window)
                counts += np.bincount(mask.ravel(), minlength=256)
                logger.debug("rendered window y=%d x=%d", y0, x0)
    return np.array([counts[0], counts[1], counts[2], counts[MASK_NODATA]])


def _write_truth(config: SynthConfig, plan: ScenePlan, path: Path) -> float:
    """Write the vector truth in the scene CRS; return the total road length in metres."""
    import geopandas as gpd
    import pyogrio
    import shapely

    transform = _transform(config)

    def to_world(geoms: np.ndarray) -> np.ndarray:
        def apply(coords: np.ndarray) -> np.ndarray:
            x = transform.c + coords[:, 0] * transform.a
            y = transform.f + coords[:, 1] * transform.e
            return np.column_stack([x, y])

        return shapely.transform(np.asarray(geoms, dtype=object), apply)

    scene_box = shapely.box(0, 0, config.width, config.height)
    buildings = shapely.intersection(plan.buildings, scene_box)
    keep_b = ~shapely.is_empty(buildings)
    roads = plan.roads  # already clipped to the scene and connected
    keep_r = ~shapely.is_empty(roads)
    kind_names = np.array(["asphalt", "concrete", "dirt"])
    building_ids = np.arange(1, len(plan.buildings) + 1)[keep_b]
    gdf_b = gpd.GeoDataFrame(
        {"id": building_ids.astype(np.int64), "class": "buildings"},
        geometry=to_world(buildings[keep_b]),
        crs=config.crs,
    )
    gdf_r = gpd.GeoDataFrame(
        {
            "id": np.arange(1, len(plan.roads) + 1)[keep_r].astype(np.int64),
            "class": "roads",
            "width": np.round(plan.road_width_m[keep_r], 3),
            "surface": kind_names[plan.road_kind[keep_r]],
        },
        geometry=to_world(roads[keep_r]),
        crs=config.crs,
    )
    # a fixed timestamp in gpkg_contents keeps the file byte-identical for a seed
    previous = {"OGR_CURRENT_DATE": pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")}
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": _FIXED_GPKG_DATE})
    try:
        gdf_b.to_file(path, layer="buildings", driver="GPKG", engine="pyogrio")
        gdf_r.to_file(path, layer="roads", driver="GPKG", engine="pyogrio")
    finally:
        pyogrio.set_gdal_config_options(previous)
    return float(shapely.length(roads[keep_r]).sum() * config.pixel_size)
