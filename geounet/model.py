"""The U-Net (Ronneberger et al. 2015), its size rules, receptive field, checkpoint and model card.

Size rules live on :class:`UNetConfig` as properties computed from ``depth`` and
``padding`` (nothing derived is stored): the tiling engine asks the config for the
alignment, halo and valid tile sizes instead of hardcoding ``572 -> 388``.

A checkpoint is one ``torch.save`` of plain types (loadable with ``weights_only=True``)
that carries the weights together with a :class:`ModelCard`: the bands, normalization,
classes, pixel size and data type the model was trained on, so a scene that does not fit
is refused before any heavy work (:meth:`ModelCard.check_scene`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import pickle
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from geounet._version import __version__
from geounet.config import Padding, choices
from geounet.errors import (
    CheckpointError,
    IncompatibleSceneError,
    InputError,
    OutputExistsError,
    TileSizeError,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_FORMAT_VERSION",
    "ModelCard",
    "UNet",
    "UNetConfig",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "geounet-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1

MAX_DEPTH = 6
SAME_MIN_HALO = 32
"""Smallest recommended blending overlap per side for same-padding models (pixels)."""

PIXEL_SIZE_WARN_RATIO = 1.25
PIXEL_SIZE_MAX_RATIO = 2.0


# --------------------------------------------------------------------------------------
# size rules
# --------------------------------------------------------------------------------------


def _valid_bottom_sizes(depth: int) -> tuple[int, int]:
    """Return ``(shrink_per_side_total, min_bottom)`` for a valid-padding U-Net of ``depth``.

    An input of side ``s`` is valid when every level's size stays an even, positive integer:
    ``s = 2**depth * b + 4 * (2**depth - 1)`` where ``b`` is the side entering the
    bottleneck. ``min_bottom`` is the smallest ``b`` for which every decoder level keeps at
    least one pixel.
    """
    bottom = 5  # the bottleneck's two 3x3 convs need at least 5 px to leave 1
    while True:
        size = bottom - 4
        ok = True
        for _ in range(depth):
            size = 2 * size - 4
            if size < 1:
                ok = False
                break
        if ok:
            return 4 * (2**depth - 1), bottom
        bottom += 1


def _widen(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dependence intervals after a 3x3 same-padding convolution (neighbours j-1..j+1)."""
    new_lo, new_hi = lo.copy(), hi.copy()
    new_lo[1:] = np.minimum(new_lo[1:], lo[:-1])
    new_lo[:-1] = np.minimum(new_lo[:-1], lo[1:])
    new_hi[1:] = np.maximum(new_hi[1:], hi[:-1])
    new_hi[:-1] = np.maximum(new_hi[:-1], hi[1:])
    return new_lo, new_hi


@functools.lru_cache(maxsize=None)
def _receptive_field(depth: int, padding: str) -> int:
    """Side of the receptive field, by propagating dependence intervals through the net in 1-D.

    Each position of every feature map carries the interval ``[lo, hi]`` of input pixels it
    depends on; the layers transform these exactly as the convolutions, 2x2 pools, 2x2
    transposed convolutions, crops and concatenations do. The receptive field is the
    widest interval over the output positions (away from the borders in ``same`` mode,
    where zero padding would clip it).
    """
    alignment = 2**depth
    if padding == "valid":
        offset, bottom = _valid_bottom_sizes(depth)
        size = alignment * (bottom + 2 * alignment) + offset
    else:
        size = alignment * 128
    lo = np.arange(size)
    hi = np.arange(size)

    def conv(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        for _ in range(2):
            if padding == "valid":
                lo = np.minimum(np.minimum(lo[:-2], lo[1:-1]), lo[2:])
                hi = np.maximum(np.maximum(hi[:-2], hi[1:-1]), hi[2:])
            else:
                lo, hi = _widen(lo, hi)
        return lo, hi

    skips = []
    for _ in range(depth):
        lo, hi = conv(lo, hi)
        skips.append((lo, hi))
        n = lo.shape[0] // 2
        lo = np.minimum(lo[0 : 2 * n : 2], lo[1 : 2 * n : 2])
        hi = np.maximum(hi[0 : 2 * n : 2], hi[1 : 2 * n : 2])
    lo, hi = conv(lo, hi)
    for skip_lo, skip_hi in reversed(skips):
        lo, hi = np.repeat(lo, 2), np.repeat(hi, 2)
        crop = (skip_lo.shape[0] - lo.shape[0]) // 2
        skip_lo = skip_lo[crop : crop + lo.shape[0]]
        skip_hi = skip_hi[crop : crop + lo.shape[0]]
        lo, hi = np.minimum(lo, skip_lo), np.maximum(hi, skip_hi)
        lo, hi = conv(lo, hi)
    if padding != "valid":
        inner = (lo > 0) & (hi < size - 1)
        lo, hi = lo[inner], hi[inner]
    return int((hi - lo).max()) + 1


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a U-Net; the size rules are derived properties.

    Parameters
    ----------
    in_channels : input bands.
    num_classes : output logits per pixel.
    depth : number of 2x2 poolings (1-6).
    base_channels : channels at level 0, doubled per level.
    padding : ``"valid"`` (no padding, exact overlap-tile; the seed design) or ``"same"``.
    batch_norm : BatchNorm between each convolution and its ReLU.

    Examples
    --------
    >>> cfg = UNetConfig(depth=4, base_channels=64)
    >>> cfg.output_size(572), cfg.halo, cfg.alignment
    (388, 92, 16)
    """

    in_channels: int = 3
    num_classes: int = 3
    depth: int = 4
    base_channels: int = 64
    padding: Padding = "valid"
    batch_norm: bool = False

    def __post_init__(self) -> None:
        for name in ("in_channels", "num_classes", "base_channels", "depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise InputError(f"U-Net {name} {value!r} is not an integer; give a whole number")
            object.__setattr__(self, name, int(value))  # numpy integers -> plain int (JSON)
        if not 1 <= self.depth <= MAX_DEPTH:
            raise InputError(
                f"U-Net depth {self.depth} is out of range (1..{MAX_DEPTH} poolings); "
                f"use 4 for the standard U-Net"
            )
        for name in ("in_channels", "num_classes", "base_channels"):
            value = getattr(self, name)
            if value <= 0:
                raise InputError(f"U-Net {name} {value} must be positive; use at least 1")
        if self.padding not in choices(Padding):
            raise InputError(
                f"U-Net padding {self.padding!r} is not one of {choices(Padding)}; "
                f"use 'valid' (exact tiles) or 'same'"
            )
        if not isinstance(self.batch_norm, bool):
            raise InputError(f"U-Net batch_norm {self.batch_norm!r} must be True or False")

    # ---- derived sizes ------------------------------------------------------------------

    @property
    def alignment(self) -> int:
        """``2**depth``: tile origins and strides must be multiples of it so pools line up."""
        return 2**self.depth

    @property
    def shrink(self) -> int:
        """Pixels lost per axis between input and output (``0`` for same padding)."""
        if self.padding == "same":
            return 0
        return 12 * self.alignment - 8

    @property
    def halo(self) -> int:
        """Context pixels per side.

        Valid padding: exactly the pixels the net consumes per side, ``6 * 2**depth - 4``
        (92 at depth 4); output pixel ``j`` sits on input pixel ``j + halo``.
        Same padding: a recommended blending overlap per side, ``max(32, 2 * 2**depth)``
        (a multiple of the alignment); same-padding outputs near a tile edge see zero
        padding, so this overlap is blended away rather than being exact.
        """
        if self.padding == "valid":
            return self.shrink // 2
        return max(SAME_MIN_HALO, 2 * self.alignment)

    @property
    def receptive_field(self) -> int:
        """Side in input pixels of the window one output pixel depends on."""
        return _receptive_field(self.depth, self.padding)

    @property
    def min_input_size(self) -> int:
        """Smallest valid input side."""
        if self.padding == "same":
            return self.alignment
        offset, bottom = _valid_bottom_sizes(self.depth)
        return self.alignment * bottom + offset

    @property
    def size_rule(self) -> str:
        """The valid input sizes in words, e.g. ``16k+12, at least 188``."""
        a = self.alignment
        if self.padding == "same":
            return f"multiples of {a} (2**depth for depth {self.depth})"
        residue = self.min_input_size % a
        form = f"{a}k+{residue}" if residue else f"{a}k"
        return f"{form}, at least {self.min_input_size}"

    def is_valid_input_size(self, input_size: int) -> bool:
        """Whether ``input_size`` can be fed to the net."""
        if input_size < self.min_input_size:
            return False
        return (input_size - self.min_input_size) % self.alignment == 0

    def valid_input_sizes(self, lo: int, hi: int) -> list[int]:
        """All valid input sides in ``[lo, hi]`` (inclusive), ascending.

        Examples
        --------
        >>> UNetConfig(depth=4).valid_input_sizes(480, 520)
        [492, 508]
        """
        first = self.min_input_size
        a = self.alignment
        start = max(lo, first)
        start = first + -(-(start - first) // a) * a
        return list(range(start, hi + 1, a))

    def nearest_valid_input_sizes(self, input_size: int) -> tuple[int, ...]:
        """The valid sides just below and just above ``input_size`` (one if below the minimum)."""
        first = self.min_input_size
        a = self.alignment
        if input_size <= first:
            return (first,)
        below = first + (input_size - first) // a * a
        if below == input_size:
            return (input_size,)
        return (below, below + a)

    def check_input_size(self, input_size: int) -> None:
        """Raise :class:`TileSizeError`, naming the nearest valid sizes, for an invalid size."""
        if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)):
            raise TileSizeError(
                f"tile size {input_size!r} is not an integer number of pixels; give a whole "
                f"number such as {self.min_input_size + 4 * self.alignment}"
            )
        if self.is_valid_input_size(input_size):
            return
        nearest = " or ".join(str(s) for s in self.nearest_valid_input_sizes(input_size))
        if self.padding == "valid":
            raise TileSizeError(
                f"tile size {input_size} is not a valid input for a depth-{self.depth} "
                f"valid-padding U-Net (valid sizes are {self.size_rule}); use {nearest}"
            )
        raise TileSizeError(
            f"tile size {input_size} is not a valid input for a depth-{self.depth} "
            f"same-padding U-Net (sizes must be {self.size_rule}, at least {self.alignment}); "
            f"use {nearest}"
        )

    def output_size(self, input_size: int) -> int:
        """Output side for a valid input side; :class:`TileSizeError` otherwise.

        Examples
        --------
        >>> UNetConfig(depth=4).output_size(572)
        388
        """
        self.check_input_size(input_size)
        return int(input_size) - self.shrink

    def input_size_for_output(self, output_size: int) -> int:
        """Smallest valid input side whose output is at least ``output_size``.

        Examples
        --------
        >>> UNetConfig(depth=4).input_size_for_output(500)
        684
        """
        need = max(int(output_size) + self.shrink, self.min_input_size)
        return self.valid_input_sizes(need, need + self.alignment)[0]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`InputError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(
                f"unknown U-Net config keys {unknown}; allowed keys are {sorted(known)}"
            )
        return cls(**dict(data))


# --------------------------------------------------------------------------------------
# the network
# --------------------------------------------------------------------------------------


class _DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by (BatchNorm and) ReLU."""

    def __init__(self, in_channels: int, out_channels: int, padding: int, batch_norm: bool):
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            layers.append(
                nn.Conv2d(c_in, out_channels, 3, padding=padding, bias=not batch_norm)
            )
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def _center_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    top = (x.shape[-2] - height) // 2
    left = (x.shape[-1] - width) // 2
    return x[..., top : top + height, left : left + width]


class UNet(nn.Module):
    """U-Net with configurable depth, width and padding.

    ``forward`` maps ``(N, in_channels, H, W)`` to logits ``(N, num_classes, H', W')`` with
    ``H' = config.output_size(H)``. Works in channels_last memory format and under
    ``torch.autocast``.

    Examples
    --------
    >>> net = UNet(UNetConfig(depth=4, base_channels=2))
    >>> net(torch.zeros(1, 3, 572, 572)).shape
    torch.Size([1, 3, 388, 388])
    """

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        config = config if config is not None else UNetConfig()
        if not isinstance(config, UNetConfig):
            raise InputError(f"UNet expects a UNetConfig, got {type(config).__name__}")
        self.config = config
        pad = 1 if config.padding == "same" else 0
        widths = [config.base_channels * 2**level for level in range(config.depth + 1)]
        self.encoders = nn.ModuleList()
        c_in = config.in_channels
        for width in widths[:-1]:
            self.encoders.append(_DoubleConv(c_in, width, pad, config.batch_norm))
            c_in = width
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _DoubleConv(widths[-2], widths[-1], pad, config.batch_norm)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(config.depth)):
            self.ups.append(nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2))
            self.decoders.append(
                _DoubleConv(2 * widths[level], widths[level], pad, config.batch_norm)
            )
        self.head = nn.Conv2d(widths[0], config.num_classes, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming (He) normal initialisation for the ReLU convolutions; zero biases."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes, H', W')`` for a batch ``(N, in_channels, H, W)``."""
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise InputError(
                f"U-Net input has shape {tuple(x.shape)}; it must be (batch, "
                f"{self.config.in_channels}, height, width) for this model"
            )
        height, width = int(x.shape[-2]), int(x.shape[-1])
        if not (
            self.config.is_valid_input_size(height) and self.config.is_valid_input_size(width)
        ):
            bad = height if not self.config.is_valid_input_size(height) else width
            self.config.check_input_size(bad)
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips)):
            x = up(x)
            skip = _center_crop(skip, x.shape[-2], x.shape[-1])
            x = decoder(torch.cat([skip, x], dim=1))
        return self.head(x)


# --------------------------------------------------------------------------------------
# model card
# --------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class ModelCard:
    """What a checkpoint was trained on, checked against each scene before any heavy work.

    Parameters
    ----------
    architecture : the :class:`UNetConfig` of the weights.
    bands : 1-based scene band indices fed to the model, ``len == in_channels``.
    mean, std : per band in raw scene units; the model input is ``(x - mean) / std``.
    classes : class names, ``len == num_classes``, e.g. ``("background", "buildings", "roads")``.
    pixel_size : metres per pixel of the training scenes, or None if unknown.
    dtype : scene data type trained on (``"uint8"``, ``"uint16"``).
    value_range : raw (min, max) seen in training.
    description : free text (data, purpose).
    geounet_version : version that wrote the card.

    Examples
    --------
    >>> card = ModelCard(UNetConfig(), bands=(1, 2, 3), mean=(0.0,) * 3, std=(255.0,) * 3,
    ...                  classes=("background", "buildings", "roads"), pixel_size=0.5,
    ...                  dtype="uint8", value_range=(0.0, 255.0))
    >>> card.check_scene(count=3, dtype="uint8", pixel_size=0.5)
    """

    architecture: UNetConfig
    bands: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]
    pixel_size: float | None
    dtype: str
    value_range: tuple[float, float]
    description: str = ""
    geounet_version: str = field(default=__version__)

    def __post_init__(self) -> None:
        if not isinstance(self.architecture, UNetConfig):
            raise InputError(
                "model card architecture must be a UNetConfig, got "
                f"{type(self.architecture).__name__}"
            )
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
        if len(classes) != arch.num_classes:
            raise InputError(
                f"model card names {len(classes)} classes {classes} but the U-Net has "
                f"{arch.num_classes} outputs; give one name per class"
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
    def receptive_field(self) -> int:
        """Receptive field side of the architecture, in input pixels."""
        return self.architecture.receptive_field

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (lists, not tuples); the receptive field is included for readers."""
        return {
            "architecture": self.architecture.to_dict(),
            "bands": list(self.bands),
            "mean": list(self.mean),
            "std": list(self.std),
            "classes": list(self.classes),
            "pixel_size": self.pixel_size,
            "dtype": self.dtype,
            "value_range": list(self.value_range),
            "description": self.description,
            "geounet_version": self.geounet_version,
            "receptive_field": self.receptive_field,
        }

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
        data["architecture"] = UNetConfig.from_dict(arch)
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
                f"--rescale (percentile, bits or MIN,MAX, e.g. --rescale 0,2047) or use a model "
                f"trained on {scene_dtype}"
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
                f"read it resampled to {self.pixel_size:g} m with --resample auto "
                f"(resample=\"auto\") or use a model trained at this resolution"
            )
        if ratio > PIXEL_SIZE_WARN_RATIO:
            warnings.warn(
                f"scene pixel size {pixel_size:g} m is {ratio:.2g}x {relation} than the model's "
                f"{self.pixel_size:g} m (more than {PIXEL_SIZE_WARN_RATIO:g}x); objects will "
                f"look smaller or larger than in training",
                UserWarning,
                stacklevel=2,
            )


# --------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------


def save_checkpoint(
    path: str | os.PathLike[str],
    model: UNet,
    card: ModelCard,
    *,
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write weights + model card to ``path`` in one ``torch.save``, atomically.

    The file is written under a temporary name in the same directory and renamed into
    place when complete, so a crash never leaves a truncated checkpoint under ``path``.

    Parameters
    ----------
    path : output file, conventionally ``.pt``.
    model : the :class:`UNet`; its config must equal ``card.architecture``.
    card : the model card.
    extra : plain data (numbers, strings, lists, dicts, tensors) such as optimizer state
        and epoch for resuming training; must load with ``weights_only=True``.
    overwrite : replace an existing file (otherwise :class:`OutputExistsError`).

    Returns
    -------
    The path written.

    Examples
    --------
    >>> save_checkpoint("model.pt", net, card, extra={"epoch": 3})  # doctest: +SKIP
    """
    path = Path(path)
    if not isinstance(model, UNet):
        raise InputError(f"save_checkpoint needs a geounet UNet, got {type(model).__name__}")
    if model.config != card.architecture:
        raise InputError(
            f"model config {model.config} differs from the card's architecture "
            f"{card.architecture}; build the card from model.config"
        )
    if extra is not None and not isinstance(extra, dict):
        raise InputError(f"checkpoint extra must be a dict or None, got {type(extra).__name__}")
    if path.is_dir():
        raise InputError(
            f"checkpoint path {path} is a directory; give a file path such as {path / 'model.pt'}"
        )
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"checkpoint {path} already exists; pass overwrite=True (--overwrite) to replace it"
        )
    if not path.parent.exists():
        raise InputError(
            f"directory {path.parent} for checkpoint {path.name} does not exist; create it first"
        )
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "card": card.to_dict(),
        "state_dict": {
            key: value.detach().to("cpu").contiguous() for key, value in model.state_dict().items()
        },
        "extra": extra,
    }
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    logger.info("wrote checkpoint %s", path)
    return path


def _torch_load(path: Path, map_location: Any) -> Any:
    """``torch.load(weights_only=True)`` with a clear :class:`CheckpointError` per failure."""
    with path.open("rb") as handle:
        head = handle.read(4)
    if head != b"PK\x03\x04":
        raise CheckpointError(
            f"checkpoint {path} is not a PyTorch checkpoint (it is not a zip archive as "
            f"torch.save writes); give the .pt file written by geounet train"
        )
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt (its zip directory is missing, "
            f"{path.stat().st_size} bytes); re-copy the file or re-train"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"checkpoint {path} holds Python objects other than plain data (tensors, numbers, "
            f"strings, lists, dicts), so it was not written by geounet and is not loaded, for "
            f"safety; save models with geounet.model.save_checkpoint"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt files
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {first_line}); the file "
            f"is corrupt: re-copy it or re-train"
        ) from exc


def _state_dict_mismatch(model: nn.Module, state_dict: Mapping[str, Any]) -> str:
    """A short description of how ``state_dict`` differs from ``model``'s parameters."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict
        and isinstance(state_dict[k], torch.Tensor)
        and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if shapes:
        parts.append(f"{len(shapes)} of other shape (e.g. {shapes[0]})")
    return "; ".join(parts) or "tensors of the wrong type"


def read_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Load and validate the raw checkpoint dict (for resuming training).

    Returns
    -------
    ``{"format", "format_version", "card", "state_dict", "extra"}`` with ``card`` a plain dict.

    Raises
    ------
    CheckpointError
        The file is missing, not a geounet checkpoint, truncated or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist (or is not a file); give the path of a .pt "
            f"file written by geounet train"
        )
    payload = _torch_load(path, map_location)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        what = "a plain state_dict" if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{path} is a PyTorch file ({what}) but not a geounet checkpoint: it lacks "
            f"format={CHECKPOINT_FORMAT!r} and a model card; save models with "
            f"geounet.model.save_checkpoint"
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version!r}; this geounet "
            f"({__version__}) reads versions up to {CHECKPOINT_FORMAT_VERSION}: upgrade geounet"
        )
    for key in ("card", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise CheckpointError(f"checkpoint {path} has no {key!r} dict; the file is corrupt")
    payload.setdefault("extra", None)
    return payload


def load_checkpoint(
    path: str | os.PathLike[str], map_location: Any = "cpu"
) -> tuple[UNet, ModelCard]:
    """Load a checkpoint into a :class:`UNet` in eval mode and its :class:`ModelCard`.

    Examples
    --------
    >>> net, card = load_checkpoint("model.pt")  # doctest: +SKIP
    >>> card.check_scene(count=3, dtype="uint8", pixel_size=0.5)  # doctest: +SKIP
    """
    payload = read_checkpoint(path, map_location=map_location)
    try:
        card = ModelCard.from_dict(payload["card"])
    except InputError as exc:
        raise CheckpointError(f"checkpoint {path} has an invalid model card: {exc}") from exc
    model = UNet(card.architecture)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(
            f"checkpoint {path}: the weights do not match the card's architecture "
            f"{card.architecture} ({_state_dict_mismatch(model, payload['state_dict'])}); the "
            f"file is corrupt or its card was edited"
        ) from exc
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    model.eval()
    return model, card
