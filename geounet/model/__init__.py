"""The U-Net (Ronneberger et al. 2015), its size rules, receptive field, checkpoint and model card.

Size rules live on :class:`UNetConfig` as properties computed from ``depth`` and
``padding`` (nothing derived is stored): the tiling engine asks the config for the
alignment, halo and valid tile sizes instead of hardcoding ``572 -> 388``.

A checkpoint is one ``torch.save`` of plain types (loadable with ``weights_only=True``)
that carries the weights together with a :class:`ModelCard`: the bands, normalization,
classes, pixel size and data type the model was trained on, so a scene that does not fit
is refused before any heavy work (:meth:`ModelCard.check_scene`).

The package's modules, one concept each: :mod:`~geounet.model.network` (the U-Net and its size
rules), :mod:`~geounet.model.card` (the model card) and :mod:`~geounet.model.checkpoint`
(checkpoint files), :mod:`~geounet.model.encoder` (the ResNet-encoder U-Net) and
:mod:`~geounet.model.registry` (the architectures a card can name). Every public name is importable from ``geounet.model``.
"""

from __future__ import annotations

from geounet.model.card import (  # noqa: F401  (the constants re-exported)
    PIXEL_SIZE_MAX_RATIO,
    PIXEL_SIZE_WARN_RATIO,
    ModelCard,
)
from geounet.model.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_FORMAT_VERSION,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from geounet.model.encoder import ResNetUNet, ResNetUNetConfig, load_encoder_weights
from geounet.model.network import (  # noqa: F401  (the constants re-exported)
    MAX_DEPTH,
    SAME_MIN_HALO,
    UNet,
    UNetConfig,
)
from geounet.model.registry import ARCHITECTURES, build_model

__all__ = [
    "ARCHITECTURES",
    "ResNetUNet",
    "ResNetUNetConfig",
    "build_model",
    "load_encoder_weights",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_FORMAT_VERSION",
    "ModelCard",
    "UNet",
    "UNetConfig",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
]
