"""Chip records, normalization stats, and padded, augmented training samples.

Which files pair up, what mask values mean, the classes and the split are decided by
:func:`geounet.training.layout.open_dataset` (any common layout: ``images/`` + ``masks/`` as
``geounet chips`` writes, ``NAME.tif`` + ``NAME.mask.tif``, per-chip GeoJSON, ...); this
module reads the records it returns.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geounet.config import DEFAULT_CLASSES, PERCENTILE_LEVELS
from geounet.errors import LabelError
from geounet.training.chips import CHIPS_META, NODATA
from geounet.training.layout import open_dataset
from geounet.training.pairing import RASTER_SUFFIXES
from geounet.training.record import ChipRecord, read_target

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChipStats:
    """What the training chips hold: band stats for normalization and the model card.

    Attributes
    ----------
    count : bands per chip.
    dtype : data type of the image chips.
    mean, std : per band, over labelled pixels of the training chips, raw units.
    value_range : (min, max) raw value seen.
    pixel_size : the training resolution in metres per pixel, chosen from every chip's
        transform by :func:`geounet.training.resolution.choose_resolution` (geodesic for a
        geographic CRS, :mod:`geounet.georef`), None when no chip has a CRS.
    max_size : largest chip side among the chips read as they are (at the training
        resolution already); when every chip is resampled, the largest resampled side.
    class_pixels : labelled pixels per class over the training chips.
    percentiles : per band, the values at :data:`geounet.config.PERCENTILE_LEVELS` over the
        same pixels as ``mean``/``std`` (the card's, for ``--rescale match``).
    """

    count: int
    dtype: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    value_range: tuple[float, float]
    pixel_size: float | None
    max_size: int
    class_pixels: tuple[int, ...]
    resolution: Any = None  # geounet.training.resolution.Resolution
    percentiles: tuple[tuple[float, ...], ...] = ()


def read_classes(chips_dir: str | os.PathLike[str]) -> tuple[str, ...]:
    """Class names of a chips directory: ``chips.json``, mask tags, else the default three."""
    chips_dir = Path(chips_dir)
    meta = chips_dir / CHIPS_META
    if meta.exists():
        classes = json.loads(meta.read_text()).get("classes")
        if classes:
            return tuple(str(c) for c in classes)
    return DEFAULT_CLASSES


def find_chips(
    chips_dir: str | os.PathLike[str], *, val_fraction: float = 0.2, seed: int = 0
) -> list[ChipRecord]:
    """List the chip pairs of ``chips_dir`` with their split (default layout rules).

    See :func:`geounet.training.layout.open_dataset`, which this calls with the default
    :class:`~geounet.training.layout.DatasetConfig`.

    Raises
    ------
    LabelError : no pairs, unreadable or ambiguous masks, or a bad split file.
    """
    return list(open_dataset(chips_dir, val_fraction=val_fraction, seed=seed).records)


def _check_mask_grid(rec: ChipRecord, img: Any) -> None:
    """A georeferenced raster mask must sit on its image's grid (one without takes it)."""
    import rasterio

    if rec.mask is None or rec.mask.suffix.lower() not in RASTER_SUFFIXES:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(rec.mask) as msk:
            if msk.crs is None or msk.transform.is_identity or img.crs is None:
                return
            if msk.crs != img.crs or not msk.transform.almost_equals(
                    img.transform, precision=abs(img.transform.a) * 1e-3):
                raise LabelError(
                    f"chip {rec.name!r}: mask {rec.mask.name!r} is georeferenced on another grid "
                    f"than its image ({msk.crs} {tuple(msk.transform)[:6]} vs {img.crs} "
                    f"{tuple(img.transform)[:6]}); give masks on the image grid (or without "
                    "georeferencing: they then take the image's)."
                )


class BandQuantiles:
    """Per-band percentiles over many chips in bounded memory: exact histograms for integer
    data of up to 16 bits (uint8, uint16: at most 65,536 bins a band), else a deterministic
    strided sample of at most :attr:`SAMPLE_CAP` values a band (halved by keeping every second
    value when it fills). Percentiles interpolate linearly between order statistics, as
    ``numpy.percentile`` does."""

    SAMPLE_CAP = 2**21

    def __init__(self, count: int, dtype: str) -> None:
        kind = np.dtype(dtype)
        self.exact = bool(np.issubdtype(kind, np.integer) and kind.itemsize <= 2)
        if self.exact:
            info = np.iinfo(kind)
            self.offset = int(info.min)
            self.hist = np.zeros((count, int(info.max) - self.offset + 1), np.int64)
        self.samples: list[np.ndarray] = [np.zeros(0) for _ in range(count)]
        self.step = 1

    def add(self, pixels: np.ndarray) -> None:
        """Count raw values ``pixels`` (band, n)."""
        if self.exact:
            for band, values in enumerate(pixels):
                self.hist[band] += np.bincount(values.astype(np.int64) - self.offset,
                                               minlength=self.hist.shape[1])
            return
        for band, values in enumerate(pixels):
            self.samples[band] = np.concatenate([self.samples[band], values[::self.step]])
        while self.samples[0].size > self.SAMPLE_CAP:
            self.samples = [v[::2] for v in self.samples]
            self.step *= 2

    def percentiles(self, levels: Sequence[float]) -> tuple[tuple[float, ...], ...]:
        """Per band, the value at each of ``levels`` (percent)."""
        if not self.exact:
            return tuple(tuple(float(v) for v in np.percentile(values, levels))
                         for values in self.samples)
        out = []
        for hist in self.hist:
            cum = np.cumsum(hist)
            pos = np.asarray(levels, np.float64) / 100.0 * (cum[-1] - 1)
            lo = np.searchsorted(cum, np.floor(pos), side="right")
            hi = np.searchsorted(cum, np.ceil(pos), side="right")
            values = lo + (pos - np.floor(pos)) * (hi - lo) + self.offset
            out.append(tuple(float(v) for v in values))
        return tuple(out)


def compute_stats(records: Sequence[ChipRecord], num_classes: int, *,
                  pixel_size: float | None = None) -> ChipStats:
    """Read every chip once: check pairs and classes; stats from the training chips.

    The training resolution is chosen from every chip's pixel size (``pixel_size`` overrides
    it; :mod:`geounet.training.resolution`); band stats are over the chips' own pixels.

    Raises
    ------
    LabelError : chips and masks that differ in size, mixed band counts or dtypes, mask
        values outside ``0..num_classes-1`` (255 allowed), or no labelled pixel.
    """
    import rasterio

    from geounet.training.resolution import chip_pixel_size, choose_resolution

    count = dtype = None
    total = np.zeros(0)
    sums = sumsq = None
    lo, hi = np.inf, -np.inf
    sizes: list[float | None] = []
    shapes: list[tuple[int, int]] = []
    class_pixels = np.zeros(num_classes, dtype=np.int64)
    for rec in records:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            img = rasterio.open(rec.image)
        with img:
            _check_mask_grid(rec, img)
            if count is None:
                count, dtype = img.count, img.dtypes[0]
                sums, sumsq = np.zeros(count), np.zeros(count)
                total = np.zeros(1)
                quantiles = BandQuantiles(count, dtype)
            elif (img.count, img.dtypes[0]) != (count, dtype):
                raise LabelError(
                    f"chip {rec.name!r} has {img.count} band(s) of {img.dtypes[0]} but earlier "
                    f"chips have {count} of {dtype}; all chips must come from alike scenes."
                )
            sizes.append(chip_pixel_size(img))
            shapes.append((img.height, img.width))
            mask = read_target(rec, img)
            labelled = _labelled(rec, mask, num_classes)
            if rec.split != "train":
                continue
            class_pixels += np.bincount(mask[labelled], minlength=num_classes)[:num_classes]
            image = img.read().astype(np.float64)
            pixels = image[:, labelled]
            if pixels.size:
                sums += pixels.sum(axis=1)
                sumsq += (pixels**2).sum(axis=1)
                total += pixels.shape[1]
                quantiles.add(pixels)
                lo, hi = min(lo, float(pixels.min())), max(hi, float(pixels.max()))
    if total.size == 0 or total[0] == 0:
        raise LabelError("the training chips have no labelled pixel; check the masks.")
    mean = sums / total[0]
    std = np.sqrt(np.maximum(sumsq / total[0] - mean**2, 0.0))
    std = np.where(std > 1e-6, std, 1.0)
    resolution = choose_resolution(sizes, pixel_size)
    max_size = _largest_side(shapes, resolution.factors)
    return ChipStats(int(count), str(dtype), tuple(float(m) for m in mean),
                     tuple(float(s) for s in std), (float(lo), float(hi)),
                     resolution.pixel_size, int(max_size),
                     tuple(int(c) for c in class_pixels), resolution,
                     quantiles.percentiles(PERCENTILE_LEVELS))


def _labelled(rec: ChipRecord, mask: np.ndarray, num_classes: int) -> np.ndarray:
    """The labelled (not nodata) pixels of a chip's mask, after checking its classes."""
    labelled = mask != NODATA
    values = np.unique(mask[labelled])
    if values.size and values.max() >= num_classes:
        raise LabelError(
            f"mask of chip {rec.name!r} holds class {int(values.max())} but the model "
            f"has {num_classes} classes (0..{num_classes - 1}, 255 nodata); fix the "
            "masks or give the class names (chips.json) that match them."
        )
    return labelled


def _largest_side(shapes: Sequence[tuple[int, int]], factors: Sequence[float]) -> int:
    """The longest chip side at the training resolution: of the chips read as they are, else
    of the resampled ones."""
    from geounet.training.resolution import resampled_shape

    native = [max(shape) for shape, f in zip(shapes, factors) if f == 1.0]
    if native:
        return max(native)
    return max(max(resampled_shape(*shape, f)) for shape, f in zip(shapes, factors))


@dataclass(frozen=True)
class SampleSpec:
    """How chips become model samples.

    Attributes
    ----------
    input_size : model input side (tile).
    output_size : model output side; the labelled window trained on per sample.
    offset : input pixel under output pixel 0 (the valid net's halo; 0 for same padding).
    """

    input_size: int
    output_size: int
    offset: int


def _windows(height: int, width: int, size: int) -> list[tuple[int, int]]:
    ys = list(range(0, max(1, height - size + 1), size))
    xs = list(range(0, max(1, width - size + 1), size))
    if height > size and ys[-1] + size < height:
        ys.append(height - size)
    if width > size and xs[-1] + size < width:
        xs.append(width - size)
    return [(y, x) for y in ys for x in xs]


class ChipDataset:
    """A map-style dataset (torch ``Dataset`` protocol) of padded chip samples.

    Each item is ``(image float32 (C, I, I), target int64 (O, O), weights float32 (O, O))``:
    the chip (or a crop of at most ``O`` px) sits at the output's top-left, the image is
    mirror-padded around it to the model input, the target is 255 outside the chip.
    Training items take a random crop and random augmentations, seeded by
    ``(seed, epoch, index)``; validation items walk a fixed grid of crops.

    With ``pixel_size`` (the card's training resolution), chips more than 10 % off it are
    resampled to it when loaded (:func:`geounet.training.resolution.read_resampled`), so
    crops, windows and objects are at the card's scale; chips without georeferencing are
    read as they are.

    ``cache`` keeps every decoded chip in memory after its first read
    (:class:`geounet.training.reader.ChipReader`). ``contact`` (a ``border_class`` needed: the
    buildings) makes the targets the boundary/contact multimask of
    :mod:`geounet.training.contact` (boundary = ``num_classes``, contact = ``num_classes + 1``)
    and adds the class mask as a fourth item.
    """

    def __init__(
        self,
        records: Sequence[ChipRecord],
        spec: SampleSpec,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        num_classes: int,
        train: bool,
        class_weights: Sequence[float] | None = None,
        border_weight: float = 0.0,
        border_sigma: float = 5.0,
        border_class: int | None = 1,
        elastic: bool = False,
        brightness: float = 0.1,
        contrast: float = 0.1,
        seed: int = 0,
        scale: float = 0.0,
        gamma: float = 0.0,
        hue: float = 0.0,
        pixel_size: float | None = None,
        cache: bool = False,
        contact: bool = False,
    ) -> None:
        from geounet.training.reader import ChipReader, chip_shape

        self.records = list(records)
        self.spec = spec
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
        self.num_classes = num_classes
        self.train = train
        self.contact = contact and border_class is not None
        weights = np.ones(num_classes, np.float32) if class_weights is None else class_weights
        weights = np.asarray(weights, np.float32)
        if self.contact:  # boundary weighs as buildings, contact as background
            weights = np.append(weights, [weights[border_class], weights[0]])
        self.class_weights = np.append(weights, 0.0)  # the last: nodata
        self.border_weight = border_weight
        self.border_sigma = border_sigma
        self.border_class = border_class
        self.elastic = elastic
        self.brightness = brightness
        self.contrast = contrast
        self.seed = seed
        self.scale, self.gamma, self.hue = scale, gamma, hue  # see geounet.training.augment
        self.epoch = 0
        shapes = [chip_shape(rec.image) for rec in self.records]
        factors = [1.0] * len(self.records)
        if pixel_size is not None:
            from geounet.training.resolution import choose_resolution

            factors = list(choose_resolution([s[2] for s in shapes], pixel_size).factors)
        # building instances (packed with the mask) for the contact targets and border weights
        self.instances = border_class is not None and (self.contact or border_weight > 0)
        building = self.records[0].classes[border_class] if (
            self.instances and self.records and self.records[0].classes) else "buildings"
        self.reader = ChipReader(self.records, factors, shapes, size=spec.output_size,
                                 cache=cache, building=building if self.instances else None)
        if train:
            self.items = [(i, -1, -1) for i in range(len(self.records))]
        else:
            self.items = [(i, y, x) for i in range(len(self.records))
                          for y, x in _windows(*self.reader.shape(i), spec.output_size)]

    @property
    def outputs(self) -> int:
        """Classes of the targets: the model's outputs (the classes, plus boundary and contact
        with ``contact``)."""
        return self.num_classes + (2 if self.contact else 0)

    def set_epoch(self, epoch: int) -> None:
        """Reseed the augmentations for ``epoch`` (call before iterating)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Any, ...]:
        """Sample ``key``: an index (augmented for the epoch of :meth:`set_epoch`) or
        ``(epoch, index)`` (what :class:`geounet.training.loading.EpochSampler` yields, so
        persistent workers need no :meth:`set_epoch`). ``(image, target, weights)``, and with
        ``contact`` the class mask the target came from as a fourth item (validation scores
        against it)."""
        import torch

        from geounet.training.losses import border_weights

        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        chip, y0, x0 = self.items[index]
        rng = np.random.default_rng((self.seed, epoch, index))
        size = self.spec.output_size
        image, labels = self.reader.crop(chip, y0, x0, rng)
        image, labels = self._augment(image, labels, rng)
        mask, target = self._targets(chip, labels)
        image[:, mask == NODATA] = 0.0
        weights = self.class_weights[np.where(target == NODATA, self.outputs, target)]
        if self.border_weight > 0 and self.border_class is not None:
            weights = weights + border_weights(mask, self.border_class, w0=self.border_weight,
                                               sigma=self.border_sigma,
                                               instances=self._instances(labels))
        height, width = mask.shape
        off, total = self.spec.offset, self.spec.input_size
        image = np.pad(image, ((0, 0), (off, total - off - height), (off, total - off - width)),
                       mode="symmetric" if min(height, width) < 2 else "reflect")
        out = [torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))]
        for array, fill, dtype in ((target, NODATA, np.int64), (weights, 0, np.float32)) + (
                ((mask, NODATA, np.int64),) if self.contact else ()):
            padded = np.full((size, size), fill, dtype=dtype)
            padded[:height, :width] = array
            out.append(torch.from_numpy(padded))
        return tuple(out)

    def _targets(self, chip: int, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The class mask of the sample (checked against the classes) and the training target
        (the mask, or with ``contact`` its boundary/contact multimask)."""
        mask = labels if not self.instances else (labels & 255).astype(np.uint8)
        if mask.size and (mask[mask != NODATA].max(initial=0) >= self.num_classes):
            raise LabelError(
                f"mask of chip {self.records[chip].name!r} holds a class >= {self.num_classes}; "
                f"the model has {self.num_classes} classes. Fix the masks or the class names."
            )
        if not self.contact:
            return mask, mask
        from geounet.training.contact import multimask

        return mask, multimask(mask, int(self.border_class or 1), self.num_classes,
                               self.num_classes + 1, self._instances(labels))

    def _instances(self, labels: np.ndarray) -> np.ndarray | None:
        """The instance ids packed in ``labels`` (contact targets or border weights), None
        when none are."""
        if not self.instances:
            return None
        ids = labels >> 8
        return ids if ids.any() else None

    def _augment(self, image: np.ndarray, mask: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Normalize ``image``; for training samples also the geometric (image and mask
        together) and radiometric augmentations, drawn from ``rng`` in a fixed order."""
        from geounet.training.augment import colour, dihedral, elastic, jitter, rescale

        if self.train:
            image, mask = dihedral(image, mask, int(rng.integers(8)))
            if self.elastic:
                image, mask = elastic(image, mask, rng)
            if self.scale > 0:
                image, mask = rescale(image, mask, rng, amount=self.scale)
        image = (image - self.mean) / self.std
        if self.train and (self.brightness > 0 or self.contrast > 0):
            image = jitter(image, rng, brightness=self.brightness, contrast=self.contrast)
        if self.train and (self.gamma > 0 or self.hue > 0):
            image = colour(image, rng, gamma=self.gamma, hue=self.hue)
        return image, mask


def warn_if_unbalanced(stats: ChipStats, classes: Sequence[str]) -> None:
    """Warn about classes with no training pixel (their IoU cannot be learned)."""
    empty = [c for c, n in zip(classes, stats.class_pixels) if n == 0]
    if empty:
        warnings.warn(f"classes {empty} have no pixel in the training chips.", stacklevel=2)
