"""Reading training chips: windows of a chip at the training resolution, with an optional
cache of decoded chips (``TrainConfig.cache_chips``) and the building instances a
contact-class model needs (:mod:`geounet.training.contact`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geounet.training.record import ChipRecord, read_instances, read_target

RESAMPLED_CACHE = 16
"""Resampled chips kept in memory without the chip cache (a 256 px chip at 4x: ~13 MB as
float32): each is read and resampled once per chip, not once per sample."""


def open_image(path: Path) -> Any:
    """The chip image opened with rasterio (no warning for a missing georeference)."""
    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        return rasterio.open(path)


def chip_shape(path: Path) -> tuple[int, int, float | None, int, int]:
    """Height, width, pixel size (metres, None without georeferencing), band count and
    bytes per pixel value of a chip image."""
    from geounet.training.resolution import chip_pixel_size

    with open_image(path) as src:
        return (src.height, src.width, chip_pixel_size(src), src.count,
                np.dtype(src.dtypes[0]).itemsize)


class ChipReader:
    """Windows of the chips of ``records`` at the training resolution.

    ``factors`` are the training pixels per chip pixel (1.0: read as is). A chip that is
    resampled is read whole once and kept (the :data:`RESAMPLED_CACHE` most recent ones;
    every chip, whole, with ``cache``). ``size`` is the largest window side (the model's
    output). ``building`` (a class name) adds that class's
    instance ids to the labels, packed with the class mask
    (:func:`geounet.training.contact.pack`).
    """

    def __init__(self, records: Sequence[ChipRecord], factors: Sequence[float],
                 shapes: Sequence[tuple[int, int, float | None, int, int]], *,
                 size: int, cache: bool = False, building: str | None = None) -> None:
        self.records = list(records)
        self.size = size
        self.factors = list(factors)
        self.shapes = list(shapes)
        self.cache = cache
        self.building = building
        self.chips: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def shape(self, chip: int) -> tuple[int, int]:
        """Height and width of chip ``chip`` at the training resolution."""
        from geounet.training.resolution import resampled_shape

        return resampled_shape(*self.shapes[chip][:2], self.factors[chip])

    def decoded_bytes(self) -> int:
        """Memory all chips take decoded at the training resolution (what ``cache`` keeps)."""
        total = 0
        for chip, (_, _, _, count, itemsize) in enumerate(self.shapes):
            height, width = self.shape(chip)
            value = 4 if self.factors[chip] != 1.0 else itemsize  # resampled: float32
            total += height * width * (count * value + (4 if self.building else 1))
        return total

    def labels(self, rec: ChipRecord, img: Any, window: Any = None) -> np.ndarray:
        """The class mask (uint8), or with ``building`` the packed mask and instances (int32)."""
        mask = read_target(rec, img, window)
        if self.building is None:
            return mask
        from geounet.training.contact import pack

        return pack(mask, read_instances(rec, img, window, self.building))

    def whole(self, chip: int) -> tuple[np.ndarray, np.ndarray]:
        """Chip ``chip`` (image, labels) at the training resolution, from memory or read."""
        from geounet.training.resolution import read_resampled

        hit = self.chips.pop(chip, None)
        if hit is None:
            rec, factor = self.records[chip], self.factors[chip]
            with open_image(rec.image) as img:
                if factor != 1.0:
                    hit = read_resampled(rec, img, factor, labels=self.labels(rec, img))
                else:
                    hit = (img.read(), self.labels(rec, img))
            while not self.cache and len(self.chips) >= RESAMPLED_CACHE:
                self.chips.pop(next(iter(self.chips)))
        self.chips[chip] = hit  # most recent last
        return hit

    def crop(self, chip: int, y0: int, x0: int,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Image (float32) and labels of the window of at most :attr:`size` px at
        ``(y0, x0)`` of chip ``chip`` (``y0 < 0``: a random crop drawn from ``rng``)."""
        from rasterio.windows import Window

        size = self.size
        height, width = self.shape(chip)
        if y0 < 0:
            y0 = int(rng.integers(0, max(0, height - size) + 1))
            x0 = int(rng.integers(0, max(0, width - size) + 1))
        rows = slice(y0, y0 + min(size, height - y0))
        cols = slice(x0, x0 + min(size, width - x0))
        if self.cache or self.factors[chip] != 1.0:
            image, labels = self.whole(chip)
            # copies: the augmentations must not change the kept chip
            return image[:, rows, cols].astype(np.float32), labels[rows, cols].copy()
        rec = self.records[chip]
        window = Window(x0, y0, cols.stop - x0, rows.stop - y0)
        with open_image(rec.image) as img:
            return img.read(window=window).astype(np.float32), self.labels(rec, img, window)
