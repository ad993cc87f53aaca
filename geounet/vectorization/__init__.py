"""Masks to seam-free polygons and road centerlines, chunk by chunk, streamed to vector files.

The public entry point is :func:`vectorize`; see ``docs/vectorize.md`` for the seam-merge
strategy, the bounded-memory rule and the per-class defaults.
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from geounet.config import NODATA_CLASS
from geounet.errors import InputError, OutputExistsError, UnsupportedFormatError
from geounet.georef import Frame
from geounet.vectorization._centerlines import LineMerger, trace_centerlines
from geounet.vectorization._polygons import SeamMerger
from geounet.vectorization._regularize import regularize_polygon
from geounet.vectorization._source import PredictionReader
from geounet.vectorization._writer import (
    SUFFIXES,
    FeatureWriter,
    LayerSpec,
    VectorFormat,
    layer_paths,
)

__all__ = [
    "CENTERLINE_HALO",
    "CENTERLINE_LAYER",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_CUT_SIZE",
    "DEFAULT_MIN_AREA",
    "DEFAULT_SIMPLIFY",
    "DEFAULT_SPUR_LENGTH",
    "VectorFormat",
    "VectorizeResult",
    "regularize_polygon",
    "vectorize",
]

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 2048
"""Window side for GeoTIFF input (a Zarr store is read in its own chunks)."""
DEFAULT_CUT_SIZE = 8192
"""Side of the scene-anchored cut grid: no object extends across its lines (bounded memory)."""
DEFAULT_MIN_AREA: dict[str, float] = {"buildings": 4.0, "roads": 20.0}
"""Square metres; smaller objects are dropped (16 and 80 pixels at 0.5 m)."""
DEFAULT_SIMPLIFY: dict[str, float] = {"buildings": 0.5, "roads": 1.0}
"""Topology-preserving simplification tolerance in metres (1 and 2 pixels at 0.5 m)."""
DEFAULT_SPUR_LENGTH = 10.0
"""Metres; centerline spurs (free end to junction) shorter than this are dropped."""
CENTERLINE_HALO = 64
"""Pixels of road mask around each chunk that the skeleton sees (roads up to ~100 px wide)."""
CENTERLINE_LAYER = "road_centerlines"
ROAD_CLASS = "roads"
BUILDING_CLASS = "buildings"
BATCH = 4096


@dataclass(frozen=True)
class VectorizeResult:
    """What :func:`vectorize` wrote.

    Attributes
    ----------
    paths : layer name -> file (the same GeoPackage for every layer, or one file per layer).
    counts : layer name -> number of features written.
    seconds : wall time.
    pixels : scene pixels read.
    chunks : windows processed.
    max_held : the most objects waiting at seams at any time (bounded-memory check).
    """

    paths: dict[str, Path]
    counts: dict[str, int]
    seconds: float
    pixels: int
    chunks: int
    max_held: int = 0
    layers: tuple[str, ...] = field(default=())

    @property
    def megapixels_per_second(self) -> float:
        return self.pixels / 1e6 / max(self.seconds, 1e-9)

    @property
    def features_per_second(self) -> float:
        return sum(self.counts.values()) / max(self.seconds, 1e-9)


def _per_class(
    value: float | Mapping[str, float] | None,
    defaults: Mapping[str, float],
    classes: Sequence[str],
    name: str,
) -> dict[str, float]:
    if value is None:
        return {c: float(defaults.get(c, 0.0)) for c in classes}
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(classes))
        if unknown:
            raise InputError(
                f"{name} names classes {unknown} that are not vectorized; use some of "
                f"{list(classes)}."
            )
        out = {c: float(defaults.get(c, 0.0)) for c in classes}
        out.update({c: float(v) for c, v in value.items()})
    else:
        out = {c: float(value) for c in classes}
    bad = {c: v for c, v in out.items() if not math.isfinite(v) or v < 0}
    if bad:
        raise InputError(
            f"{name} {bad} is negative or not finite; give 0 (off) or a positive number."
        )
    return out


def _breaks(start: int, stop: int, step: int) -> list[int]:
    inner = range((start // step + 1) * step, stop, step)
    return [start, *inner, stop]


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


class _PolygonLayer:
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
    ) -> None:
        self.name, self.layer, self.writer, self.frame = name, layer, writer, frame
        self.pixel_m = pixel_m  # ground size of a pixel (m)
        self.fill_holes = fill_holes
        self.min_area = min_area  # m^2
        self.tolerance = tolerance  # pixels
        self.regularize = regularize
        self.has_probabilities = has_probabilities
        self.geoms: list[Any] = []
        self.pixels: list[int] = []
        self.psums: list[float] = []

    def add(self, polygon: Any, pixels: int, psum: float) -> None:
        self.geoms.append(polygon)
        self.pixels.append(pixels)
        self.psums.append(psum)
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
        self.geoms, self.pixels, self.psums = [], [], []
        geoms, index = shapely.get_parts(geoms, return_index=True)
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
        else:
            mean_p = np.full(len(geoms), np.nan)
        self.writer.write(
            self.layer,
            geoms,
            {
                "class": np.full(len(geoms), self.name, dtype=object),
                "area_m2": area,
                "perimeter_m": perimeter,
                "mean_probability": mean_p,
            },
        )


def vectorize(
    pred: str | Path,
    out: str | Path,
    *,
    classes: Sequence[str] | None = None,
    chunk_size: int | None = None,
    min_area: float | Mapping[str, float] | None = None,
    simplify: float | Mapping[str, float] | None = None,
    fill_holes: bool = False,
    regularize: bool = False,
    centerlines: bool = True,
    spur_length: float | None = None,
    layer_names: Mapping[str, str] | None = None,
    overwrite: bool = False,
    cut_size: int | None = DEFAULT_CUT_SIZE,
    progress: Callable[[int, int], None] | None = None,
) -> VectorizeResult:
    """Turn a prediction raster into seam-free polygons per class and road centerlines.

    Parameters
    ----------
    pred : geounet prediction store (``.zarr``: ``mask`` + ``probabilities``) or GeoTIFF
        (single-band class mask, or the geounet COG whose band 1 is ``class``).
    out : output file; the suffix picks the format: ``.gpkg`` (one layer per class in one
        file), ``.parquet`` (GeoParquet) or ``.fgb`` (FlatGeobuf), the last two written as one
        file per layer, ``<stem>_<layer><suffix>``.
    classes : class names to vectorize; default every class but ``background``.
    chunk_size : window side in pixels; default the store's chunking, else 2048.
    min_area : square metres below which objects are dropped; one number for every class or
        a mapping per class. Default :data:`DEFAULT_MIN_AREA`.
    simplify : topology-preserving simplification tolerance in metres; 0 keeps pixel edges.
        Default :data:`DEFAULT_SIMPLIFY`.
    fill_holes : drop interior rings.
    regularize : make building footprints rectilinear (walls at right angles).
    centerlines : also write the ``road_centerlines`` layer (when ``roads`` is vectorized).
    spur_length : metres; shorter centerline spurs are dropped. Default 10.
    layer_names : class name (or ``road_centerlines``) -> layer name.
    overwrite : replace existing outputs instead of raising :class:`OutputExistsError`.
    cut_size : side in pixels of the scene-anchored grid no object crosses (objects are cut
        at its lines, deterministically), bounding memory for scene-wide road networks;
        None never cuts.
    progress : called as ``progress(done, total)`` after each window.

    Returns
    -------
    VectorizeResult with per-layer paths and counts.

    Examples
    --------
    >>> result = vectorize("pred.zarr", "pred.gpkg", regularize=True)  # doctest: +SKIP
    >>> result.counts  # doctest: +SKIP
    {'buildings': 812, 'roads': 14, 'road_centerlines': 97}
    """
    started = time.perf_counter()
    out = Path(out)
    fmt = SUFFIXES.get(out.suffix.lower())
    if fmt is None:
        raise UnsupportedFormatError(
            f"output {str(out)!r} has suffix {out.suffix!r}; use .gpkg (GeoPackage), .parquet "
            "(GeoParquet) or .fgb (FlatGeobuf)."
        )
    if chunk_size is not None and chunk_size < 2:
        raise InputError(
            f"chunk size {chunk_size} is too small; give 2 or more pixels (e.g. 2048)."
        )
    if cut_size is not None and cut_size < 2:
        raise InputError(f"cut size {cut_size} is too small; give 2 or more pixels or None.")
    if spur_length is not None and spur_length < 0:
        raise InputError(f"spur length {spur_length} is negative; give 0 (keep all) or metres.")

    with PredictionReader(pred) as reader:
        known = [c for c in reader.classes if c != "background"]
        wanted = list(known) if classes is None else list(classes)
        unknown = [c for c in wanted if c not in reader.classes or c == "background"]
        if unknown or not wanted:
            raise InputError(
                f"classes {unknown or wanted} cannot be vectorized from {str(pred)!r}; its "
                f"classes are {list(reader.classes)}; choose from {known}."
            )
        names = dict(layer_names or {})
        bad = sorted(set(names) - set(wanted) - {CENTERLINE_LAYER})
        if bad:
            raise InputError(
                f"layer_names has keys {bad}; keys are vectorized classes {wanted} or "
                f"{CENTERLINE_LAYER!r}."
            )
        layers = {c: names.get(c, c) for c in wanted}
        lines_wanted = centerlines and ROAD_CLASS in wanted
        if lines_wanted:
            layers[CENTERLINE_LAYER] = names.get(CENTERLINE_LAYER, CENTERLINE_LAYER)
        odd = [n for n in layers.values() if not n or "/" in n or "\\" in n]
        if odd:
            raise InputError(
                f"layer names {odd} are empty or hold a path separator; layer names also name "
                "files (.parquet/.fgb: <stem>_<layer><suffix>), so use plain names like 'bldg'."
            )
        if len(set(layers.values())) != len(layers):
            raise InputError(f"layer names {list(layers.values())} repeat; give distinct names.")
        targets = layer_paths(out, fmt, list(layers.values()))
        existing = sorted({str(p) for p in targets.values() if p.exists()})
        if existing and not overwrite:
            raise OutputExistsError(
                f"{existing} already exist; pass overwrite=True (--overwrite) or choose "
                "another --out."
            )
        out.parent.mkdir(parents=True, exist_ok=True)

        min_areas = _per_class(min_area, DEFAULT_MIN_AREA, wanted, "min_area")
        tolerances = _per_class(simplify, DEFAULT_SIMPLIFY, wanted, "simplify")
        spur_m = DEFAULT_SPUR_LENGTH if spur_length is None else float(spur_length)
        pixel_m = reader.pixel_size_m()
        if chunk_size is None:
            is_store = Path(reader.path).is_dir()
            chunk_size = int(min(reader.chunk_shape)) if is_store else DEFAULT_CHUNK_SIZE
        frame = Frame(reader.crs_wkt, reader.transform)

        specs = []
        import pyarrow as pa

        for cls in wanted:
            specs.append(
                LayerSpec(
                    layers[cls],
                    "Polygon",
                    {"class": pa.string(), "area_m2": pa.float64(), "perimeter_m": pa.float64(),
                     "mean_probability": pa.float64()},
                )
            )
        if lines_wanted:
            specs.append(
                LayerSpec(
                    layers[CENTERLINE_LAYER],
                    "LineString",
                    {"class": pa.string(), "length_m": pa.float64()},
                )
            )

        with FeatureWriter(out, fmt, specs, reader.crs_wkt) as writer:
            buffers = {
                reader.classes.index(cls): _PolygonLayer(
                    name=cls,
                    layer=layers[cls],
                    writer=writer,
                    frame=frame,
                    pixel_m=pixel_m,
                    fill_holes=fill_holes,
                    min_area=min_areas[cls],
                    tolerance=tolerances[cls] / pixel_m,
                    regularize=regularize and cls == BUILDING_CLASS,
                    has_probabilities=reader.has_probabilities,
                )
                for cls in wanted
            }
            # Buildings (every class but roads) are never cut: they are small, so the objects
            # waiting at the chunk frontier stay few. Only the scene-spanning road network is
            # cut on the scene-anchored cut grid, which bounds the geometry held for it.
            road_value = reader.classes.index(ROAD_CLASS) if ROAD_CLASS in wanted else None
            passes = [
                ({v: b for v, b in buffers.items() if v != road_value}, None, False),
                ({v: b for v, b in buffers.items() if v == road_value}, cut_size, lines_wanted),
            ]
            passes = [(bufs, cut, lines) for bufs, cut, lines in passes if bufs]
            orders = [
                _WindowOrder(reader.height, reader.width, chunk_size, cut) for _, cut, _ in passes
            ]
            total = sum(order.total for order in orders)
            stats = {"chunks": 0, "max_held": 0}
            for (bufs, _, lines), order in zip(passes, orders):
                done_before = stats["chunks"]
                part = _run_windows(
                    reader,
                    bufs,
                    order=order,
                    road_value=road_value if lines else None,
                    line_writer=(
                        lambda coords: _write_lines(
                            coords, writer, layers[CENTERLINE_LAYER], frame,
                            tolerances.get(ROAD_CLASS, 0.0) / pixel_m,
                        )
                    ),
                    spur_px=spur_m / pixel_m,
                    progress=(
                        None
                        if progress is None
                        else lambda done, _t, base=done_before: progress(base + done, total)
                    ),
                )
                stats["chunks"] += part["chunks"]
                stats["max_held"] = max(stats["max_held"], part["max_held"])
            for buffer in buffers.values():
                buffer.flush()
            written = writer.commit()
            counts = {layers_name: writer.counts[layers_name] for layers_name in writer.counts}
    seconds = time.perf_counter() - started
    logger.info("vectorized %s in %.1f s: %s", pred, seconds, counts)
    return VectorizeResult(
        paths=written,
        counts=counts,
        seconds=seconds,
        pixels=reader.height * reader.width,
        chunks=_WindowOrder(reader.height, reader.width, chunk_size, None).total,
        max_held=stats["max_held"],
        layers=tuple(layers.values()),
    )


def _write_lines(
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


class _WindowOrder:
    """The windows of one pass: the chunk grid cut by the cut grid, cut cells in row-major
    order and windows in row-major order inside each cell. ``rank`` numbers them in that order."""

    def __init__(self, height: int, width: int, chunk_size: int, cut_size: int | None) -> None:
        self.height, self.width = height, width
        self.cell = cut_size or max(height, width)
        self.cells_across = -(-width // self.cell)
        self.plans: list[tuple[list[int], list[int]]] = []
        self.offsets: list[int] = []
        total = 0
        for cy in range(0, height, self.cell):
            for cx in range(0, width, self.cell):
                ys = _breaks(cy, min(cy + self.cell, height), chunk_size)
                xs = _breaks(cx, min(cx + self.cell, width), chunk_size)
                self.plans.append((ys, xs))
                self.offsets.append(total)
                total += (len(ys) - 1) * (len(xs) - 1)
        self.total = total

    def rank(self, row: int, col: int) -> int:
        """Position in processing order of the window holding pixel (row, col)."""
        index = (row // self.cell) * self.cells_across + col // self.cell
        ys, xs = self.plans[index]
        i = bisect.bisect_right(ys, row) - 1
        j = bisect.bisect_right(xs, col) - 1
        return self.offsets[index] + i * (len(xs) - 1) + j

    def deadline(self, row: int, col: int) -> int:
        """Rank of the last window holding a pixel of the 3 x 3 block around (row, col)."""
        rows = (max(row - 1, 0), min(row + 1, self.height - 1))
        cols = (max(col - 1, 0), min(col + 1, self.width - 1))
        return max(self.rank(r, c) for r in rows for c in cols)


def _run_windows(
    reader: PredictionReader,
    buffers: dict[int, _PolygonLayer],
    *,
    order: _WindowOrder,
    road_value: int | None,
    line_writer: Callable[[list[np.ndarray]], None],
    spur_px: float,
    progress: Callable[[int, int], None] | None,
) -> dict[str, int]:
    """Walk cut cells in row-major order and, inside each, its windows in row-major order."""
    values = np.array(sorted(buffers), dtype=np.uint8)
    lookup = np.zeros(256, dtype=np.uint8)
    lookup[values] = values  # everything else (background, other classes, nodata) -> 0
    n_classes = len(reader.classes)
    rank = 0
    max_held = 0
    finished_lines: list[np.ndarray] = []
    lines = (
        LineMerger(finished_lines.append, spur_px, reader.width, order.deadline)
        if road_value is not None
        else None
    )

    def emit(value: int, polygon: Any, pixels: int, psum: float) -> None:
        buffers[value].add(polygon, pixels, psum)

    for ys, xs in order.plans:
        merger = SeamMerger(emit)
        above: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for r in range(len(ys) - 1):
            left = None
            for col in range(len(xs) - 1):
                y0, y1, x0, x1 = ys[r], ys[r + 1], xs[col], xs[col + 1]
                raw = reader.read_mask(y0, x0, y1 - y0, x1 - x0)
                _check_classes(raw, n_classes, reader.path, y0, x0)
                mask = lookup[raw]
                probability = None
                if reader.has_probabilities and mask.any():
                    probability = np.zeros(mask.shape, dtype=np.float32)
                    for v in values.tolist():
                        sel = mask == v
                        if sel.any():
                            probability[sel] = reader.read_probability(
                                v, y0, x0, y1 - y0, x1 - x0
                            )[sel]
                soft = (r > 0, r < len(ys) - 2, col > 0, col < len(xs) - 2)
                bottom, right = merger.add_chunk(
                    (r, col), mask, probability, y0, x0, soft, above.get(col), left
                )
                above[col], left = bottom, right
                held = merger.held
                if lines is not None:
                    halo = CENTERLINE_HALO
                    road = reader.read_mask(
                        y0 - halo, x0 - halo, y1 - y0 + 2 * halo, x1 - x0 + 2 * halo
                    ) == road_value
                    core = (halo, halo, halo + y1 - y0, halo + x1 - x0)
                    for piece in trace_centerlines(road, core):
                        lines.add(piece, x0 - halo, y0 - halo)
                    lines.expire(rank)
                    held += lines.held
                    line_writer(finished_lines)
                    finished_lines.clear()
                max_held = max(max_held, held)
                rank += 1
                if progress is not None:
                    progress(rank, order.total)
        merger.close()
    if lines is not None:
        lines.close()
        line_writer(finished_lines)
    return {"chunks": order.total, "max_held": max_held}


def _check_classes(raw: np.ndarray, n_classes: int, path: str, y0: int, x0: int) -> None:
    """A class mask holds class indices 0..K-1 and 255 (nodata), nothing else."""
    top = int(raw.max(initial=0, where=raw != NODATA_CLASS))
    if top >= n_classes:
        raise InputError(
            f"{path!r} has value {top} near pixel (row {y0}, col {x0}), but its classes are "
            f"0..{n_classes - 1} (255 = nodata); it is not a class mask. Give the prediction "
            "(.zarr store or class GeoTIFF written by `geounet predict`), not an image."
        )
