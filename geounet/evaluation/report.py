"""The scores of an evaluation: object and centerline scores, the report (JSON, table) and the
check that its JSON file can be written."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geounet.errors import InputError, OutputExistsError, option
from geounet.training.metrics import (
    ClassScores,
    CountScores,
    harmonic_mean,
    json_score,
    mean_iou,
    ratio,
)


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
class AplsScores:
    """APLS (Average Path Length Similarity, SpaceNet 3) of a predicted road graph.

    Attributes
    ----------
    apls : harmonic mean of the two halves, 0 when either is 0.
    truth_to_pred : 1 - mean path penalty over pairs of truth control nodes (paths on the
        truth, and between their snapped nodes on the prediction).
    pred_to_truth : the same with the roles swapped.
    truth_paths, pred_paths : node pairs scored in each half.
    truth_length_m, pred_length_m : total road length of each graph.
    spacing, snap, min_path_length : metres: control-node spacing, the farthest a control
        node is snapped onto the other graph, the shortest path scored.
    """

    apls: float
    truth_to_pred: float
    pred_to_truth: float
    truth_paths: int
    pred_paths: int
    truth_length_m: float
    pred_length_m: float
    spacing: float
    snap: float
    min_path_length: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {name: (json_score(value) if isinstance(value, float) else value)
                for name, value in self.__dict__.items()}


@dataclass(frozen=True)
class Coverage:
    """How much of the truth the prediction covers: its labelled (not nodata) pixels on the
    scoring grid, and how many of them have a valid prediction pixel (the ones scored)."""

    scored: int
    labelled: int

    @property
    def fraction(self) -> float:
        """``scored / labelled`` (nan when the truth labels nothing)."""
        return ratio(self.scored, self.labelled)

    def to_dict(self) -> dict[str, Any]:
        return {"scored": self.scored, "labelled": self.labelled,
                "fraction": json_score(self.fraction)}


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
    apls : road graph scores (None when no road graph was scored).
    coverage : the share of the truth's labelled pixels the prediction covers (only those
        are scored); ``evaluate`` warns below :data:`geounet.evaluation.scoring.COVERAGE_WARN`.
    """

    classes: tuple[str, ...]
    pixel: tuple[ClassScores, ...]
    confusion: tuple[tuple[int, ...], ...]
    objects: ObjectScores | None
    centerline: CenterlineScores | None
    pred: str = ""
    truth: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    apls: AplsScores | None = None
    coverage: Coverage | None = None

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
            "apls": None if self.apls is None else self.apls.to_dict(),
            "coverage": None if self.coverage is None else self.coverage.to_dict(),
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
                 f"{'support':>11}"] if self.pixel else []
        for s in self.pixel:
            lines.append(f"{s.name:<12} {_fmt(s.precision)} {_fmt(s.recall)} {_fmt(s.iou)} "
                         f"{_fmt(s.f1)} {s.support:>11d}")
        if self.pixel:
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
        if self.apls is not None:
            a = self.apls
            lines.append(f"roads graph APLS (control nodes every {a.spacing:g} m, snap "
                         f"{a.snap:g} m): {_fmt(a.apls).strip()}  (truth->pred "
                         f"{_fmt(a.truth_to_pred).strip()}, pred->truth "
                         f"{_fmt(a.pred_to_truth).strip()}; {a.truth_length_m / 1000:.1f} km "
                         f"true, {a.pred_length_m / 1000:.1f} km predicted)")
        cover = self.coverage
        if cover is not None and cover.labelled and cover.scored < cover.labelled:
            lines.append(f"coverage: the prediction covers {cover.fraction:.1%} of the truth's "
                         f"labelled pixels ({cover.scored:,} of {cover.labelled:,}); the rest "
                         "is not scored")
        return "\n".join(lines)


def check_json_output(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Fail early when the JSON report cannot be written at ``path`` (exists, no folder)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"scores file {str(path)!r} already exists; pass {option('overwrite', True)} to "
            "replace it, or choose another path."
        )
    if not path.parent.is_dir():
        raise InputError(
            f"folder {str(path.parent)!r} of the scores file does not exist; create it first."
        )
    return path


def _fmt(value: float) -> str:
    return f"{'-':>9}" if np.isnan(value) else f"{value:>9.4f}"

