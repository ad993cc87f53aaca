"""The per-process model: device and precision rules, the :class:`ModelRunner` (normalize,
forward on any engine) and its cache, so a process loads a checkpoint once.

Examples
--------
>>> runner = get_runner("model.pt", device="auto", precision="auto")  # doctest: +SKIP
>>> probs = runner.forward(runner.normalize(pixels)[None])  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geounet.config import TTA, Engine, Precision, choices
from geounet.errors import DeviceError, InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from geounet.model import ModelCard, UNet, UNetConfig

log = logging.getLogger(__name__)


# ---- device, precision ------------------------------------------------------------------
def resolve_device(device: str = "auto") -> torch.device:
    """Turn ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` into a usable :class:`torch.device`.

    ``auto`` is ``cuda`` when a CUDA device is visible, else ``cpu``.

    Raises
    ------
    DeviceError
        CUDA asked for but not available, or ``cuda:N`` beyond the visible devices.
    """
    import torch

    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {device!r} asked for, but torch sees no CUDA device (torch "
                f"{torch.__version__}); use --device cpu or auto, or install a CUDA build."
            )
        index = int(name[5:]) if ":" in name else torch.cuda.current_device()
        count = torch.cuda.device_count()
        if index >= count:
            raise DeviceError(
                f"device {device!r} does not exist: {count} CUDA device(s) are visible "
                f"(cuda:0..cuda:{count - 1}); pick one of them."
            )
        return torch.device("cuda", index)
    raise DeviceError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N; use one of them.")


NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""CPU flags of native bf16 (AVX512_BF16, AMX): the one rule of inference and training."""


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX512_BF16 or AMX), from ``/proc/cpuinfo``
    (:func:`geounet.engine.backends.cpu_flags`)."""
    from geounet.engine.backends import cpu_flags

    return bool(cpu_flags() & NATIVE_BF16_FLAGS)


def resolve_precision(precision: Precision, device: torch.device) -> str:
    """The precision actually used: ``fp32``, ``bf16`` or ``fp16``.

    ``auto``: on CUDA bf16 where supported, else fp16; on CPU bf16 when the CPU has
    AVX512_BF16/AMX (about 2.2x faster than fp32), else fp32.
    """
    import torch

    if precision not in choices(Precision):
        raise InputError(f"precision {precision!r} is not one of {choices(Precision)}; pick one.")
    if device.type == "cuda":
        if precision == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return str(precision)
    if precision == "auto":
        return "bf16" if cpu_supports_bf16() else "fp32"
    if precision == "fp16":
        raise DeviceError(
            "precision 'fp16' needs a CUDA device; on CPU use 'bf16', 'fp32' or 'auto'."
        )
    if precision == "bf16" and not cpu_supports_bf16():
        warnings.warn(
            "this CPU has no native bf16 (AVX512_BF16/AMX): bf16 will be emulated and slower "
            "than fp32; use precision 'auto' or 'fp32'.",
            stacklevel=3,
        )
    return str(precision)


# ---- test-time augmentation -------------------------------------------------------------
TTA_TRANSFORMS: dict[str, tuple[tuple[int, bool], ...]] = {
    "none": ((0, False),),
    "flips": ((0, False), (0, True), (2, True), (2, False)),
    "d4": tuple((k, flip) for k in range(4) for flip in (False, True)),
}
"""Each TTA setting's transforms ``(quarter turns, mirrored)``, applied as: mirror left-right
(last axis) if ``mirrored``, then ``quarter turns`` x 90 degrees counter-clockwise (numpy
``rot90`` on the last two axes). ``flips``: identity, left-right, up-down (= a half turn of the
left-right mirror), both (= a half turn)."""


def tta_transforms(tta: TTA) -> tuple[tuple[int, bool], ...]:
    """The transforms of ``tta`` (:data:`TTA_TRANSFORMS`).

    Raises
    ------
    InputError
        ``tta`` is not one of ``none``, ``flips``, ``d4``.
    """
    if tta not in TTA_TRANSFORMS:
        raise InputError(
            f"tta {tta!r} is not one of {', '.join(choices(TTA))}; use none (no test-time "
            "augmentation), flips (4 transforms) or d4 (8: flips and quarter turns)."
        )
    return TTA_TRANSFORMS[tta]


def apply_transform(x: np.ndarray, transform: tuple[int, bool]) -> np.ndarray:
    """``x`` (..., H, W) under one TTA transform (a contiguous copy)."""
    turns, mirrored = transform
    if mirrored:
        x = x[..., ::-1]
    return np.ascontiguousarray(np.rot90(x, turns, axes=(-2, -1)))


def undo_transform(y: np.ndarray, transform: tuple[int, bool]) -> np.ndarray:
    """The inverse of :func:`apply_transform` on an output ``y`` (..., h, w) (a view)."""
    turns, mirrored = transform
    y = np.rot90(y, -turns, axes=(-2, -1))
    return y[..., ::-1] if mirrored else y


# ---- the runner -------------------------------------------------------------------------
class ModelRunner:
    """A loaded model with its card, device and precision: built once per worker process.

    Parameters
    ----------
    model : the :class:`~geounet.model.UNet` (any mode; it is put in eval mode).
    card : its :class:`~geounet.model.ModelCard` (bands, normalization, classes).
    device : ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    precision : ``auto``, ``fp32``, ``bf16`` or ``fp16``.
    engine : ``torch`` (default), ``onnxruntime``, ``openvino`` or ``auto``
        (:func:`geounet.engine.backends.resolve_engine`); the other engines run the model exported
        from ``checkpoint`` (cached next to it, :func:`geounet.engine.backends.make_backend`).
    checkpoint : the checkpoint file the model came from (keys the export cache); None for a
        model built in memory (exported to a temporary folder).
    backend : an already opened engine backend to share (runners of other bands).

    Attributes
    ----------
    calls : forward passes (batches) run so far; with test-time augmentation, one per
        transform.
    tiles : tiles run so far; with test-time augmentation, each tile counts once per
        transform (the model evaluations, the cost).
    """

    def __init__(
        self,
        model: UNet,
        card: ModelCard,
        device: str = "auto",
        precision: Precision = "auto",
        engine: Engine = "torch",
        checkpoint: str | os.PathLike[str] | None = None,
        backend: Any = None,
    ) -> None:
        import torch

        from geounet.engine.backends import make_backend, resolve_engine

        self.card = card
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.engine = resolve_engine(engine, self.device.type, precision=self.precision)
        if self.engine != "torch" and backend is None:
            backend = make_backend(self.engine, model, checkpoint, len(card.bands),
                                   self.precision, torch.get_num_threads())
        self.backend = backend if self.engine != "torch" else None
        self.model = model.to(self.device).eval()
        if self.device.type == "cpu":
            self.model = self.model.to(memory_format=torch.channels_last)
        self._mean = np.asarray(card.mean, dtype=np.float32).reshape(-1, 1, 1)
        self._inv_std = (1.0 / np.asarray(card.std, dtype=np.float32)).reshape(-1, 1, 1)
        self.calls = 0
        self.tiles = 0
        self._lock = threading.Lock()

    @property
    def config(self) -> UNetConfig:
        """The model's architecture."""
        return self.card.architecture

    @property
    def num_classes(self) -> int:
        """K, the number of classes of the probabilities (the card's classes: extra model
        outputs such as a contact class are folded into them, :meth:`ModelCard.fold`)."""
        return len(self.card.classes)

    def __repr__(self) -> str:
        return (
            f"ModelRunner(device={self.device}, precision={self.precision}, "
            f"engine={self.engine}, config={self.config})"
        )

    def normalize(self, pixels: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Model input from raw pixels: ``(x - mean) / std`` per band from the model card.

        Never guessed from the data; uint8 and uint16 alike. Invalid pixels become 0 (the
        band mean), so nodata values cannot leak into their neighbours' predictions.
        """
        if pixels.shape[0] != self._mean.shape[0]:
            raise InputError(
                f"{pixels.shape[0]} bands given, the model card has {self._mean.shape[0]} "
                f"(bands {self.card.bands}); read the card's bands."
            )
        x = (pixels.astype(np.float32) - self._mean) * self._inv_std
        if valid is not None:
            x *= valid[None]
        return x

    def forward(self, batch: np.ndarray, tta: TTA = "none") -> np.ndarray:
        """Softmax probabilities (N, K, h, w) float32 of a normalized batch (N, C, H, W).

        ``tta`` (``none``, ``flips``, ``d4``): run the model on the batch under each transform
        of :data:`TTA_TRANSFORMS` (one engine call each, on every engine), undo it on the
        output and average the probabilities, in a fixed order, so a tile gives the same
        result wherever it is run. Quarter turns need square inputs unless the model takes
        both orientations (any valid size does); the output is then (N, K, h, w) as without.
        """
        transforms = tta_transforms(tta)
        if len(transforms) == 1:
            return self._forward(batch)
        total: np.ndarray | None = None
        for transform in transforms:
            probs = undo_transform(self._forward(apply_transform(batch, transform)), transform)
            total = probs.copy() if total is None else np.add(total, probs, out=total)
        assert total is not None
        total *= np.float32(1.0 / len(transforms))
        return total

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """One engine call: softmax probabilities of a normalized batch, per card class."""
        return self.card.fold(self._softmax(batch))

    def _softmax(self, batch: np.ndarray) -> np.ndarray:
        """Softmax probabilities of the model's outputs on a normalized batch."""
        import torch

        with self._lock:
            self.calls += 1
            self.tiles += int(batch.shape[0])
        # Threads of one process may run forwards at once (the in-process threaded scheduler:
        # each thread's torch ops use cores // threads torch threads); the model is read-only
        # in inference mode and the engine backends keep one request per thread.
        if self.backend is not None:  # ONNX Runtime / OpenVINO: logits from the engine
            logits_np = self.backend(np.ascontiguousarray(batch, dtype=np.float32))
            with torch.inference_mode():
                probs = torch.softmax(torch.from_numpy(logits_np), dim=1)
                return probs.contiguous().numpy()
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
            if self.device.type == "cuda":
                x = x.pin_memory().to(self.device, non_blocking=True)
                dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
                with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
                    logits = self.model(x)
                return torch.softmax(logits.float(), dim=1).cpu().numpy()
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                logits = self.model(x)
            probs = torch.softmax(logits.float(), dim=1)
            return probs.contiguous().numpy()


_RUNNERS: dict[tuple[Any, ...], ModelRunner] = {}
_RUNNER_LOCK = threading.Lock()
_LOADS = {"count": 0}


def runner_load_count() -> int:
    """How many times :func:`get_runner` loaded a checkpoint in this process."""
    return _LOADS["count"]


def clear_runner_cache() -> None:
    """Forget the cached runners (frees their models)."""
    with _RUNNER_LOCK:
        _RUNNERS.clear()


BUILTIN_MODEL = Path(__file__).parents[1] / "weights" / "builtin.pt"
"""The checkpoint used when no model is given (made by ``examples/make_model.py``)."""


def default_model_path() -> Path:
    """The built-in model's checkpoint: what ``model=None`` (no ``--model``) uses.

    Raises
    ------
    InputError
        This installation has no built-in model.
    """
    if not BUILTIN_MODEL.is_file():
        raise InputError(
            "no model given and this geounet has no built-in model "
            f"(geounet/weights/{BUILTIN_MODEL.name}); pass a checkpoint with --model PATH "
            "(model=PATH), e.g. one written by `geounet train`."
        )
    return BUILTIN_MODEL


def get_runner(
    model_path: str | os.PathLike[str] | None,
    device: str = "auto",
    precision: Precision = "auto",
    bands: tuple[int, ...] | None = None,
    engine: Engine = "torch",
) -> ModelRunner:
    """The process-wide runner for a checkpoint, loaded once, reused (ARCHITECTURE invariant 9).

    Parameters
    ----------
    model_path : a geounet checkpoint; None uses the built-in model (:func:`default_model_path`).
    device, precision : see :class:`ModelRunner`.
    bands : 1-based scene bands to read instead of the model card's (same count). Runners
        for other bands share the one loaded model.
    engine : ``torch``, ``onnxruntime``, ``openvino`` or ``auto`` (:mod:`geounet.engine.backends`);
        the export is made here, on the worker, once per process and cached on disk.

    Examples
    --------
    >>> r1 = get_runner("model.pt", "cpu", "fp32")  # doctest: +SKIP
    >>> r1 is get_runner("model.pt", "cpu", "fp32")  # doctest: +SKIP
    True
    >>> get_runner("model.pt", "cpu", "fp32", bands=(3, 2, 1)).model is r1.model  # doctest: +SKIP
    True
    """
    from geounet.model import load_checkpoint

    path = default_model_path() if model_path is None else Path(model_path)
    try:
        stat = path.stat()
        stamp: Any = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        stamp = None
    key = (str(path.resolve()), stamp, str(device), str(precision), str(engine))
    with _RUNNER_LOCK:
        runner = _RUNNERS.get(key)
        if runner is None:
            model, card = load_checkpoint(path, map_location="cpu")
            runner = ModelRunner(model, card, device=device, precision=precision,
                                 engine=engine, checkpoint=path)
            _LOADS["count"] += 1
            _RUNNERS[key] = runner
            log.info("loaded %s as %r", path, runner)
        if bands is None or tuple(bands) == tuple(runner.card.bands):
            return runner
        band_key = (*key, tuple(int(b) for b in bands))
        view = _RUNNERS.get(band_key)
        if view is None:  # the same loaded model; only the card's band list differs
            card = dataclasses.replace(runner.card, bands=band_key[-1])
            view = ModelRunner(runner.model, card, device=str(runner.device),
                               precision=runner.precision,  # type: ignore[arg-type]
                               engine=runner.engine,  # type: ignore[arg-type]
                               backend=runner.backend)
            _RUNNERS[band_key] = view
        return view
