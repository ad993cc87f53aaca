"""One training resolution for chips at several ground resolutions (zoom levels of a pyramid).

The rule (docs/training.md, "Mixed resolutions"):

- each georeferenced chip's pixel size is read (metres, :func:`geounet.georef.pixel_size_m`);
- sizes are grouped from the finest up: a chip joins the current group when its size is within
  :data:`TOLERANCE` (10 %) of the group's finest member, else it starts a new group;
- the training resolution is the median size of the group with the most chips (ties: the
  finest group), unless the user gives ``pixel_size``;
- chips within the tolerance of the training resolution are read as they are; the others are
  resampled to it when loaded (:func:`read_resampled`: the image with the kernels predict's
  warp uses by default, Lanczos when enlarging and bilinear when shrinking, the mask with
  nearest neighbour), so every chip is seen at the card's scale;
- chips without georeferencing have no pixel size: they are read as they are (as before), and
  the log says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from geounet.errors import InputError

TOLERANCE = 0.10
"""Relative difference of pixel sizes treated as one resolution (no resampling)."""


def chip_pixel_size(img: Any) -> float | None:
    """Metres per pixel of an open rasterio chip (None without georeferencing)."""
    from geounet.georef import pixel_size_m

    if img.crs is None or img.transform.is_identity:
        return None
    return pixel_size_m(img.crs, tuple(img.transform)[:6], img.width, img.height)


def _groups(sizes: Sequence[float]) -> list[list[float]]:
    groups: list[list[float]] = []
    for size in sorted(sizes):
        if groups and size <= groups[-1][0] * (1.0 + TOLERANCE):
            groups[-1].append(size)
        else:
            groups.append([size])
    return groups


@dataclass(frozen=True)
class Resolution:
    """The training resolution chosen for a set of chips.

    Attributes
    ----------
    pixel_size : metres per pixel trained at (None: no chip is georeferenced).
    factors : per chip (in the order given), how many training pixels one chip pixel
        becomes (``chip size / pixel_size``); 1.0 for chips read as they are.
    found : ``(size, count)`` per resolution group, finest first.
    chosen_by : ``"most common"`` or ``"given"``.
    unreferenced : chips without georeferencing (read as they are).
    """

    pixel_size: float | None
    factors: tuple[float, ...]
    found: tuple[tuple[float, int], ...]
    chosen_by: str
    unreferenced: int

    @property
    def resampled(self) -> int:
        """Chips resampled to the training resolution when loaded."""
        return sum(f != 1.0 for f in self.factors)

    def describe(self) -> str:
        """The log line, e.g. ``chips at 0.075 m (112), 0.15 m (28): training at 0.075 m
        (most common); 28 chips resampled``."""
        if self.pixel_size is None:
            return (f"{self.unreferenced} chips without georeferencing: trained as they are; "
                    "the model card has no pixel size")
        found = ", ".join(f"{size:.3g} m ({n})" for size, n in self.found)
        line = (f"chips at {found}: training at {self.pixel_size:.3g} m ({self.chosen_by}); "
                f"{self.resampled} chips resampled")
        if self.unreferenced:
            line += (f"; {self.unreferenced} chips without georeferencing are trained as they "
                     "are")
        return line


def choose_resolution(sizes: Sequence[float | None], pixel_size: float | None = None
                      ) -> Resolution:
    """The training resolution of chips with pixel sizes ``sizes`` (None = not referenced).

    Examples
    --------
    >>> r = choose_resolution([0.075, 0.076, 0.15, 0.3, None])
    >>> round(r.pixel_size, 4), round(r.factors[2], 2), r.resampled
    (0.0755, 1.99, 2)
    """
    known = [s for s in sizes if s is not None]
    groups = _groups(known)
    found = tuple((float(np.median(g)), len(g)) for g in groups)
    if pixel_size is not None:
        if not (pixel_size > 0 and np.isfinite(pixel_size)):
            raise InputError(f"pixel size {pixel_size} must be > 0 metres; e.g. 0.3.")
        chosen, chosen_by = float(pixel_size), "given"
    elif groups:
        best = max(range(len(groups)), key=lambda i: (len(groups[i]), -i))
        chosen, chosen_by = found[best][0], "most common"
    else:
        chosen, chosen_by = None, ""
    factors = []
    for size in sizes:
        if size is None or chosen is None or abs(size / chosen - 1.0) <= TOLERANCE:
            factors.append(1.0)
        else:
            factors.append(size / chosen)
    return Resolution(chosen, tuple(factors), found, chosen_by,
                      sum(s is None for s in sizes))


def resampled_shape(height: int, width: int, factor: float) -> tuple[int, int]:
    """Chip shape at the training resolution."""
    if factor == 1.0:
        return height, width
    return max(1, int(round(height * factor))), max(1, int(round(width * factor)))


def read_resampled(rec: Any, img: Any, factor: float,
                   labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The whole chip (image float32 (C, H', W'), mask uint8 (H', W')) at the training
    resolution, ``factor`` training pixels per chip pixel (``labels``: the chip's labels to
    resample instead of its mask, e.g. packed with instance ids).

    The image is read through GDAL's resampling with the kernels of predict's ``auto`` warp
    (:func:`geounet.raster.fitting.plan_resample`: Lanczos when enlarging, bilinear when
    shrinking); the mask's nearest-neighbour
    source pixel is taken for each output pixel centre, so class values and 255 survive.
    """
    from rasterio.enums import Resampling

    from geounet.raster.fitting import auto_resampling
    from geounet.training.record import read_target

    height, width = resampled_shape(img.height, img.width, factor)
    kernel = Resampling[auto_resampling(factor, 1.0)]  # factor > 1: chip coarser
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = img.read(out_shape=(img.count, height, width), resampling=kernel)
    mask = read_target(rec, img) if labels is None else labels
    rows = np.minimum(((np.arange(height) + 0.5) * img.height / height).astype(np.int64),
                      img.height - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * img.width / width).astype(np.int64),
                      img.width - 1)
    return image.astype(np.float32), mask[rows[:, None], cols[None, :]]
