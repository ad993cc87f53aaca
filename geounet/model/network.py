"""The U-Net (Ronneberger et al. 2015) and its size rules: alignment, halo, valid tile sizes
and receptive field.

Size rules live on :class:`UNetConfig` as properties computed from ``depth`` and
``padding`` (nothing derived is stored): the tiling engine asks the config for the
alignment, halo and valid tile sizes instead of hardcoding ``572 -> 388``.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from geounet.config import Padding, choices
from geounet.errors import InputError, TileSizeError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["MAX_DEPTH", "SAME_MIN_HALO", "UNet", "UNetConfig"]

MAX_DEPTH = 6
SAME_MIN_HALO = 32
"""Smallest recommended blending overlap per side for same-padding models (pixels)."""


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


@functools.cache
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


class SizeRuleMethods:
    """The input-size rules every architecture shares, from four properties of its own.

    A subclass defines ``padding``, ``alignment`` (tile origins and sides step by it),
    ``shrink`` (pixels lost per axis; ``0`` for same padding), ``min_input_size`` and
    ``size_rule`` / ``label`` (words for messages); the checks below follow from them, so an
    architecture of the registry (:mod:`geounet.model.registry`) plugs into the tile grid
    without a rule of its own.
    """

    padding: Padding
    alignment: int
    shrink: int
    min_input_size: int
    size_rule: str
    label: str

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
                f"tile size {input_size} is not a valid input for a {self.label} "
                f"(valid sizes are {self.size_rule}); use {nearest}"
            )
        raise TileSizeError(
            f"tile size {input_size} is not a valid input for a {self.label} "
            f"(sizes must be {self.size_rule}, at least {self.min_input_size}); use {nearest}"
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


@dataclass(frozen=True)
class UNetConfig(SizeRuleMethods):
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
    def label(self) -> str:
        """The architecture in words, e.g. ``depth-4 valid-padding U-Net``."""
        return f"depth-{self.depth} {self.padding}-padding U-Net"

    @property
    def size_rule(self) -> str:
        """The valid input sizes in words, e.g. ``16k+12, at least 188``."""
        a = self.alignment
        if self.padding == "same":
            return f"multiples of {a} (2**depth for depth {self.depth})"
        residue = self.min_input_size % a
        form = f"{a}k+{residue}" if residue else f"{a}k"
        return f"{form}, at least {self.min_input_size}"

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


def he_init(net: nn.Module, mode: str) -> None:
    """Kaiming (He) normal weights for every (transposed) convolution of ``net`` (``mode``
    ``fan_in`` or ``fan_out``), zero biases, BatchNorm at identity."""
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(module.weight, mode=mode, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


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
        he_init(self, mode="fan_in")

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
        for up, decoder in zip(self.ups, self.decoders):
            # Each tensor is dropped as soon as it is used: the skip and the upsampled map once
            # concatenated, the concatenation after the first convolution. In inference this
            # cuts the peak memory of a forward (567 -> 335 MB measured for a 1212 px tile
            # at base 16), which bounds the memory of every concurrent forward.
            x = up(x)
            skip = skips.pop()
            x = torch.cat([_center_crop(skip, x.shape[-2], x.shape[-1]), x], dim=1)
            del skip
            for layer in decoder:
                x = layer(x)
        return self.head(x)

