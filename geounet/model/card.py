"""The model card: what a checkpoint was trained on (bands, normalization, classes, pixel
size, data type), checked against each scene before any heavy work
(:meth:`ModelCard.check_scene`).
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from geounet._version import __version__
from geounet.config import AUTO_RESAMPLE_MAX_FACTOR, RESCALE_ADVICE
from geounet.errors import IncompatibleSceneError, InputError, option
from geounet.model.registry import (
    ArchitectureConfig,
    architecture_from_dict,
    architecture_of,
    architecture_to_dict,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["PIXEL_SIZE_MAX_RATIO", "PIXEL_SIZE_WARN_RATIO", "ModelCard"]

logger = logging.getLogger(__name__)

PIXEL_SIZE_WARN_RATIO = 1.25
PIXEL_SIZE_MAX_RATIO = 2.0


def _resample_fix(ratio: float, pixel_size: float) -> str:
    """The resample option that reads a scene ``ratio`` off the card: ``auto`` resamples only
    within :data:`geounet.config.AUTO_RESAMPLE_MAX_FACTOR` (``raster.fitting`` refuses beyond)."""
    if ratio <= AUTO_RESAMPLE_MAX_FACTOR:
        return f"read it resampled to {pixel_size:g} m with {option('resample', 'auto')}"
    return (
        f"--resample auto resamples only within a factor {AUTO_RESAMPLE_MAX_FACTOR:g}; force "
        f"a warp to {pixel_size:g} m with {option('resample', 'always')}"
    )


def _check_extra_outputs(extra: Any, classes: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    """``extra_outputs`` as ``((name, class index), ...)``, checked against ``classes``."""
    try:
        pairs = tuple((str(name), int(target)) for name, target in extra)
    except (TypeError, ValueError) as exc:
        raise InputError(f"model card extra_outputs {extra!r} must be (name, class index) "
                         f"pairs: {exc}") from exc
    names = [name for name, _ in pairs]
    for name, target in pairs:
        if not 0 <= target < len(classes) or name in classes or names.count(name) > 1:
            raise InputError(
                f"model card extra output {name!r} -> class {target}: each extra output needs a "
                f"name of its own (not one of the classes {classes}) and a class index "
                f"0..{len(classes) - 1} its probability is added to")
    return pairs


def _dtype_limits(dtype: str) -> tuple[float, float]:
    kind = np.dtype(dtype)
    if np.issubdtype(kind, np.integer):
        info = np.iinfo(kind)
        return float(info.min), float(info.max)
    if np.issubdtype(kind, np.floating):
        finfo = np.finfo(kind)
        return float(finfo.min), float(finfo.max)
    if kind == np.bool_:
        return 0.0, 1.0
    raise InputError(f"data type {dtype!r} is not a numeric raster type; use uint8 or uint16")


def _check_dtype_name(dtype: str) -> str:
    try:
        name = np.dtype(dtype).name
    except TypeError as exc:
        raise InputError(
            f"model card dtype {dtype!r} is not a numpy data type name; use 'uint8' or 'uint16'"
        ) from exc
    _dtype_limits(name)
    return name


def _set_percentiles(card: ModelCard, bands: int) -> None:
    """Normalise and check a card's training percentiles (InputError naming the rule)."""
    try:
        levels = tuple(float(v) for v in card.percentile_levels)
        values = tuple(tuple(float(v) for v in band) for band in card.percentiles)
    except (TypeError, ValueError) as exc:
        raise InputError(f"model card percentiles must be numbers: {exc}") from exc
    object.__setattr__(card, "percentile_levels", levels)
    object.__setattr__(card, "percentiles", values)
    if not levels and not values:
        return
    if not all(0.0 <= a < b <= 100.0 for a, b in zip(levels, levels[1:])) or not levels or \
            not 0.0 <= levels[0] <= 100.0:
        raise InputError(
            f"model card percentile_levels {list(levels)} must rise strictly within 0..100"
        )
    if len(values) != bands or any(len(v) != len(levels) for v in values) or any(
            not all(np.isfinite(v)) or any(a > b for a, b in zip(v, v[1:])) for v in values):
        raise InputError(
            f"model card percentiles must give, for each of the {bands} band(s), one finite "
            f"value per level ({len(levels)}), not decreasing; got {[list(v) for v in values]}"
        )


@dataclass(frozen=True)
class ModelCard:
    """What a checkpoint was trained on, checked against each scene before any heavy work.

    Parameters
    ----------
    architecture : the config of the weights: a registered architecture
        (:mod:`geounet.model.registry`; :class:`UNetConfig` or :class:`ResNetUNetConfig`).
    bands : 1-based scene band indices fed to the model, ``len == in_channels``.
    mean, std : per band in raw scene units; the model input is ``(x - mean) / std``.
    classes : class names, ``len == num_classes``, e.g. ``("background", "buildings", "roads")``.
    pixel_size : metres per pixel of the training scenes, or None if unknown.
    dtype : scene data type trained on (``"uint8"``, ``"uint16"``).
    value_range : raw (min, max) seen in training.
    description : free text (data, purpose).
    geounet_version : version that wrote the card.
    percentile_levels, percentiles : per band, the training data's values at these
        percentiles (``percentiles[band][level]``), what ``--rescale match`` maps a scene onto;
        empty on cards written before they were recorded.
    extra_outputs : model outputs beyond ``classes`` that training adds and prediction folds
        back, as ``(name, class index)`` pairs: the output's probability is added to that
        class's, so every reader sees only ``classes``. A ``contact_class`` model has
        ``(("building_boundary", 1), ("building_contact", 0))``: boundary pixels are
        buildings, contact pixels between touching buildings background (docs/training.md).
        Outputs are ordered ``classes`` first, then these; empty for most models.

    Examples
    --------
    >>> from geounet.model.network import UNetConfig
    >>> card = ModelCard(UNetConfig(), bands=(1, 2, 3), mean=(0.0,) * 3, std=(255.0,) * 3,
    ...                  classes=("background", "buildings", "roads"), pixel_size=0.5,
    ...                  dtype="uint8", value_range=(0.0, 255.0))
    >>> card.check_scene(count=3, dtype="uint8", pixel_size=0.5)
    """

    architecture: ArchitectureConfig
    bands: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]
    pixel_size: float | None
    dtype: str
    value_range: tuple[float, float]
    description: str = ""
    geounet_version: str = field(default=__version__)
    percentile_levels: tuple[float, ...] = ()
    percentiles: tuple[tuple[float, ...], ...] = ()
    extra_outputs: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        architecture_of(self.architecture)  # a registered architecture, else InputError
        arch = self.architecture
        # normalise sequences to tuples of plain numbers (from_dict gives lists)
        try:
            bands = tuple(int(b) for b in self.bands)
            mean = tuple(float(m) for m in self.mean)
            std = tuple(float(s) for s in self.std)
            value_range = tuple(float(v) for v in self.value_range)
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"model card bands/mean/std/value_range must be numbers: {exc}"
            ) from exc
        classes = tuple(str(c) for c in self.classes)
        _set_percentiles(self, len(bands))
        extra = _check_extra_outputs(self.extra_outputs, classes)
        object.__setattr__(self, "extra_outputs", extra)
        object.__setattr__(self, "bands", bands)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "value_range", value_range)
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "dtype", _check_dtype_name(self.dtype))
        if self.pixel_size is not None:
            object.__setattr__(self, "pixel_size", float(self.pixel_size))

        if len(bands) != arch.in_channels:
            raise InputError(
                f"model card lists {len(bands)} bands {bands} but the U-Net has "
                f"{arch.in_channels} input channels; give exactly {arch.in_channels} band indices"
            )
        if any(b < 1 for b in bands):
            raise InputError(f"model card bands {bands} must be 1-based indices (>= 1)")
        if len(mean) != len(bands) or len(std) != len(bands):
            raise InputError(
                f"model card has {len(mean)} means and {len(std)} stds for {len(bands)} bands; "
                f"give one mean and one std per band"
            )
        if not all(np.isfinite(mean)) or not all(np.isfinite(s) and s > 0 for s in std):
            raise InputError(
                f"model card std {std} must be finite and > 0 (and mean {mean} finite); "
                f"compute them from the training data"
            )
        if len(classes) + len(extra) != arch.num_classes:
            raise InputError(
                f"model card names {len(classes)} classes {classes}"
                + (f" and {len(extra)} extra outputs" if extra else "")
                + f" but the U-Net has {arch.num_classes} outputs; give one name per output"
            )
        if len(value_range) != 2 or not value_range[0] <= value_range[1]:
            raise InputError(
                f"model card value_range {value_range} must be (min, max) with min <= max"
            )
        if self.pixel_size is not None and not (
            np.isfinite(self.pixel_size) and self.pixel_size > 0
        ):
            raise InputError(
                f"model card pixel_size {self.pixel_size} must be > 0 metres, or None if unknown"
            )

    @property
    def output_groups(self) -> tuple[tuple[int, ...], ...] | None:
        """For each class, the model outputs whose probabilities add up to it (None when the
        outputs are the classes).

        Examples
        --------
        >>> from geounet.model.network import UNetConfig
        >>> card = ModelCard(UNetConfig(num_classes=4), (1, 2, 3), (0.0,) * 3, (1.0,) * 3,
        ...                  ("background", "buildings"), None, "uint8", (0.0, 255.0),
        ...                  extra_outputs=(("building_boundary", 1), ("building_contact", 0)))
        >>> card.output_groups
        ((0, 3), (1, 2))
        """
        if not self.extra_outputs:
            return None
        groups: list[list[int]] = [[i] for i in range(len(self.classes))]
        for offset, (_, target) in enumerate(self.extra_outputs):
            groups[target].append(len(self.classes) + offset)
        return tuple(tuple(g) for g in groups)

    def fold(self, probabilities: np.ndarray) -> np.ndarray:
        """Class probabilities (N, classes, ...) from the model's output probabilities
        (N, outputs, ...): each extra output added to its class (unchanged without any)."""
        groups = self.output_groups
        if groups is None:
            return probabilities
        return np.stack([probabilities[:, list(g)].sum(axis=1) for g in groups], axis=1)

    @property
    def receptive_field(self) -> int:
        """Receptive field side of the architecture, in input pixels."""
        return self.architecture.receptive_field

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (lists, not tuples); the receptive field is included for readers."""
        return {
            "architecture": architecture_to_dict(self.architecture),
            "bands": list(self.bands),
            "mean": list(self.mean),
            "std": list(self.std),
            "classes": list(self.classes),
            "pixel_size": self.pixel_size,
            "dtype": self.dtype,
            "value_range": list(self.value_range),
            "description": self.description,
            "geounet_version": self.geounet_version,
            "percentile_levels": list(self.percentile_levels),
            "percentiles": [list(p) for p in self.percentiles],
            "receptive_field": self.receptive_field,
        } | ({"extra_outputs": [list(e) for e in self.extra_outputs]} if self.extra_outputs
             else {})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelCard:
        """Inverse of :meth:`to_dict`; :class:`InputError` for missing or unknown keys."""
        if not isinstance(data, dict):
            raise InputError(f"a model card must be a dict, got {type(data).__name__}")
        data = dict(data)
        data.pop("receptive_field", None)  # derived, written for readers only
        known = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        missing = sorted(required - set(data))
        unknown = sorted(set(data) - known)
        if missing or unknown:
            raise InputError(
                f"model card keys missing {missing} / unknown {unknown}; "
                f"a card has exactly the keys {sorted(known)}"
            )
        arch = data["architecture"]
        if not isinstance(arch, dict):
            raise InputError(f"model card architecture must be a dict, got {type(arch).__name__}")
        data["architecture"] = architecture_from_dict(arch)
        return cls(**data)

    def check_scene(self, count: int, dtype: str, pixel_size: float | None) -> None:
        """Raise :class:`IncompatibleSceneError` if a scene does not fit this model.

        Rules: every card band index must exist in the scene (``max(bands) <= count``); the
        scene data type must be the card's (a uint16 scene given to a uint8 model would be
        normalised with uint8 statistics: pass the type after ``--rescale``, i.e. the card's,
        when values are mapped); the scene pixel size must be within a factor 2 of the
        card's (a warning between 1.25x and 2x; ``--resample`` reads a warped view instead).
        Unknown pixel sizes skip the resolution check.

        Parameters
        ----------
        count : number of bands of the scene (after any band selection).
        dtype : scene data type name, e.g. ``"uint8"``.
        pixel_size : scene metres per pixel, or None if unknown.
        """
        bands = self.bands
        if max(bands) > count:
            missing = [b for b in bands if b > count]
            raise IncompatibleSceneError(
                f"model reads band {max(bands)} (card bands {list(bands)}) but the scene has "
                f"{count} band{'s' if count != 1 else ''}: band indices must be at most the "
                f"scene's band count; pass --bands to choose {len(bands)} of the scene's bands"
                + (f" instead of {missing}" if len(missing) > 1 else "")
            )
        try:
            scene_dtype = np.dtype(dtype).name
            low, high = _dtype_limits(scene_dtype)
        except (TypeError, InputError) as exc:
            raise IncompatibleSceneError(
                f"scene data type {dtype!r} is not numeric; the model was trained on {self.dtype}"
            ) from exc
        v_lo, v_hi = self.value_range
        if v_lo < low or v_hi > high:
            raise IncompatibleSceneError(
                f"scene data type {scene_dtype} holds values {low:g}..{high:g} but the model was "
                f"trained on {self.dtype} values {v_lo:g}..{v_hi:g}: the training value range "
                f"must fit in the scene's data type; use a {self.dtype} scene (e.g. the original "
                f"product, not a rescaled 8-bit preview), map the values with --rescale "
                f"(e.g. --rescale percentile) or use a model trained on {scene_dtype}"
            )
        if scene_dtype != self.dtype:
            raise IncompatibleSceneError(
                f"scene data type {scene_dtype} differs from the model's training type "
                f"{self.dtype} (values {v_lo:g}..{v_hi:g}); reading it unchanged would normalise "
                f"it with another range's statistics: map its values into the model's range with "
                f"--rescale (match, bits, percentile or MIN,MAX, e.g. --rescale 0,2047; "
                f"{RESCALE_ADVICE}) or use a model trained on {scene_dtype}"
            )
        if pixel_size is None or self.pixel_size is None:
            if pixel_size is None and self.pixel_size is not None:
                logger.info("scene pixel size unknown; skipping the resolution check")
            return
        if not (np.isfinite(pixel_size) and pixel_size > 0):
            raise IncompatibleSceneError(
                f"scene pixel size {pixel_size} is not a positive number of metres"
            )
        ratio = max(pixel_size / self.pixel_size, self.pixel_size / pixel_size)
        relation = "coarser" if pixel_size > self.pixel_size else "finer"
        if ratio > PIXEL_SIZE_MAX_RATIO:
            raise IncompatibleSceneError(
                f"scene pixel size {pixel_size:g} m is {ratio:.2g}x {relation} than the model's "
                f"{self.pixel_size:g} m: it must be within a factor {PIXEL_SIZE_MAX_RATIO:g}; "
                f"{_resample_fix(ratio, self.pixel_size)} or use a model trained at this "
                f"resolution"
            )
        if ratio > PIXEL_SIZE_WARN_RATIO:
            warnings.warn(
                f"scene pixel size {pixel_size:g} m is {ratio:.2g}x {relation} than the model's "
                f"{self.pixel_size:g} m (more than {PIXEL_SIZE_WARN_RATIO:g}x); objects will "
                f"look smaller or larger than in training",
                UserWarning,
                stacklevel=2,
            )

