"""Building objects: traced per window and merged across window seams
(:class:`ObjectCollector`), then matched one-to-one by IoU (:func:`match_objects`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from geounet.evaluation.report import ObjectScores
from geounet.evaluation.sources import Grid


class ObjectCollector:
    """Collects per-window polygons; those touching an interior seam are merged at the end."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.done: list[Any] = []
        self.pending: list[Any] = []

    def add(self, mask: np.ndarray, y0: int, x0: int) -> None:
        from rasterio.features import shapes
        from rasterio.windows import Window
        from rasterio.windows import transform as window_transform
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

