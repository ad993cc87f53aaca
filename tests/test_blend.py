"""Tests for geounet.engine.blend: tapered windows and normalized weighted accumulation."""

from __future__ import annotations

import numpy as np
import pytest

from geounet.engine.blend import BlendAccumulator, weight_window
from geounet.errors import InputError


@pytest.mark.parametrize("kind", ["hann", "spline", "uniform"])
@pytest.mark.parametrize("size", [1, 7, 64])
def test_window_positive_symmetric_float32(kind: str, size: int) -> None:
    w = weight_window(size, kind)  # type: ignore[arg-type]
    assert w.shape == (size, size) and w.dtype == np.float32
    assert w.min() > 0 and w.max() <= 1.0
    np.testing.assert_allclose(w, w.T)
    np.testing.assert_allclose(w, w[::-1, ::-1], atol=1e-7)


@pytest.mark.parametrize("kind", ["hann", "spline"])
def test_window_tapers(kind: str) -> None:
    w = weight_window(64, kind)  # type: ignore[arg-type]
    centre = w[32, 32]
    assert w[0, 32] < 0.01 * centre and w[0, 0] < w[0, 32]
    assert np.all(np.diff(w[32, :32]) > 0)  # rises monotonically towards the centre


def test_unknown_window() -> None:
    with pytest.raises(InputError, match="hann"):
        weight_window(8, "gauss")  # type: ignore[arg-type]


def test_accumulator_is_normalized_weighted_mean() -> None:
    rng = np.random.default_rng(0)
    acc = BlendAccumulator(num_classes=2, height=10, width=12)
    tiles = []
    for y0, x0 in [(-3, -3), (-3, 5), (4, -3), (4, 5)]:
        values = rng.random((2, 9, 9)).astype(np.float32)
        window = rng.random((9, 9)).astype(np.float32) + 0.1
        acc.add(values, y0, x0, window)
        tiles.append((values, y0, x0, window))
    probs, valid = acc.result()
    # brute force reference in float64
    num = np.zeros((2, 10, 12))
    den = np.zeros((10, 12))
    for values, y0, x0, window in tiles:
        for y in range(9):
            for x in range(9):
                if 0 <= y0 + y < 10 and 0 <= x0 + x < 12:
                    num[:, y0 + y, x0 + x] += values[:, y, x] * window[y, x]
                    den[y0 + y, x0 + x] += window[y, x]
    assert valid.all()
    np.testing.assert_allclose(probs, num / den, rtol=1e-5)
    assert acc.sum.dtype == np.float32 and acc.sum.shape == (2, 10, 12)


def test_nodata_carries_zero_weight() -> None:
    acc = BlendAccumulator(num_classes=1, height=4, width=4)
    window = weight_window(4, "hann")
    good = np.full((1, 4, 4), 0.25, np.float32)
    bad = np.full((1, 4, 4), 0.9, np.float32)
    invalid = np.zeros((4, 4), bool)
    acc.add(good, 0, 0, window)
    acc.add(bad, 0, 0, window, invalid)  # a tile whose pixels are nodata changes nothing
    probs, valid = acc.result()
    np.testing.assert_allclose(probs, 0.25, rtol=1e-6)
    nothing = BlendAccumulator(num_classes=1, height=2, width=2)
    nothing.add(bad, 0, 0, window, invalid)
    probs, valid = nothing.result()
    assert not valid.any() and (probs == 0).all()
