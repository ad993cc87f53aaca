"""Score a prediction against ground truth: pixel, object (buildings) and centerline (roads) metrics.

Either side may be a class-mask raster (GeoTIFF, geounet COG band 1, geounet Zarr store
``mask``) or a GeoPackage (``buildings`` polygons, ``roads`` lines buffered by ``width``)
burnt onto the raster side's grid. The scene is walked window by window: pixel scores come
from summed confusion counts, building objects are traced per window and merged across window
seams, road skeletons are compared inside windows with a halo, so memory stays bounded.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geounet.config import DEFAULT_CLASSES, NODATA_CLASS
from geounet.errors import (
    GeoreferenceError,
    InputError,
    OutputExistsError,
    SceneError,
    UnsupportedFormatError,
)
from geounet.training.metrics import (
    ClassScores,
    ConfusionMatrix,
    CountScores,
    harmonic_mean,
    json_score,
    mean_iou,
    ratio,
)

log = logging.getLogger(__name__)

VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb")


@dataclass(frozen=True)
class ObjectScores(CountScores):
    """Object-level matching of building polygons (SpaceNet rule: one-to-one, IoU >= threshold).

    Attributes
    ----------
    tp : matched pairs; fp : unmatched predicted objects; fn : unmatched true objects.
    iou_threshold : IoU a pair needs to match.
    """

    tp: int
    fp: int
    fn: int
    iou_threshold: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "iou_threshold": self.iou_threshold,
                "precision": json_score(self.precision), "recall": json_score(self.recall),
                "f1": json_score(self.f1)}


@dataclass(frozen=True)
class CenterlineScores:
    """Road skeleton agreement within a distance tolerance.

    Attributes
    ----------
    pred_total, pred_matched : predicted skeleton pixels, and those within tolerance of truth.
    true_total, true_matched : true skeleton pixels, and those within tolerance of prediction.
    tolerance : metres on the ground (geodesic for a geographic CRS).
    """

    pred_total: int
    pred_matched: int
    true_total: int
    true_matched: int
    tolerance: float

    @property
    def precision(self) -> float:
        """Share of the predicted centerline within tolerance of the true one."""
        return ratio(self.pred_matched, self.pred_total)

    @property
    def recall(self) -> float:
        """Share of the true centerline within tolerance of the predicted one."""
        return ratio(self.true_matched, self.true_total)

    @property
    def f1(self) -> float:
        """Harmonic mean of centerline precision and recall."""
        return harmonic_mean(self.precision, self.recall)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"pred_total": self.pred_total, "pred_matched": self.pred_matched,
                "true_total": self.true_total, "true_matched": self.true_matched,
                "tolerance": self.tolerance, "precision": json_score(self.precision),
                "recall": json_score(self.recall), "f1": json_score(self.f1)}


@dataclass(frozen=True)
class EvaluationReport:
    """Everything :func:`evaluate` measured.

    Attributes
    ----------
    classes : class names in index order.
    pixel : per-class pixel scores from summed confusion counts.
    confusion : (K, K) counts, rows truth, columns prediction.
    objects : building object scores (None when there is no ``buildings`` class).
    centerline : road centerline scores (None when there is no ``roads`` class).
    pred, truth : the inputs as given.
    """

    classes: tuple[str, ...]
    pixel: tuple[ClassScores, ...]
    confusion: tuple[tuple[int, ...], ...]
    objects: ObjectScores | None
    centerline: CenterlineScores | None
    pred: str = ""
    truth: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def score(self, name: str) -> ClassScores:
        """Pixel scores of the class called ``name``."""
        for s in self.pixel:
            if s.name == name:
                return s
        raise InputError(f"class {name!r} is not one of {self.classes}.")

    @property
    def mean_iou(self) -> float:
        """Mean pixel IoU over the foreground classes that occur."""
        return mean_iou(self.pixel)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``nan`` as ``null``)."""
        return {
            "pred": self.pred, "truth": self.truth, "classes": list(self.classes),
            "pixel": {s.name: s.to_dict() for s in self.pixel},
            "mean_iou": json_score(self.mean_iou),
            "confusion": [list(row) for row in self.confusion],
            "objects": None if self.objects is None else self.objects.to_dict(),
            "centerline": None if self.centerline is None else self.centerline.to_dict(),
            **dict(self.extra),
        }

    def to_json(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write :meth:`to_dict` as JSON (atomic)."""
        path = check_json_output(path, overwrite=overwrite)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        os.replace(tmp, path)
        return path

    def format_table(self) -> str:
        """Human-readable table of all scores."""
        lines = [f"{'class':<12} {'precision':>9} {'recall':>9} {'IoU':>9} {'F1':>9} "
                 f"{'support':>11}"]
        for s in self.pixel:
            lines.append(f"{s.name:<12} {_fmt(s.precision)} {_fmt(s.recall)} {_fmt(s.iou)} "
                         f"{_fmt(s.f1)} {s.support:>11d}")
        lines.append(f"{'mean IoU (foreground)':<22} {_fmt(self.mean_iou)}")
        if self.objects is not None:
            o = self.objects
            lines.append(f"buildings objects (IoU >= {o.iou_threshold:g}): precision "
                         f"{_fmt(o.precision).strip()}  recall {_fmt(o.recall).strip()}  "
                         f"F1 {_fmt(o.f1).strip()}  (tp {o.tp}, fp {o.fp}, fn {o.fn})")
        if self.centerline is not None:
            c = self.centerline
            lines.append(f"roads centerline (within {c.tolerance:g} m): precision "
                         f"{_fmt(c.precision).strip()}  recall {_fmt(c.recall).strip()}  "
                         f"F1 {_fmt(c.f1).strip()}")
        return "\n".join(lines)


def check_json_output(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Fail early when the JSON report cannot be written at ``path`` (exists, no folder)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"scores file {str(path)!r} already exists; pass overwrite=True (--overwrite) to "
            "replace it, or choose another path."
        )
    if not path.parent.is_dir():
        raise InputError(
            f"folder {str(path.parent)!r} of the scores file does not exist; create it first."
        )
    return path


def _fmt(value: float) -> str:
    return f"{'-':>9}" if np.isnan(value) else f"{value:>9.4f}"


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, affine transform and size; ground sizes from :mod:`geounet.georef`."""

    crs: Any
    transform: Any
    height: int
    width: int

    @property
    def crs_unit_step(self) -> float:
        """Length of one pixel step along columns in CRS units (for transform comparisons)."""
        return float(math.hypot(self.transform.a, self.transform.d))

    def pixel_sides_m(self, col: float, row: float) -> tuple[float, float]:
        """Ground metres of one pixel step along columns and along rows near ``(col, row)``:
        rotation-aware, geodesic in a geographic CRS. Without a CRS the transform's units are
        taken as metres (a warning says so once, in :func:`evaluate`)."""
        from geounet.georef import pixel_sides_m

        if self.crs is None:
            t = self.transform
            return float(math.hypot(t.a, t.d)), float(math.hypot(t.b, t.e))
        return pixel_sides_m(self.crs.to_wkt(), tuple(self.transform)[:6], col, row)


class _RasterSource:
    """A class-mask raster read window by window through the shared
    :class:`geounet.prediction.PredictionReader` (GeoTIFF band 1, COG, Zarr ``mask``)."""

    def __init__(self, path: Path) -> None:
        from affine import Affine
        from rasterio.crs import CRS

        from geounet.prediction import PredictionReader

        self.path = path
        self._reader = PredictionReader(path, require_crs=False)
        r = self._reader
        self.classes: tuple[str, ...] | None = r.named_classes
        crs = CRS.from_wkt(r.crs_wkt) if r.crs_wkt else None
        self.grid = Grid(crs, Affine(*r.transform), r.height, r.width)

    def read(self, y0: int, x0: int, height: int, width: int) -> np.ndarray:
        """Class mask window (uint8, 255 = nodata), inside the grid."""
        return self._reader.read_mask(y0, x0, height, width)

    def close(self) -> None:
        self._reader.close()


def _footprint(height: int, width: int, transform: Any) -> tuple[float, float, float, float]:
    """Map bounds (minx, miny, maxx, maxy) of a grid from all four corners (rotation-aware)."""
    xs, ys = zip(*(transform * (c, r) for c, r in ((0, 0), (width, 0), (0, height),
                                                   (width, height))))
    return min(xs), min(ys), max(xs), max(ys)


class _VectorSource:
    """Label layers burnt onto another source's grid, window by window."""

    def __init__(self, path: Path, class_layers: Mapping[str, str], line_width: float | None):
        self.path = path
        self.class_layers = dict(class_layers)
        self.line_width = line_width
        self.classes = None
        self.shapes: list[Any] = []
        self.grid: Grid | None = None

    def attach(self, grid: Grid) -> None:
        from geounet.labels import load_label_shapes

        self.grid = grid
        self.shapes = load_label_shapes(self.path, grid.crs, class_layers=self.class_layers,
                                        line_width=self.line_width)
        from shapely import STRtree

        self._trees = {c.index: STRtree(list(c.geometries)) for c in self.shapes}

    def read(self, y0: int, x0: int, height: int, width: int) -> np.ndarray:
        from rasterio.windows import Window
        from rasterio.windows import transform as window_transform
        from shapely.geometry import box

        from geounet.labels import ClassShapes, rasterize_shapes

        transform = window_transform(Window(x0, y0, width, height), self.grid.transform)
        window = box(*_footprint(height, width, transform))
        subset = []
        for cls in self.shapes:
            hits = self._trees[cls.index].query(window)
            subset.append(ClassShapes(cls.index, cls.name,
                                      tuple(cls.geometries[i] for i in hits)))
        return rasterize_shapes(subset, transform, height, width)

    def objects(self, index: int) -> list[Any]:
        """The original polygons of class ``index`` that touch the grid."""
        from shapely.geometry import box

        extent = box(*_footprint(self.grid.height, self.grid.width, self.grid.transform))
        for cls in self.shapes:
            if cls.index == index:
                out = []
                for g in cls.geometries:
                    if g.intersects(extent):
                        out.extend(getattr(g, "geoms", [g]))
                return out
        return []

    def close(self) -> None:
        pass


def _open_source(path: str | os.PathLike[str], class_layers: Mapping[str, str],
                 line_width: float | None) -> _RasterSource | _VectorSource:
    path = Path(path)
    if not path.exists():
        raise SceneError(f"{str(path)!r} does not exist; give a mask GeoTIFF, Zarr or GeoPackage.")
    if path.suffix.lower() in VECTOR_SUFFIXES:
        return _VectorSource(path, class_layers, line_width)
    return _RasterSource(path)


def _check_same_grid(a: Grid, b: Grid, names: tuple[str, str]) -> None:
    if (a.height, a.width) != (b.height, b.width):
        raise GeoreferenceError(
            f"{names[0]} is {a.height}x{a.width} px but {names[1]} is {b.height}x{b.width}; "
            "both rasters must share one grid (resample one onto the other, or give a "
            "GeoPackage for the truth)."
        )
    if not a.transform.almost_equals(b.transform, precision=1e-3 * a.crs_unit_step):
        raise GeoreferenceError(
            f"{names[0]} transform {tuple(a.transform)[:6]} differs from {names[1]} "
            f"{tuple(b.transform)[:6]}; both rasters must share one grid."
        )
    if a.crs is not None and b.crs is not None and a.crs != b.crs:
        raise GeoreferenceError(
            f"{names[0]} CRS differs from {names[1]} CRS; reproject one onto the other's grid."
        )


def _windows(height: int, width: int, size: int) -> Iterator[tuple[int, int, int, int]]:
    for y0 in range(0, height, size):
        for x0 in range(0, width, size):
            yield y0, x0, min(size, height - y0), min(size, width - x0)


# --------------------------------------------------------------------------- objects


class _ObjectCollector:
    """Collects per-window polygons; those touching an interior seam are merged at the end."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.done: list[Any] = []
        self.pending: list[Any] = []

    def add(self, mask: np.ndarray, y0: int, x0: int) -> None:
        from rasterio.windows import Window
        from rasterio.windows import transform as window_transform
        from rasterio.features import shapes
        from shapely.geometry import shape

        if not mask.any():
            return
        height, width = mask.shape
        transform = window_transform(Window(x0, y0, width, height), self.grid.transform)
        from scipy.ndimage import label

        labels, n = label(mask, structure=[[0, 1, 0], [1, 1, 1], [0, 1, 0]])
        seam = np.zeros(n + 1, dtype=bool)
        if y0 > 0:
            seam[labels[0]] = True
        if x0 > 0:
            seam[labels[:, 0]] = True
        if y0 + height < self.grid.height:
            seam[labels[-1]] = True
        if x0 + width < self.grid.width:
            seam[labels[:, -1]] = True
        seam[0] = False
        for geom, value in shapes(labels.astype(np.int32), mask=labels > 0, connectivity=4,
                                  transform=transform):
            (self.pending if seam[int(value)] else self.done).append(shape(geom))

    def finish(self) -> list[Any]:
        from shapely import unary_union

        if not self.pending:
            return self.done
        merged = unary_union(self.pending)
        return self.done + list(getattr(merged, "geoms", [merged]))


def match_objects(pred: Sequence[Any], truth: Sequence[Any], iou_threshold: float = 0.5
                  ) -> ObjectScores:
    """One-to-one greedy matching of polygons by IoU (SpaceNet rule).

    Pairs are taken in decreasing IoU; a pair matches when both are still free and its IoU is
    at least ``iou_threshold``.

    Examples
    --------
    >>> from shapely.geometry import box
    >>> match_objects([box(0, 0, 2, 2)], [box(0, 0, 2, 2)]).f1
    1.0
    """
    from shapely import STRtree

    pairs: list[tuple[float, int, int]] = []
    if pred and truth:
        tree = STRtree(list(truth))
        for i, p in enumerate(pred):
            for j in tree.query(p, predicate="intersects"):
                t = truth[int(j)]
                inter = p.intersection(t).area
                union = p.area + t.area - inter
                iou = inter / union if union > 0 else 0.0
                if iou >= iou_threshold:
                    pairs.append((iou, i, int(j)))
    pairs.sort(key=lambda item: -item[0])
    used_p: set[int] = set()
    used_t: set[int] = set()
    for _, i, j in pairs:
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
    tp = len(used_p)
    return ObjectScores(tp, len(pred) - tp, len(truth) - tp, iou_threshold)


# --------------------------------------------------------------------------- centerlines


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
) -> EvaluationReport:
    """Score ``pred`` against ``truth`` over the whole scene, window by window.

    Parameters
    ----------
    pred, truth : class-mask GeoTIFF / geounet COG (band 1) / geounet Zarr store (``mask``),
        or a GeoPackage with one layer per class (named like the classes); at least one side
        must be a raster, whose grid the vector side is burnt onto. Rasters must share a grid.
    classes : class names in index order; default from the store / mask tags, else
        ``("background", "buildings", "roads")``.
    iou_threshold : IoU a predicted building needs to match a true one (object F1).
    centerline_tolerance : metres on the ground within which road skeletons count as
        matching, whatever the CRS: pixel sides in metres come from :mod:`geounet.georef`
        (rotation-aware, geodesic for a geographic CRS such as EPSG:4326).
    line_width : metres; width of vector road lines without a ``width`` attribute.
    window_size : pixels per window side (bounds memory).

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
    names = tuple(classes) if classes is not None else None
    layers = {c: c for c in (names or DEFAULT_CLASSES)[1:]}
    with contextlib.ExitStack() as stack:  # closed in reverse order (nested GDAL envs)
        p_src = _open_source(pred, layers, line_width)
        stack.callback(p_src.close)
        t_src = _open_source(truth, layers, line_width)
        stack.callback(t_src.close)
        return _evaluate(p_src, t_src, names, iou_threshold, centerline_tolerance, window_size,
                         str(pred), str(truth))


def _evaluate(p_src: Any, t_src: Any, names: tuple[str, ...] | None, iou_threshold: float,
              tolerance: float, window_size: int, pred: str, truth: str) -> EvaluationReport:
    vector_p = isinstance(p_src, _VectorSource)
    vector_t = isinstance(t_src, _VectorSource)
    if vector_p and vector_t:
        raise UnsupportedFormatError(
            "both the prediction and the truth are vector files; one must be a raster "
            "(mask GeoTIFF or Zarr) to give the grid."
        )
    if names is None:
        names = p_src.classes or t_src.classes or DEFAULT_CLASSES
    if vector_p or vector_t:
        raster, vector = (t_src, p_src) if vector_p else (p_src, t_src)
        if raster.grid.crs is None:
            raise GeoreferenceError(
                f"{str(raster.path)!r} has no CRS; vector labels cannot be burnt onto it."
            )
        vector.class_layers = {c: c for c in names[1:]}
        vector.attach(raster.grid)
    else:
        _check_same_grid(p_src.grid, t_src.grid, ("prediction", "truth"))
    grid: Grid = t_src.grid if not vector_t else p_src.grid
    cm = ConfusionMatrix(names)
    b_idx = names.index("buildings") if "buildings" in names else None
    r_idx = names.index("roads") if "roads" in names else None
    p_objects = _ObjectCollector(grid) if b_idx is not None and not vector_p else None
    t_objects = _ObjectCollector(grid) if b_idx is not None and not vector_t else None
    if grid.crs is None and r_idx is not None:
        warnings.warn(
            f"{str(getattr(t_src if not vector_t else p_src, 'path', ''))!r} has no CRS; the "
            f"centerline tolerance {tolerance:g} m is measured taking the transform's units "
            "(pixels for an identity transform) as metres.",
            UserWarning, stacklevel=3,
        )
    halo = _halo_px(grid, tolerance)
    cl = [0, 0, 0, 0]
    for y0, x0, height, width in _windows(grid.height, grid.width, window_size):
        p = p_src.read(y0, x0, height, width)
        t = t_src.read(y0, x0, height, width)
        cm.update(p, t)
        if b_idx is not None:
            if p_objects is not None:
                p_objects.add(p == b_idx, y0, x0)
            if t_objects is not None:
                t_objects.add(t == b_idx, y0, x0)
        if r_idx is not None:
            hy0, hx0 = max(0, y0 - halo), max(0, x0 - halo)
            hy1 = min(grid.height, y0 + height + halo)
            hx1 = min(grid.width, x0 + width + halo)
            if (hy0, hx0, hy1, hx1) == (y0, x0, y0 + height, x0 + width):
                ph, th = p, t
            else:
                ph = p_src.read(hy0, hx0, hy1 - hy0, hx1 - hx0)
                th = t_src.read(hy0, hx0, hy1 - hy0, hx1 - hx0)
            valid = (ph != NODATA_CLASS) & (th != NODATA_CLASS)
            core = (slice(y0 - hy0, y0 - hy0 + height), slice(x0 - hx0, x0 - hx0 + width))
            col_m, row_m = grid.pixel_sides_m(x0 + width / 2, y0 + height / 2)
            sampling = (row_m, col_m)  # distance_transform_edt: (rows, cols)
            counts = _centerline_counts((ph == r_idx) & valid, (th == r_idx) & valid, valid,
                                        core, sampling, tolerance)
            cl = [a + b for a, b in zip(cl, counts)]
    objects = None
    if b_idx is not None:
        pred_polys = p_src.objects(b_idx) if vector_p else p_objects.finish()
        true_polys = t_src.objects(b_idx) if vector_t else t_objects.finish()
        objects = match_objects(pred_polys, true_polys, iou_threshold)
    centerline = CenterlineScores(*cl, tolerance=tolerance) if r_idx is not None else None
    return EvaluationReport(
        classes=names, pixel=tuple(cm.scores()),
        confusion=tuple(tuple(int(v) for v in row) for row in cm.counts),
        objects=objects, centerline=centerline, pred=pred, truth=truth,
    )
