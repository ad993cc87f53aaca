"""ConfusionMatrix and ClassScores: counts, ratios, nodata and class checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geounet.errors import InputError
from geounet.training.metrics import ClassScores, ConfusionMatrix, CountScores, json_score

CLASSES = ("background", "buildings", "roads")


def test_scores_from_counts():
    truth = np.array([[0, 0, 1, 1], [2, 2, 2, 255]])
    pred = np.array([[0, 1, 1, 0], [2, 2, 0, 1]])
    cm = ConfusionMatrix(CLASSES)
    cm.update(pred, truth)
    s = {c.name: c for c in cm.scores()}
    assert (s["buildings"].tp, s["buildings"].fp, s["buildings"].fn) == (1, 1, 1)
    assert s["buildings"].iou == pytest.approx(1 / 3) and s["buildings"].f1 == 0.5
    assert (s["roads"].tp, s["roads"].fp, s["roads"].fn) == (2, 0, 1)
    assert s["roads"].precision == 1.0 and s["roads"].recall == pytest.approx(2 / 3)
    assert cm.counts.sum() == 7  # the nodata pixel is ignored


def test_windows_sum_to_whole():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, (50, 70))
    pred = rng.integers(0, 3, (50, 70))
    truth[rng.random((50, 70)) < 0.1] = 255
    whole = ConfusionMatrix(CLASSES)
    whole.update(pred, truth)
    parts = ConfusionMatrix(CLASSES)
    for y in range(0, 50, 16):
        for x in range(0, 70, 16):
            parts.update(pred[y:y + 16, x:x + 16], truth[y:y + 16, x:x + 16])
    np.testing.assert_array_equal(parts.counts, whole.counts)


def test_empty_class_is_nan_and_unknown_class_raises():
    cm = ConfusionMatrix(CLASSES)
    cm.update(np.zeros((2, 2), int), np.zeros((2, 2), int))
    assert math.isnan(cm.scores()[2].iou) and math.isnan(cm.mean_iou())
    with pytest.raises(InputError, match="class 5"):
        cm.update(np.full((2, 2), 5), np.zeros((2, 2), int))
    with pytest.raises(InputError, match="shape"):
        cm.update(np.zeros((2, 3), int), np.zeros((2, 2), int))


def test_pixel_and_object_scores_share_one_definition():
    from geounet.evaluation import ObjectScores

    pixel = ClassScores("buildings", tp=6, fp=2, fn=4)
    objects = ObjectScores(tp=6, fp=2, fn=4, iou_threshold=0.5)
    assert isinstance(pixel, CountScores) and isinstance(objects, CountScores)
    assert (pixel.precision, pixel.recall) == (objects.precision, objects.recall) == (0.75, 0.6)
    assert pixel.f1 == objects.f1 == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert pixel.iou == 0.5
    empty = ObjectScores(tp=0, fp=0, fn=0, iou_threshold=0.5)
    assert math.isnan(empty.precision) and empty.to_dict()["f1"] is None
    assert json_score(float("nan")) is None and json_score(1 / 3) == 0.333333
