"""The map of raw band values into a model's value range (:class:`Rescale`), applied as
pixels are read: linear (``bits``, ``percentile``) or piecewise linear through percentiles
(``match``). How a map is chosen for a scene is :mod:`geounet.raster.fitting`'s."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from geounet.errors import InputError


@dataclass(frozen=True)
class Rescale:
    """A map of raw band values into a model's value range, applied as pixels are read.

    Linear: ``out = clip((x - low) / (high - low), 0, 1) * (out_high - out_low) + out_low``
    per band. With ``knots`` (``--rescale match``): per band, piecewise linear through the
    points ``(raw, model)`` (the scene's percentiles onto the training data's), extended past
    the end points along the end segments, then clipped to ``out_low..out_high``. Rounded to
    ``dtype`` when it is an integer type.

    Parameters
    ----------
    bands : 1-based scene bands the map is for.
    low, high : per band, the raw values mapped to ``out_low`` and ``out_high``.
    out_low, out_high : the model's training value range.
    dtype : type of the values read (the model card's).
    method : how the map was chosen (for logs and the run record), e.g. ``percentile:2,98``.
    knots : per band ``(raw values, model values)``, both rising; empty for a linear map.
    """

    bands: tuple[int, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    out_low: float
    out_high: float
    dtype: str
    method: str = ""
    knots: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...] = ()

    def apply(self, data: np.ndarray, bands: Sequence[int]) -> np.ndarray:
        """Map ``data`` (band, y, x) whose planes are the scene ``bands``."""
        index = {b: i for i, b in enumerate(self.bands)}
        missing = [b for b in bands if b not in index]
        if missing:
            raise InputError(
                f"band(s) {missing} have no rescale parameters (computed for bands "
                f"{list(self.bands)}); read the bands the rescale was planned for."
            )
        rows = [index[b] for b in bands]
        if self.knots:
            out = np.stack([_piecewise(data[i], *self.knots[row])
                            for i, row in enumerate(rows)]).astype(np.float32)
            np.clip(out, self.out_low, self.out_high, out=out)
            kind = np.dtype(self.dtype)
            return np.rint(out).astype(kind) if np.issubdtype(kind, np.integer) else \
                out.astype(kind, copy=False)
        low = np.asarray([self.low[i] for i in rows], dtype=np.float32).reshape(-1, 1, 1)
        high = np.asarray([self.high[i] for i in rows], dtype=np.float32).reshape(-1, 1, 1)
        span = np.maximum(high - low, np.float32(1e-12))
        out = (data.astype(np.float32) - low) / span
        np.clip(out, 0.0, 1.0, out=out)
        out = out * np.float32(self.out_high - self.out_low) + np.float32(self.out_low)
        kind = np.dtype(self.dtype)
        if np.issubdtype(kind, np.integer):
            return np.rint(out).astype(kind)
        return out.astype(kind, copy=False)


def _piecewise(x: np.ndarray, xs: Sequence[float], ys: Sequence[float]) -> np.ndarray:
    """``x`` through the rising points ``(xs, ys)``, linear between them and past the ends
    along the end segments (one point: a shift)."""
    xs_a, ys_a = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    values = x.astype(np.float64)
    if xs_a.size == 1:
        return values + (ys_a[0] - xs_a[0])
    out = np.interp(values, xs_a, ys_a)
    first = (ys_a[1] - ys_a[0]) / (xs_a[1] - xs_a[0])
    last = (ys_a[-1] - ys_a[-2]) / (xs_a[-1] - xs_a[-2])
    below, above = values < xs_a[0], values > xs_a[-1]
    out[below] = ys_a[0] + (values[below] - xs_a[0]) * first
    out[above] = ys_a[-1] + (values[above] - xs_a[-1]) * last
    return out
