"""Segmentation scores from accumulated confusion counts: precision, recall, IoU, F1 per class.

Counts are summed over every pixel of a scene or an epoch (never averaged per tile), so a
chunked evaluation gives exactly the whole-scene numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from geounet.config import NODATA_CLASS
from geounet.errors import InputError

NODATA = NODATA_CLASS
"""Class-mask value of pixels without a label or prediction (:data:`geounet.config.NODATA_CLASS`)."""


def ratio(num: float, den: float) -> float:
    """``num / den``, or ``nan`` when ``den`` is 0 (an undefined score, never a fake 0 or 1)."""
    return float(num) / float(den) if den > 0 else float("nan")


def harmonic_mean(precision: float, recall: float) -> float:
    """F1 from precision and recall; ``nan`` when either is undefined or both are 0."""
    if np.isnan(precision) or np.isnan(recall) or precision + recall == 0:
        return float("nan")
    return 2.0 * precision * recall / (precision + recall)


def json_score(value: float | None) -> float | None:
    """A score for JSON: ``nan`` becomes ``None`` (``null``), others are rounded to 6 digits."""
    return None if value is None or np.isnan(value) else round(float(value), 6)


def mean_iou(scores: Sequence[ClassScores], *, foreground_only: bool = True) -> float:
    """Mean IoU over the classes that occur (truth or prediction), skipping index 0 by default;
    ``nan`` when none occurs."""
    values = [s.iou for s in scores[(1 if foreground_only else 0):] if not np.isnan(s.iou)]
    return float(np.mean(values)) if values else float("nan")


class CountScores:
    """Precision, recall and F1 from the ``tp``, ``fp`` and ``fn`` counts of a subclass.

    The one definition of these ratios, shared by pixel scores (:class:`ClassScores`) and
    object scores (:class:`geounet.evaluation.ObjectScores`).
    """

    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        """tp / (tp + fp)."""
        return ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        """tp / (tp + fn)."""
        return ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        """2 tp / (2 tp + fp + fn) (Dice; the harmonic mean of precision and recall)."""
        return ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)


@dataclass(frozen=True)
class ClassScores(CountScores):
    """Pixel scores of one class; ``nan`` where a ratio has a zero denominator.

    Attributes
    ----------
    name : class name.
    tp, fp, fn : pixel counts.
    """

    name: str
    tp: int
    fp: int
    fn: int

    @property
    def iou(self) -> float:
        """tp / (tp + fp + fn) (Jaccard)."""
        return ratio(self.tp, self.tp + self.fp + self.fn)

    @property
    def support(self) -> int:
        """Pixels of this class in the truth."""
        return self.tp + self.fn

    def to_dict(self) -> dict[str, float | int | str | None]:
        """Plain JSON-ready dict (``nan`` becomes ``None``)."""
        return {
            "name": self.name, "tp": self.tp, "fp": self.fp, "fn": self.fn,
            "support": self.support, "precision": json_score(self.precision),
            "recall": json_score(self.recall), "iou": json_score(self.iou),
            "f1": json_score(self.f1),
        }


class ConfusionMatrix:
    """Accumulates a ``(K, K)`` confusion matrix (rows truth, columns prediction).

    Pixels where either side is 255 (nodata) are ignored; any other value outside
    ``0..K-1`` raises :class:`~geounet.errors.InputError`.

    Examples
    --------
    >>> cm = ConfusionMatrix(("background", "buildings"))
    >>> cm.update(np.array([[0, 1]]), np.array([[0, 1]]))
    >>> cm.scores()[1].iou
    1.0
    """

    def __init__(self, classes: Sequence[str]) -> None:
        self.classes = tuple(classes)
        if not 1 <= len(self.classes) <= 255:
            raise InputError(f"{len(self.classes)} classes; give between 1 and 255 class names.")
        self.counts = np.zeros((len(self.classes), len(self.classes)), dtype=np.int64)

    @property
    def num_classes(self) -> int:
        """Number of classes K."""
        return len(self.classes)

    def update(self, pred: np.ndarray, truth: np.ndarray) -> None:
        """Add the pixels of one window (same shape; 255 = nodata on either side)."""
        pred = np.asarray(pred)
        truth = np.asarray(truth)
        if pred.shape != truth.shape:
            raise InputError(
                f"prediction shape {pred.shape} differs from truth shape {truth.shape}; "
                "compare windows of the same grid."
            )
        keep = (pred != NODATA) & (truth != NODATA)
        p = pred[keep].astype(np.int64)
        t = truth[keep].astype(np.int64)
        k = self.num_classes
        for side, values in (("prediction", p), ("truth", t)):
            if values.size and (values.min() < 0 or values.max() >= k):
                bad = int(values.max()) if values.max() >= k else int(values.min())
                raise InputError(
                    f"{side} holds class {bad} but only {k} classes {self.classes} are known; "
                    "give the class names that match the masks."
                )
        self.counts += np.bincount(t * k + p, minlength=k * k).reshape(k, k)

    def merge(self, other: ConfusionMatrix) -> None:
        """Add another matrix's counts (same classes)."""
        if other.classes != self.classes:
            raise InputError(f"classes {other.classes} differ from {self.classes}; cannot merge.")
        self.counts += other.counts

    def scores(self) -> list[ClassScores]:
        """Per-class scores, in class order."""
        tp = np.diag(self.counts)
        fp = self.counts.sum(axis=0) - tp
        fn = self.counts.sum(axis=1) - tp
        return [ClassScores(name, int(tp[i]), int(fp[i]), int(fn[i]))
                for i, name in enumerate(self.classes)]

    @property
    def accuracy(self) -> float:
        """Overall pixel accuracy."""
        return ratio(np.trace(self.counts), self.counts.sum())

    def mean_iou(self, *, foreground_only: bool = True) -> float:
        """Mean IoU over classes with any truth or prediction (skipping index 0 by default)."""
        return mean_iou(self.scores(), foreground_only=foreground_only)


OBJECT_IOU = 0.5
"""IoU a predicted and a true object need to match (SpaceNet rule)."""


def object_counts(pred: np.ndarray, truth: np.ndarray, *, iou_threshold: float = OBJECT_IOU
                  ) -> tuple[int, int, int]:
    """Matched (tp), unmatched predicted (fp) and unmatched true (fn) objects of two masks.

    Objects are the 4-connected components of each boolean mask; a predicted and a true
    object match one-to-one, greedily by decreasing IoU, when their IoU is at least
    ``iou_threshold``. This is the rule of :func:`geounet.evaluation.match_objects` computed
    on pixels: its polygons are traced pixel outlines, so their areas and intersections are
    these pixel counts (``tests/test_object_f1.py`` checks the two agree).

    Examples
    --------
    >>> t = np.zeros((6, 6), bool); t[0:2, 0:2] = t[4:6, 4:6] = True
    >>> p = np.zeros((6, 6), bool); p[0:2, 0:3] = True
    >>> object_counts(p, t)
    (1, 0, 1)
    """
    from scipy.ndimage import label

    cross = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    plab, n_pred = label(np.asarray(pred, bool), structure=cross)
    tlab, n_true = label(np.asarray(truth, bool), structure=cross)
    if n_pred == 0 or n_true == 0:
        return 0, int(n_pred), int(n_true)
    p_area = np.bincount(plab.ravel(), minlength=n_pred + 1)
    t_area = np.bincount(tlab.ravel(), minlength=n_true + 1)
    both = (plab > 0) & (tlab > 0)
    pairs, inter = np.unique(plab[both].astype(np.int64) * (n_true + 1) + tlab[both],
                             return_counts=True)
    pi, ti = pairs // (n_true + 1), pairs % (n_true + 1)
    iou = inter / (p_area[pi] + t_area[ti] - inter)
    keep = iou >= iou_threshold
    order = np.argsort(-iou[keep], kind="stable")
    used_p: set[int] = set()
    used_t: set[int] = set()
    for i, j in zip(pi[keep][order], ti[keep][order]):
        if i not in used_p and j not in used_t:
            used_p.add(int(i))
            used_t.add(int(j))
    tp = len(used_p)
    return tp, int(n_pred) - tp, int(n_true) - tp


class ObjectCounter:
    """Sums :func:`object_counts` of one class over windows; ``f1`` at the end.

    Pixels where the truth is 255 (nodata) are left out of both masks.
    """

    def __init__(self, class_index: int, iou_threshold: float = OBJECT_IOU) -> None:
        self.class_index = class_index
        self.iou_threshold = iou_threshold
        self.tp = self.fp = self.fn = 0

    def update(self, pred: np.ndarray, truth: np.ndarray) -> None:
        """Add the objects of one window (pred and truth class masks, same shape)."""
        labelled = truth != NODATA
        tp, fp, fn = object_counts((pred == self.class_index) & labelled,
                                   truth == self.class_index,
                                   iou_threshold=self.iou_threshold)
        self.tp, self.fp, self.fn = self.tp + tp, self.fp + fp, self.fn + fn

    @property
    def f1(self) -> float:
        """Object F1 (``nan`` when neither side has an object)."""
        return ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)
