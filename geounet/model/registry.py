"""The model architectures a card can name, and the one way to build a network from a card.

Each entry pairs a frozen config class (its size rules, ``to_dict``/``from_dict``) with the
``nn.Module`` it builds. A card stores ``{"name": ..., **config.to_dict()}``; cards written
before the registry have no ``name`` and are U-Nets. Adding an architecture is one entry
here and its module under ``geounet/model/`` (docs/ARCHITECTURE.md, "Where a change belongs").

Examples
--------
>>> from geounet.model.network import UNetConfig
>>> architecture_to_dict(UNetConfig(depth=2))["name"]
'unet'
>>> architecture_from_dict({"name": "resnet-unet", "encoder": "resnet18"}).label
'resnet18 U-Net'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from torch import nn

from geounet.errors import InputError
from geounet.model.encoder import ResNetUNet, ResNetUNetConfig
from geounet.model.network import UNet, UNetConfig

ArchitectureConfig: TypeAlias = UNetConfig | ResNetUNetConfig
"""Any registered architecture's config."""


@dataclass(frozen=True)
class Architecture:
    """One registered architecture: its card name, config class and network class."""

    name: str
    config: type
    build: Callable[[Any], nn.Module]
    summary: str


ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture("unet", UNetConfig, UNet,
                     "the 2015 U-Net (Ronneberger et al.), valid or same padding"),
        Architecture("resnet-unet", ResNetUNetConfig, ResNetUNet,
                     "U-Net decoder over a ResNet-18/34 encoder (pretrained weights from a file)"),
    )
}
DEFAULT_ARCHITECTURE = "unet"


def architecture_of(config: Any) -> Architecture:
    """The registry entry of a config; :class:`InputError` for an unregistered type."""
    for arch in ARCHITECTURES.values():
        if type(config) is arch.config:
            return arch
    raise InputError(
        f"model architecture {type(config).__name__} is not registered; use one of "
        f"{sorted(ARCHITECTURES)} (geounet.model.registry)"
    )


def architecture_to_dict(config: Any) -> dict[str, Any]:
    """``{"name": ..., **config.to_dict()}`` for the card."""
    return {"name": architecture_of(config).name, **config.to_dict()}


def architecture_from_dict(data: Mapping[str, Any]) -> ArchitectureConfig:
    """Inverse of :func:`architecture_to_dict`; a dict without ``name`` is a U-Net."""
    values = dict(data)
    name = values.pop("name", DEFAULT_ARCHITECTURE)
    arch = ARCHITECTURES.get(name)
    if arch is None:
        raise InputError(
            f"model architecture {name!r} is unknown to this geounet; known: "
            f"{sorted(ARCHITECTURES)} (a newer geounet may have written this card)"
        )
    return arch.config.from_dict(values)


def build_model(config: Any) -> nn.Module:
    """The untrained network of ``config`` (any registered architecture)."""
    return architecture_of(config).build(config)
