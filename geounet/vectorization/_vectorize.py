"""The implementation of :func:`~geounet.vectorization.vectorize`: check the options, choose
the layers, walk the windows of the prediction pass by pass (:mod:`._walk`) and write the
finished objects (:mod:`._layers`)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geounet.errors import (
    InputError,
    OutputExistsError,
    UnsupportedFormatError,
    option,
    with_settings,
)
from geounet.georef import Frame
from geounet.vectorization._defaults import (
    BUBBLE_LENGTH,
    BUILDING_CLASS,
    CENTERLINE_LAYER,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_GAP_LENGTH,
    DEFAULT_MIN_AREA,
    DEFAULT_SIMPLIFY,
    DEFAULT_SPUR_LENGTH,
    EDGES_LAYER,
    JUNCTION_MERGE_LENGTH,
    NODES_LAYER,
    ROAD_CLASS,
)
from geounet.vectorization._graph import GraphBuilder, mean_probabilities, write_graph
from geounet.vectorization._layers import PolygonLayer, write_lines
from geounet.vectorization._options import VectorizeOptions
from geounet.vectorization._source import PredictionReader
from geounet.vectorization._walk import WindowOrder, run_windows
from geounet.vectorization._writer import (
    SUFFIXES,
    FeatureWriter,
    LayerSpec,
    VectorFormat,
    layer_paths,
)

logger = logging.getLogger(__name__)


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


def vectorize(
    pred: str | Path,
    out: str | Path,
    options: VectorizeOptions | None = None,
    *,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    **settings: Any,
) -> VectorizeResult:
    """Turn a prediction raster into seam-free polygons per class and road centerlines.

    Parameters
    ----------
    pred : geounet prediction store (``.zarr``: ``mask`` + ``probabilities``) or GeoTIFF
        (single-band class mask, or the geounet COG whose band 1 is ``class``).
    out : output file; the suffix picks the format: ``.gpkg`` (one layer per class in one
        file), ``.parquet`` (GeoParquet) or ``.fgb`` (FlatGeobuf), the last two written as one
        file per layer, ``<stem>_<layer><suffix>``.
    options : :class:`VectorizeOptions`; its fields are also accepted as keywords
        (``settings``: ``vectorize(pred, out, regularize=True)``), replacing those of
        ``options``. They are:
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
    graph : also write the road network as a graph (when ``roads`` is vectorized): layers
        ``road_edges`` (LineString; ``u``, ``v`` node ids, ``length_m``, ``mean_probability``)
        and ``road_nodes`` (Point; ``id``, ``degree``), built from the seam-exact centerlines
        (rules in ``docs/vectorize.md``, "Road graph").
    gap_length : metres; a free road end this close to the rest of the network is joined to
        it by a straight edge (0: off). Default :data:`DEFAULT_GAP_LENGTH` (10).
    min_confidence : drop polygon objects whose ``mean_probability`` (the mean, over the
        object's pixels, of the probability of its class) is below this value (0-1); None or
        0 keeps all. It filters the mean, not ``min_probability``: one uncertain edge pixel
        sets an object's minimum, so a minimum filter would drop most true objects; the mean
        measures the object as a whole. Needs a prediction with probabilities (a geounet store
        or COG), not a bare class mask. Centerlines are not filtered.
    layer_names : class name (or ``road_centerlines``, ``road_edges``, ``road_nodes``) ->
        layer name.
    cut_size : side in pixels of the scene-anchored grid no object crosses (objects are cut
        at its lines, deterministically), bounding memory for scene-wide road networks;
        None never cuts.
    overwrite : replace existing outputs instead of raising :class:`OutputExistsError`.
    progress : called as ``progress(done, total)`` after each window.

    Returns
    -------
    VectorizeResult with per-layer paths and counts.

    Examples
    --------
    >>> result = vectorize("pred.zarr", "pred.gpkg", regularize=True)  # doctest: +SKIP
    >>> result.counts  # doctest: +SKIP
    {'buildings': 812, 'roads': 14, 'road_centerlines': 97, 'road_edges': 95, 'road_nodes': 80}
    """
    started = time.perf_counter()
    o = with_settings(VectorizeOptions, options, settings, "vectorize")
    out = Path(out)
    fmt = _check_format(out)
    chunk_size, cut_size, min_confidence = o.chunk_size, o.cut_size, o.min_confidence
    with PredictionReader(pred) as reader:
        _check_probabilities(reader, pred, min_confidence)
        wanted, layers, lines_wanted, graph_wanted = _choose_layers(
            reader, pred, o.classes, o.layer_names, o.centerlines, o.graph
        )
        _check_targets(out, fmt, layers, overwrite)
        min_areas = _per_class(o.min_area, DEFAULT_MIN_AREA, wanted, "min_area")
        tolerances = _per_class(o.simplify, DEFAULT_SIMPLIFY, wanted, "simplify")
        spur_m = DEFAULT_SPUR_LENGTH if o.spur_length is None else float(o.spur_length)
        pixel_m = reader.pixel_size_m()
        if chunk_size is None:  # a store's chunking, else the default
            chunk_size = (int(min(reader.chunk_shape)) if Path(reader.path).is_dir()
                          else DEFAULT_CHUNK_SIZE)
        road_value = reader.classes.index(ROAD_CLASS) if ROAD_CLASS in wanted else None
        frame = Frame(reader.crs_wkt, reader.transform)
        specs = _layer_specs(wanted, layers, lines_wanted, graph_wanted)
        with FeatureWriter(out, fmt, specs, reader.crs_wkt) as writer:
            buffers = {
                reader.classes.index(cls): PolygonLayer(
                    name=cls, layer=layers[cls], writer=writer, frame=frame, pixel_m=pixel_m,
                    fill_holes=o.fill_holes, min_area=min_areas[cls],
                    tolerance=tolerances[cls] / pixel_m,
                    regularize=o.regularize and cls == BUILDING_CLASS,
                    has_probabilities=reader.has_probabilities, min_confidence=min_confidence,
                )
                for cls in wanted
            }
            roads = _Roads(
                reader, writer, frame, layers, lines_wanted, graph_wanted,
                road_tolerance=tolerances.get(ROAD_CLASS, 0.0) / pixel_m,
                gap_px=(DEFAULT_GAP_LENGTH if o.gap_length is None else o.gap_length) / pixel_m,
                merge_px=JUNCTION_MERGE_LENGTH / pixel_m, bubble_px=BUBBLE_LENGTH / pixel_m,
            )
            stats = _run_passes(
                reader, buffers, road_value=road_value,
                chunk_size=chunk_size, cut_size=cut_size, lines_wanted=roads.trace,
                line_writer=roads.add, spur_px=spur_m / pixel_m, progress=progress,
            )
            for buffer in buffers.values():
                buffer.flush()
            roads.finish(chunk_size)
            written = writer.commit()
            counts = {layers_name: writer.counts[layers_name] for layers_name in writer.counts}
    seconds = time.perf_counter() - started
    logger.info("vectorized %s in %.1f s: %s", pred, seconds, counts)
    return VectorizeResult(
        paths=written,
        counts=counts,
        seconds=seconds,
        pixels=reader.height * reader.width,
        chunks=WindowOrder(reader.height, reader.width, chunk_size, None).total,
        max_held=stats["max_held"],
        layers=tuple(layers.values()),
    )


class _Roads:
    """Where the finished road centerlines go: the ``road_centerlines`` layer as they come,
    the road graph (``road_edges``, ``road_nodes``) once the roads pass is done."""

    def __init__(self, reader: PredictionReader, writer: FeatureWriter, frame: Frame,
                 layers: dict[str, str], lines_wanted: bool, graph_wanted: bool, *,
                 road_tolerance: float, gap_px: float, merge_px: float,
                 bubble_px: float) -> None:
        self.reader, self.writer, self.frame, self.layers = reader, writer, frame, layers
        self.lines_wanted, self.tolerance = lines_wanted, road_tolerance
        self.trace = lines_wanted or graph_wanted
        self.value = reader.classes.index(ROAD_CLASS) if self.trace else -1
        self.graph = None
        if graph_wanted:
            self.graph = GraphBuilder(gap=gap_px, merge=merge_px, bubble=bubble_px,
                                      height=reader.height, width=reader.width)

    def add(self, coords: list[np.ndarray]) -> None:
        if self.lines_wanted:
            write_lines(coords, self.writer, self.layers[CENTERLINE_LAYER], self.frame,
                        self.tolerance)
        if self.graph is not None:
            self.graph.add(coords)

    def finish(self, window: int) -> None:
        if self.graph is None:
            return
        graph = self.graph.build()
        probability = mean_probabilities(self.reader, self.value, graph, window)
        write_graph(graph, self.writer, (self.layers[EDGES_LAYER], self.layers[NODES_LAYER]),
                    self.frame, self.tolerance, probability)


def _check_probabilities(reader: PredictionReader, pred: str | Path,
                         min_confidence: float | None) -> None:
    """``min_confidence`` filters on probabilities: refuse a bare class mask."""
    if min_confidence is not None and not reader.has_probabilities:
        raise InputError(
            f"min_confidence {min_confidence} needs class probabilities, but {str(pred)!r} "
            "holds only a class mask; vectorize the geounet prediction (.zarr store or "
            "COG from `geounet predict`) or leave out --min-confidence."
        )


def _check_format(out: Path) -> VectorFormat:
    """The output format named by ``out``'s suffix."""
    fmt = SUFFIXES.get(out.suffix.lower())
    if fmt is None:
        raise UnsupportedFormatError(
            f"output {str(out)!r} has suffix {out.suffix!r}; use .gpkg (GeoPackage), .parquet "
            "(GeoParquet) or .fgb (FlatGeobuf)."
        )
    return fmt


def _choose_layers(
    reader: PredictionReader,
    pred: str | Path,
    classes: Sequence[str] | None,
    layer_names: Mapping[str, str] | None,
    centerlines: bool,
    graph: bool,
) -> tuple[list[str], dict[str, str], bool, bool]:
    """The classes to vectorize, each layer's name and whether centerlines and the road graph
    are written."""
    known = [c for c in reader.classes if c != "background"]
    wanted = list(known) if classes is None else list(classes)
    unknown = [c for c in wanted if c not in reader.classes or c == "background"]
    if unknown or not wanted:
        raise InputError(
            f"classes {unknown or wanted} cannot be vectorized from {str(pred)!r}; its "
            f"classes are {list(reader.classes)}; choose from {known}."
        )
    names = dict(layer_names or {})
    road_layers = (CENTERLINE_LAYER, EDGES_LAYER, NODES_LAYER)
    bad = sorted(set(names) - set(wanted) - set(road_layers))
    if bad:
        raise InputError(
            f"layer_names has keys {bad}; keys are vectorized classes {wanted} or "
            f"{', '.join(map(repr, road_layers))}."
        )
    layers = {c: names.get(c, c) for c in wanted}
    lines_wanted = centerlines and ROAD_CLASS in wanted
    graph_wanted = graph and ROAD_CLASS in wanted
    for name, on in zip(road_layers, (lines_wanted, graph_wanted, graph_wanted)):
        if on:
            layers[name] = names.get(name, name)
    odd = [n for n in layers.values() if not n or "/" in n or "\\" in n]
    if odd:
        raise InputError(
            f"layer names {odd} are empty or hold a path separator; layer names also name "
            "files (.parquet/.fgb: <stem>_<layer><suffix>), so use plain names like 'bldg'."
        )
    if len(set(layers.values())) != len(layers):
        raise InputError(f"layer names {list(layers.values())} repeat; give distinct names.")
    return wanted, layers, lines_wanted, graph_wanted


def _check_targets(out: Path, fmt: VectorFormat, layers: dict[str, str], overwrite: bool) -> None:
    """Refuse existing output files unless ``overwrite``, then create the output folder."""
    targets = layer_paths(out, fmt, list(layers.values()))
    existing = sorted({str(p) for p in targets.values() if p.exists()})
    if existing and not overwrite:
        raise OutputExistsError(
            f"{existing} already exist; pass {option('overwrite', True)} or choose "
            "another --out."
        )
    out.parent.mkdir(parents=True, exist_ok=True)


def _layer_specs(wanted: list[str], layers: dict[str, str], lines_wanted: bool,
                 graph_wanted: bool) -> list[LayerSpec]:
    """The schema of every layer written: a polygon layer per class, then the centerlines and
    the road graph."""
    specs = []
    import pyarrow as pa

    for cls in wanted:
        specs.append(
            LayerSpec(
                layers[cls],
                "Polygon",
                {"class": pa.string(), "area_m2": pa.float64(), "perimeter_m": pa.float64(),
                 "mean_probability": pa.float64(), "min_probability": pa.float64()},
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
    if graph_wanted:
        specs.append(LayerSpec(layers[EDGES_LAYER], "LineString", {
            "u": pa.int64(), "v": pa.int64(), "length_m": pa.float64(),
            "mean_probability": pa.float64()}))
        specs.append(LayerSpec(layers[NODES_LAYER], "Point",
                               {"id": pa.int64(), "degree": pa.int64()}))
    return specs


def _run_passes(
    reader: PredictionReader,
    buffers: dict[int, PolygonLayer],
    *,
    road_value: int | None,
    chunk_size: int,
    cut_size: int | None,
    lines_wanted: bool,
    line_writer: Callable[[list[np.ndarray]], None],
    spur_px: float,
    progress: Callable[[int, int], None] | None,
) -> dict[str, int]:
    """Walk the windows once for the uncut classes and once for the cut road network."""
    # Buildings (every class but roads) are never cut: they are small, so the objects
    # waiting at the chunk frontier stay few. Only the scene-spanning road network is
    # cut on the scene-anchored cut grid, which bounds the geometry held for it.
    passes = [
        ({v: b for v, b in buffers.items() if v != road_value}, None, False),
        ({v: b for v, b in buffers.items() if v == road_value}, cut_size, lines_wanted),
    ]
    passes = [(bufs, cut, lines) for bufs, cut, lines in passes if bufs]
    orders = [
        WindowOrder(reader.height, reader.width, chunk_size, cut) for _, cut, _ in passes
    ]
    total = sum(order.total for order in orders)
    stats = {"chunks": 0, "max_held": 0}
    for (bufs, _, lines), order in zip(passes, orders):
        done_before = stats["chunks"]
        part = run_windows(
            reader,
            bufs,
            order=order,
            road_value=road_value if lines else None,
            line_writer=line_writer,
            spur_px=spur_px,
            progress=(
                None
                if progress is None
                else lambda done, _t, base=done_before: progress(base + done, total)
            ),
        )
        stats["chunks"] += part["chunks"]
        stats["max_held"] = max(stats["max_held"], part["max_held"])
    return stats
