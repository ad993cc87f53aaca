"""A U-Net with a ResNet encoder, for fine-tuning from pretrained weights.

The encoder is the ResNet of He et al. (2016) with torchvision's parameter names (``conv1``,
``bn1``, ``layer1`` ... ``layer4``), so a ResNet-18/34 state dict saved by torchvision or timm
(``resnet34-*.pth``, ``pytorch_model.bin``) loads into it from a local file
(:func:`load_encoder_weights`); nothing is downloaded. The decoder is the U-Net's: at each of
the five scales, upsample x2, concatenate the encoder's map of that scale, two 3x3
convolutions with BatchNorm and ReLU (the layout of segmentation-models-pytorch's ``Unet``).

Why not import the encoder from timm or torchvision: torchvision's wheels are built against one
torch release each and do not import beside the CPU torch this project installs, and timm imports
torchvision; the parameter names are the interface that matters for pretrained weights, and
they are kept here exactly.

Same padding only (the encoder pads): the tile grid blends overlapping tiles
(ARCHITECTURE invariant 1), with tile sides multiples of 32.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from geounet.config import Encoder, choices
from geounet.errors import CheckpointError, InputError
from geounet.model.network import SAME_MIN_HALO, SizeRuleMethods, he_init

# ResNet encoders (geounet.config.Encoder): name -> blocks per stage (BasicBlock).
_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
_WIDTHS = (64, 128, 256, 512)
_REDUCTION = 32  # stride of layer4: conv1 (2) x maxpool (2) x layer2..4 (2 each)


def _receptive_field(blocks: tuple[int, ...], decoder_convs: int) -> int:
    """Receptive field side of the deepest path: encoder convs, then the decoder's."""
    rf, jump = 1, 1
    layers = [(7, 2), (3, 2)]  # conv1, maxpool
    for stage, count in enumerate(blocks):
        for block in range(count):
            layers += [(3, 2 if stage and not block else 1), (3, 1)]
    for k, s in layers:
        rf += (k - 1) * jump
        jump *= s
    for _ in range(5):  # decoder scales, finest last: jump halves before each
        jump //= 2
        rf += decoder_convs * 2 * jump
    return rf


@dataclass(frozen=True)
class ResNetUNetConfig(SizeRuleMethods):
    """Architecture of a ResNet-encoder U-Net; its size rules are derived properties.

    Parameters
    ----------
    in_channels : input bands (a pretrained 3-band ``conv1`` is adapted to others on load).
    num_classes : output logits per pixel.
    encoder : ``resnet18`` or ``resnet34``.
    decoder_channels : channels of the five decoder stages, coarsest first.

    Examples
    --------
    >>> cfg = ResNetUNetConfig(encoder="resnet18")
    >>> cfg.alignment, cfg.halo, cfg.output_size(256)
    (32, 64, 256)
    """

    in_channels: int = 3
    num_classes: int = 3
    encoder: Encoder = "resnet34"
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)

    padding = "same"
    depth = 5
    shrink = 0

    def __post_init__(self) -> None:
        if self.encoder not in choices(Encoder):
            raise InputError(
                f"encoder {self.encoder!r} is not one of {choices(Encoder)}; use resnet34"
            )
        channels = tuple(self.decoder_channels)
        if len(channels) != 5 or any(
            isinstance(c, bool) or not isinstance(c, int) or c <= 0 for c in channels
        ):
            raise InputError(
                f"decoder_channels {self.decoder_channels!r} must be 5 positive integers, "
                f"coarsest first, e.g. (256, 128, 64, 32, 16)"
            )
        object.__setattr__(self, "decoder_channels", channels)
        for name in ("in_channels", "num_classes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InputError(f"{name} {value!r} must be a positive integer")

    @property
    def alignment(self) -> int:
        """32: the encoder's total stride; tile origins and sides are multiples of it."""
        return _REDUCTION

    @property
    def halo(self) -> int:
        """Blending overlap per side, ``2 * alignment`` (as the same-padding U-Net's)."""
        return max(SAME_MIN_HALO, 2 * self.alignment)

    @property
    def receptive_field(self) -> int:
        """Side in input pixels of the deepest path's window."""
        return _receptive_field(_BLOCKS[self.encoder], 2)

    @property
    def min_input_size(self) -> int:
        """Smallest input side: one alignment step."""
        return self.alignment

    @property
    def size_rule(self) -> str:
        """The valid input sizes in words."""
        return f"multiples of {self.alignment} (the encoder's stride)"

    @property
    def label(self) -> str:
        """The architecture in words."""
        return f"{self.encoder} U-Net"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the fields."""
        data = dataclasses.asdict(self)
        data["decoder_channels"] = list(self.decoder_channels)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResNetUNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`InputError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(
                f"unknown ResNet U-Net config keys {unknown}; allowed keys are {sorted(known)}"
            )
        values = dict(data)
        if "decoder_channels" in values:
            values["decoder_channels"] = tuple(values["decoder_channels"])
        return cls(**values)


class _BasicBlock(nn.Module):
    """ResNet basic block, torchvision's names (``conv1``, ``bn1``, ``downsample``)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNetEncoder(nn.Module):
    """The ResNet trunk without its classifier; returns the maps at strides 2, 4, 8, 16, 32."""

    def __init__(self, in_channels: int, encoder: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c_in = 64
        for index, (count, width) in enumerate(zip(_BLOCKS[encoder], _WIDTHS)):
            stride = 1 if index == 0 else 2
            blocks = [_BasicBlock(c_in, width, stride)]
            blocks += [_BasicBlock(width, width, 1) for _ in range(count - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
            c_in = width

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        features = [x]
        x = self.maxpool(x)
        for index in range(1, 5):
            x = getattr(self, f"layer{index}")(x)
            features.append(x)
        return features


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True)]


class ResNetUNet(nn.Module):
    """U-Net decoder over a ResNet encoder: ``(N, C, H, W)`` -> logits ``(N, K, H, W)``.

    Examples
    --------
    >>> net = ResNetUNet(ResNetUNetConfig(encoder="resnet18", num_classes=2))
    >>> net(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 2, 64, 64])
    """

    def __init__(self, config: ResNetUNetConfig | None = None):
        super().__init__()
        config = config if config is not None else ResNetUNetConfig()
        if not isinstance(config, ResNetUNetConfig):
            raise InputError(f"ResNetUNet expects a ResNetUNetConfig, got {type(config).__name__}")
        self.config = config
        self.encoder = ResNetEncoder(config.in_channels, config.encoder)
        skips = (256, 128, 64, 64, 0)  # layer3, layer2, layer1, conv1, none (full resolution)
        c_in = _WIDTHS[-1]
        self.decoders = nn.ModuleList()
        for skip, width in zip(skips, config.decoder_channels):
            self.decoders.append(
                nn.Sequential(*_conv_bn_relu(c_in + skip, width), *_conv_bn_relu(width, width))
            )
            c_in = width
        self.head = nn.Conv2d(c_in, config.num_classes, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation (fan-out, torchvision's for ResNets); zero biases."""
        he_init(self, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes, H, W)``; ``H`` and ``W`` must be multiples of 32."""
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise InputError(
                f"model input has shape {tuple(x.shape)}; it must be (batch, "
                f"{self.config.in_channels}, height, width) for this model"
            )
        for side in (int(x.shape[-2]), int(x.shape[-1])):
            self.config.check_input_size(side)
        features = self.encoder(x)
        x = features.pop()
        for decoder in self.decoders:
            x = nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
            if features:
                x = torch.cat([x, features.pop()], dim=1)
            x = decoder(x)
        return self.head(x)


def load_encoder_weights(model: ResNetUNet, path: str | os.PathLike[str]) -> list[str]:
    """Load a pretrained ResNet state dict from a local file into ``model.encoder``.

    Accepts torchvision's and timm's ResNet files (plain state dicts, optionally under a
    ``state_dict`` or ``model`` key, or prefixed ``encoder.`` / ``module.``); the classifier
    (``fc.*``) is dropped. A 3-band ``conv1`` is adapted to other band counts by repeating its
    mean filter, scaled so the activations keep their size. Returns the loaded key names.

    Raises
    ------
    CheckpointError
        The file cannot be read or its weights do not fit the encoder; the message names
        the first mismatching keys.
    """
    try:
        raw = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types (pickle, zip, EOF)
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"cannot read encoder weights {os.fspath(path)!r} ({first_line}); give a ResNet "
            f"state dict "
            f"saved with torch.save (torchvision's or timm's resnet18/resnet34 files)"
        ) from exc
    for key in ("state_dict", "model"):
        if isinstance(raw, dict) and isinstance(raw.get(key), dict):
            raw = raw[key]
    if not isinstance(raw, dict):
        raise CheckpointError(f"encoder weights {os.fspath(path)!r} are not a state dict")
    state: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        for prefix in ("module.", "encoder."):
            key = key.removeprefix(prefix)
        if not key.startswith("fc."):
            state[key] = value
    target = model.encoder.state_dict()
    conv = state.get("conv1.weight")
    bands = model.config.in_channels
    if conv is not None and conv.ndim == 4 and conv.shape[1] != bands:
        mean = conv.mean(dim=1, keepdim=True)
        state["conv1.weight"] = mean.repeat(1, bands, 1, 1) * (conv.shape[1] / bands)
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    wrong = sorted(k for k in set(target) & set(state) if target[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"encoder weights {os.fspath(path)!r} do not fit a {model.config.encoder} encoder: "
            f"missing {missing[:4]}, unexpected {unexpected[:4]}, other shapes {wrong[:4]}; "
            f"give the {model.config.encoder} file (or pick the encoder that matches it)"
        )
    model.encoder.load_state_dict(state, strict=True)
    return sorted(state)
