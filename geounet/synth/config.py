"""Synthetic scene settings, records, constants and material colours; the seeded RNG."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geounet.config import DEFAULT_CLASSES, NODATA_CLASS, DType, choices
from geounet.errors import GeoreferenceError, InputError

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

# Reflectance-like colours (R, G, B, NIR) of the materials.
GRASS = (0.12, 0.17, 0.08, 0.46)
DRY = (0.30, 0.27, 0.17, 0.34)
SOIL = (0.37, 0.29, 0.21, 0.37)
GRAVEL = (0.31, 0.31, 0.30, 0.23)
TREE = (0.05, 0.085, 0.04, 0.34)
SHADOW_TINT = (0.36, 0.39, 0.47, 0.30)
ROAD_COLOURS = (
    (0.19, 0.19, 0.20, 0.27),  # asphalt
    (0.42, 0.41, 0.40, 0.38),  # concrete
    (0.38, 0.30, 0.22, 0.34),  # dirt
)
ROAD_P_MAIN = (0.6, 0.3, 0.1)
ROAD_P_SIDE = (0.45, 0.2, 0.35)
ROOF_COLOURS = (
    (0.45, 0.22, 0.15, 0.33),  # terracotta
    (0.30, 0.30, 0.31, 0.27),  # grey
    (0.15, 0.15, 0.16, 0.14),  # dark
    (0.55, 0.55, 0.54, 0.50),  # white
    (0.31, 0.23, 0.17, 0.28),  # brown
    (0.27, 0.32, 0.37, 0.29),  # blue metal
    (0.36, 0.35, 0.30, 0.31),  # beige
)
ROOF_P = (0.22, 0.2, 0.12, 0.1, 0.14, 0.1, 0.12)


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
    road_kind: np.ndarray  # int, index into ROAD_COLOURS
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


def make_rng(config: SynthConfig, *key: int) -> np.random.Generator:
    """The generator of stream ``key`` for the scene's seed."""
    return np.random.default_rng([int(config.seed), *key])
