"""The evaluation walk: :func:`evaluate` opens both sides, walks the scene window by window and
sums pixel, object and centerline counts into an
:class:`~geounet.evaluation.report.EvaluationReport`."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geounet.config import DEFAULT_CLASSES, NODATA_CLASS
from geounet.errors import GeoreferenceError, InputError, SceneError, UnsupportedFormatError
from geounet.evaluation.apls import (
    DEFAULT_MIN_PATH,
    DEFAULT_SNAP,
    DEFAULT_SPACING,
    check_apls_options,
    score_graph_files,
)
from geounet.evaluation.objects import ObjectCollector, match_objects
from geounet.evaluation.report import AplsScores, CenterlineScores, Coverage, EvaluationReport
from geounet.evaluation.roadgraph import TRUTH_LAYERS, graph_layer
from geounet.evaluation.sources import (
    VECTOR_SUFFIXES,
    AlignedSource,
    Grid,
    VectorSource,
    check_same_grid,
    open_source,
    same_grid,
    score_windows,
)
from geounet.training.metrics import ConfusionMatrix

log = logging.getLogger(__name__)


def _centerline_counts(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray,
                       core: tuple[slice, slice], sampling: tuple[float, float],
                       tolerance: float) -> tuple[int, int, int, int]:
    """Skeleton pixels in ``core`` and how many lie within ``tolerance`` of the other skeleton."""
    from scipy.ndimage import distance_transform_edt
    from skimage.morphology import skeletonize

    sk_p = skeletonize(pred) if pred.any() else np.zeros_like(pred)
    sk_t = skeletonize(truth) if truth.any() else np.zeros_like(truth)
    core_p = sk_p[core] & valid[core]
    core_t = sk_t[core] & valid[core]
    if sk_t.any():
        near_t = distance_transform_edt(~sk_t, sampling=sampling)[core] <= tolerance
    else:
        near_t = np.zeros_like(core_p)
    if sk_p.any():
        near_p = distance_transform_edt(~sk_p, sampling=sampling)[core] <= tolerance
    else:
        near_p = np.zeros_like(core_t)
    return (int(core_p.sum()), int((core_p & near_t).sum()),
            int(core_t.sum()), int((core_t & near_p).sum()))


# --------------------------------------------------------------------------- evaluate


def _halo_px(grid: Grid, tolerance_m: float) -> int:
    """Pixels of context a window's skeleton comparison needs for ``tolerance_m`` metres.

    Taken from the smallest ground pixel side anywhere on the grid (its corners and centre),
    so the halo, and with it every window's memory, depends on the tolerance and the pixel
    size, never on the scene's size.
    """
    sides = [side
             for col, row in ((0, 0), (grid.width, 0), (0, grid.height),
                              (grid.width, grid.height), (grid.width / 2, grid.height / 2))
             for side in grid.pixel_sides_m(col, row)]
    smallest = min((s for s in sides if s > 0 and math.isfinite(s)), default=0.0)
    if smallest <= 0:
        return 16
    return int(math.ceil(tolerance_m / smallest)) + 16


def evaluate(
    pred: str | os.PathLike[str],
    truth: str | os.PathLike[str],
    *,
    classes: Sequence[str] | None = None,
    iou_threshold: float = 0.5,
    centerline_tolerance: float = 2.0,
    line_width: float | None = None,
    window_size: int = 2048,
    graph: str | os.PathLike[str] | None = None,
    apls_spacing: float = DEFAULT_SPACING,
    apls_snap: float = DEFAULT_SNAP,
) -> EvaluationReport:
    """Score ``pred`` against ``truth`` over the whole scene, window by window.

    Parameters
    ----------
    pred, truth : class-mask GeoTIFF / geounet COG (band 1) / geounet Zarr store (``mask``),
        or a GeoPackage with one layer per class (named like the classes); at least one side
        must be a raster, whose grid the vector side is burnt onto. Two georeferenced rasters
        on different grids are scored on the truth's grid (the prediction read onto it,
        nearest neighbour: e.g. a resampled run's store on the model grid); without a CRS they
        must share one grid.
    classes : class names in index order; default from the store / mask tags, else
        ``("background", "buildings", "roads")``.
    iou_threshold : IoU a predicted building needs to match a true one (object F1).
    centerline_tolerance : metres on the ground within which road skeletons count as
        matching, whatever the CRS: pixel sides in metres come from :mod:`geounet.georef`
        (rotation-aware, geodesic for a geographic CRS such as EPSG:4326).
    line_width : metres; width of vector road lines without a ``width`` attribute.
    window_size : pixels per window side (bounds memory).
    graph : a predicted road graph to score with APLS against ``truth``'s centrelines (which
        must then be vector lines): a vector file, its layer ``road_edges`` (the output of
        ``segment`` / ``vectorize``) or its only line layer. Default: ``pred`` itself when it
        is a vector file with a ``road_edges`` layer and ``truth`` has road lines; with two
        vector files only APLS is scored.
    apls_spacing, apls_snap : metres: control nodes along edges at most this far apart, and
        the farthest a control node is snapped onto the other graph (SpaceNet's 50 and 4).

    Returns
    -------
    EvaluationReport

    Examples
    --------
    >>> report = evaluate("pred.zarr", "truth.gpkg")  # doctest: +SKIP
    >>> report.score("buildings").iou  # doctest: +SKIP
    0.83
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise InputError(f"iou_threshold {iou_threshold} is outside (0, 1]; use e.g. 0.5.")
    if centerline_tolerance < 0:
        raise InputError(f"centerline tolerance {centerline_tolerance} is negative; use e.g. 2.")
    if window_size < 64:
        raise InputError(f"window size {window_size} is below 64 px; use e.g. 2048.")
    check_apls_options(apls_spacing, apls_snap, DEFAULT_MIN_PATH)
    names = tuple(classes) if classes is not None else None
    layers = {c: c for c in (names or DEFAULT_CLASSES)[1:]}
    graph_path = _graph_source(pred, truth, graph)
    with contextlib.ExitStack() as stack:  # closed in reverse order (nested GDAL envs)
        p_src = open_source(pred, layers, line_width)
        stack.callback(p_src.close)
        t_src = open_source(truth, layers, line_width)
        stack.callback(t_src.close)
        if isinstance(p_src, VectorSource) and isinstance(t_src, VectorSource) and graph_path:
            report = EvaluationReport(classes=names or DEFAULT_CLASSES, pixel=(), confusion=(),
                                      objects=None, centerline=None, pred=str(pred),
                                      truth=str(truth))
        else:
            report = _evaluate(p_src, t_src, names, iou_threshold, centerline_tolerance,
                               window_size, str(pred), str(truth))
        grid = None if isinstance(p_src, VectorSource) else p_src.grid
    if graph_path is None:
        return report
    return dataclasses.replace(report, apls=_score_graph(graph_path, truth, grid, apls_spacing,
                                                         apls_snap))


def _graph_source(pred: Any, truth: Any, graph: Any) -> Path | None:
    """The road graph file to score with APLS (None: none): ``graph``, else ``pred`` when it
    is a vector file with a ``road_edges`` layer and ``truth`` a vector file with road lines."""
    if graph is not None:
        path = Path(graph)
        if not path.exists():
            raise SceneError(f"road graph {str(path)!r} (graph, --graph) does not exist; give "
                             "the GeoPackage written by `geounet segment` or `vectorize`.")
        if Path(truth).suffix.lower() not in VECTOR_SUFFIXES:
            raise InputError(
                f"APLS (graph={str(path)!r}, --graph) scores against true road centrelines, "
                f"but truth {str(truth)!r} is a raster; give the truth as vector lines (e.g. "
                "truth.gpkg of `geounet synth`, layer 'roads') or leave out --graph."
            )
        return path
    vector = (Path(pred).suffix.lower() in VECTOR_SUFFIXES
              and Path(truth).suffix.lower() in VECTOR_SUFFIXES and Path(pred).exists())
    if vector and graph_layer(pred, ("road_edges",), required=False) == "road_edges" \
            and graph_layer(truth, TRUTH_LAYERS, required=False) is not None:
        return Path(pred)
    return None


def _score_graph(path: Path, truth: Any, grid: Grid | None, spacing: float,
                 snap: float) -> AplsScores:
    """APLS of ``path`` against ``truth``, the truth clipped to the raster's footprint."""
    extent = None
    if grid is not None and grid.crs is not None:
        from shapely import Polygon

        corners = ((0, 0), (grid.width, 0), (grid.width, grid.height), (0, grid.height))
        extent = (Polygon([grid.transform * xy for xy in corners]), grid.crs)
    return score_graph_files(path, truth, spacing=spacing, snap=snap, extent=extent)


def _on_one_grid(p_src: Any, t_src: Any, names: tuple[str, ...]) -> Any:
    """Put both sides on one grid: vector labels burnt onto the raster side's grid, or a
    georeferenced prediction read onto the truth's grid; returns the prediction side."""
    vector_p = isinstance(p_src, VectorSource)
    if vector_p or isinstance(t_src, VectorSource):
        raster, vector = (t_src, p_src) if vector_p else (p_src, t_src)
        if raster.grid.crs is None:
            raise GeoreferenceError(
                f"{str(raster.path)!r} has no CRS; vector labels cannot be burnt onto it."
            )
        vector.class_layers = {c: c for c in names[1:]}
        vector.attach(raster.grid, names[0])
    elif not same_grid(p_src.grid, t_src.grid):
        if p_src.grid.crs is None or t_src.grid.crs is None:
            check_same_grid(p_src.grid, t_src.grid, ("prediction", "truth"))  # raises
        log.info("prediction grid %dx%d differs from the truth's %dx%d: reading the prediction "
                 "onto the truth's grid (nearest neighbour)", p_src.grid.height,
                 p_src.grid.width, t_src.grid.height, t_src.grid.width)
        return AlignedSource(p_src, t_src.grid)
    return p_src


def _evaluate(p_src: Any, t_src: Any, names: tuple[str, ...] | None, iou_threshold: float,
              tolerance: float, window_size: int, pred: str, truth: str) -> EvaluationReport:
    vector_p = isinstance(p_src, VectorSource)
    vector_t = isinstance(t_src, VectorSource)
    if vector_p and vector_t:
        raise UnsupportedFormatError(
            "both the prediction and the truth are vector files; one must be a raster (mask "
            "GeoTIFF or Zarr) to give the grid, or, for APLS, hold road_edges and road lines."
        )
    if names is None:
        names = p_src.classes or t_src.classes or DEFAULT_CLASSES
    p_src = _on_one_grid(p_src, t_src, names)
    grid: Grid = t_src.grid if not vector_t else p_src.grid
    cm = ConfusionMatrix(names)
    b_idx = names.index("buildings") if "buildings" in names else None
    r_idx = names.index("roads") if "roads" in names else None
    p_objects = ObjectCollector(grid) if b_idx is not None and not vector_p else None
    t_objects = ObjectCollector(grid) if b_idx is not None and not vector_t else None
    if grid.crs is None and r_idx is not None:
        warnings.warn(
            f"{str(getattr(t_src if not vector_t else p_src, 'path', ''))!r} has no CRS; the "
            f"centerline tolerance {tolerance:g} m is measured taking the transform's units "
            "(pixels for an identity transform) as metres.",
            UserWarning, stacklevel=3,
        )
    halo = _halo_px(grid, tolerance)
    cl = [0, 0, 0, 0]
    covered = [0, 0]  # truth's labelled pixels with a valid prediction, truth's labelled pixels
    for window in score_windows(grid.height, grid.width, window_size):
        y0, x0 = window[:2]
        p, t = p_src.read(*window), t_src.read(*window)
        cm.update(p, t)
        labelled = t != NODATA_CLASS
        covered[0] += int((labelled & (p != NODATA_CLASS)).sum())
        covered[1] += int(labelled.sum())
        if b_idx is not None:
            if p_objects is not None:
                p_objects.add(p == b_idx, y0, x0)
            if t_objects is not None:
                t_objects.add(t == b_idx, y0, x0)
        if r_idx is not None:
            counts = _window_centerlines(p_src, t_src, grid, window, (p, t), halo, r_idx,
                                         tolerance)
            cl = [a + b for a, b in zip(cl, counts)]
    coverage = _coverage(*covered, pred, truth)
    objects = None
    if b_idx is not None:
        pred_polys = p_src.objects(b_idx) if vector_p else p_objects.finish()
        true_polys = t_src.objects(b_idx) if vector_t else t_objects.finish()
        objects = match_objects(pred_polys, true_polys, iou_threshold)
    centerline = CenterlineScores(*cl, tolerance=tolerance) if r_idx is not None else None
    return EvaluationReport(
        classes=names, pixel=tuple(cm.scores()),
        confusion=tuple(tuple(int(v) for v in row) for row in cm.counts),
        objects=objects, centerline=centerline, pred=pred, truth=truth, coverage=coverage,
    )


def _window_centerlines(p_src: Any, t_src: Any, grid: Grid, window: tuple[int, int, int, int],
                        read: tuple[np.ndarray, np.ndarray], halo: int, r_idx: int,
                        tolerance: float) -> tuple[int, int, int, int]:
    """Centerline counts of one window (:func:`_centerline_counts`), read with ``halo``
    pixels of context; ``read`` is the window's (prediction, truth) already read."""
    y0, x0, height, width = window
    hy0, hx0 = max(0, y0 - halo), max(0, x0 - halo)
    hy1 = min(grid.height, y0 + height + halo)
    hx1 = min(grid.width, x0 + width + halo)
    if (hy0, hx0, hy1, hx1) == (y0, x0, y0 + height, x0 + width):
        ph, th = read
    else:
        ph = p_src.read(hy0, hx0, hy1 - hy0, hx1 - hx0)
        th = t_src.read(hy0, hx0, hy1 - hy0, hx1 - hx0)
    valid = (ph != NODATA_CLASS) & (th != NODATA_CLASS)
    core = (slice(y0 - hy0, y0 - hy0 + height), slice(x0 - hx0, x0 - hx0 + width))
    col_m, row_m = grid.pixel_sides_m(x0 + width / 2, y0 + height / 2)
    sampling = (row_m, col_m)  # distance_transform_edt: (rows, cols)
    return _centerline_counts((ph == r_idx) & valid, (th == r_idx) & valid, valid, core,
                              sampling, tolerance)


COVERAGE_WARN = 0.99
"""A prediction covering less than this share of the truth's labelled pixels is warned about."""


def _coverage(scored: int, labelled: int, pred: str, truth: str) -> Coverage:
    """The prediction's coverage of the truth; a warning when it leaves part of it unscored."""
    coverage = Coverage(scored, labelled)
    if labelled and coverage.fraction < COVERAGE_WARN:
        warnings.warn(
            f"the prediction {pred!r} covers {coverage.fraction:.1%} of the truth's labelled "
            f"pixels ({scored:,} of {labelled:,}): the rest (outside the prediction, or its "
            f"nodata) is not scored, so the scores are for the covered part of {truth!r} only.",
            UserWarning, stacklevel=4,
        )
    return coverage
