"""Checkpoints: one ``torch.save`` of plain types (loadable with ``weights_only=True``) that
carries the weights together with their :class:`~geounet.model.card.ModelCard`; writing it
atomically, reading and validating it, and its content hash (the model's identity across
machines).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from geounet._version import __version__
from geounet.errors import CheckpointError, InputError, OutputExistsError, option
from geounet.model.card import ModelCard
from geounet.model.registry import ARCHITECTURES, architecture_of, build_model

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_FORMAT_VERSION",
    "file_sha256",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "geounet-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
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
    model : the network (:class:`~geounet.model.UNet` or another registered architecture); its config must equal ``card.architecture``.
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
    config = getattr(model, "config", None)
    if not isinstance(model, nn.Module) or config is None or (
        type(model) is not architecture_of(config).build
    ):
        raise InputError(
            f"save_checkpoint needs a geounet network (one of {sorted(ARCHITECTURES)}), "
            f"got {type(model).__name__}"
        )
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
            f"checkpoint {path} already exists; pass {option('overwrite', True)} to replace it"
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
) -> tuple[nn.Module, ModelCard]:
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
    model = build_model(card.architecture)
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


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's content (the identity of a model across machines)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
