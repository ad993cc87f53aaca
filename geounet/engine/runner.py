"""The per-process model: device and precision rules, the :class:`ModelRunner` (normalize,
forward on any engine) and its cache, so a process loads a checkpoint once.

Examples
--------
>>> runner = get_runner("model.pt", device="auto", precision="auto")  # doctest: +SKIP
>>> probs = runner.forward(runner.normalize(pixels)[None])  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geounet.config import TTA, Engine, InferencePrecision, choices
from geounet.engine.cache import LeastRecentlyUsed
from geounet.engine.execution import (  # re-exported: part of the runner's face
    Execution,
    cpu_supports_bf16,
    resolve_device,
    resolve_execution,
    resolve_precision,
)
from geounet.errors import InputError

__all__ = [  # the execution rules (geounet.engine.execution) are re-exported here
    "BUILTIN_MODEL", "MAX_INT8_RUNNERS", "RUNNER_CACHE_SIZE", "TTA_TRANSFORMS", "Execution", "ModelRunner",
    "apply_transform", "cached_runner_count", "clear_runner_cache", "cpu_supports_bf16", "default_model_path",
    "get_runner", "resolve_device", "resolve_execution", "resolve_precision",
    "runner_load_count", "tta_transforms", "undo_transform",
]

if TYPE_CHECKING:  # pragma: no cover
    from geounet.engine.backends import Backend, BackendSpec
    from geounet.model import ModelCard, UNet, UNetConfig

log = logging.getLogger(__name__)


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
    precision : ``auto``, ``fp32``, ``bf16``, ``fp16`` or ``int8`` (:func:`resolve_execution`).
    engine : ``torch`` (default), ``onnxruntime``, ``openvino`` or ``auto``
        (:func:`geounet.engine.backends.resolve_engine`); each is a
        :class:`~geounet.engine.backends.Backend` opened by
        :func:`~geounet.engine.backends.make_backend` (the exported engines run the model
        exported from ``checkpoint``, cached next to it). ``auto``: if the chosen engine fails
        to open, the runner logs why and runs torch.
    checkpoint : the checkpoint file the model came from (keys the export cache); None for a
        model built in memory (exported to a temporary folder).
    backend : an already opened backend to share (runners of other bands), of ``engine``.
    calibration : what an int8 model is calibrated on: a scene
        (:class:`~geounet.raster.SceneInfo`) or raw pixels (C, H, W)
        (:func:`geounet.engine.quantize.read_calibration`); needed for int8, and ``auto`` picks
        int8 only with it.

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
        precision: InferencePrecision = "auto",
        engine: Engine = "torch",
        checkpoint: str | os.PathLike[str] | None = None,
        backend: Backend | None = None,
        calibration: Any = None,
    ) -> None:
        self.card = card
        self._mean = np.asarray(card.mean, dtype=np.float32).reshape(-1, 1, 1)
        self._inv_std = (1.0 / np.asarray(card.std, dtype=np.float32)).reshape(-1, 1, 1)
        from geounet.engine.quantize import source_pixels

        choice = resolve_execution(engine, precision, device, source_pixels(calibration))
        self.device, self.engine, self.precision = choice.device, choice.engine, choice.precision
        self.reason = choice.reason
        if self.precision == "int8" and calibration is None and backend is None:
            raise InputError(
                "precision 'int8' needs pixels to calibrate on: give calibration= a scene "
                "(geounet.raster.open_scene) or an array (C, H, W); predict and segment use "
                "the scene being predicted."
            )
        if backend is None:
            backend = self._open_backend(model, checkpoint, calibration, engine, precision)
        self.backend: Backend = backend
        self.model = model.eval()
        self.calls = 0
        self.tiles = 0
        self._lock = threading.Lock()

    def _open_backend(self, model: UNet, checkpoint: str | os.PathLike[str] | None,
                      calibration: Any, asked: Engine, precision: InferencePrecision) -> Backend:
        """This runner's engine backend (:func:`geounet.engine.backends.make_backend`);
        ``engine auto`` (``asked``): if it fails to open, the torch backend instead."""
        from geounet.engine import backends

        try:
            return backends.make_backend(self.engine, self._spec(model, checkpoint, calibration))
        except Exception as exc:  # noqa: BLE001 - an optional engine failing falls back
            if asked != "auto" or self.engine == "torch":
                raise
            self._fall_back(precision, f"{type(exc).__name__}: {exc}")
        return backends.make_backend(self.engine, self._spec(model, checkpoint, None))

    def _spec(self, model: UNet, checkpoint: str | os.PathLike[str] | None,
              calibration: Any) -> BackendSpec:
        """What this runner's backend is opened from; at int8 the calibration crops of
        ``calibration``, normalized as tiles are."""
        import torch

        from geounet.engine.backends import BackendSpec

        batch = None
        if self.precision == "int8":
            from geounet.engine.quantize import read_calibration

            pixels, valid = read_calibration(calibration, self.card.bands, self.config)
            batch = np.stack([self.normalize(p, v) for p, v in zip(pixels, valid)])
        return BackendSpec(model=model, channels=len(self.card.bands), device=self.device,
                           precision=self.precision, threads=torch.get_num_threads(),
                           checkpoint=None if checkpoint is None else Path(checkpoint),
                           calibration=batch)

    def _fall_back(self, precision: InferencePrecision, why: str) -> None:
        """``engine auto``: the chosen optional engine failed to open; run torch instead."""
        failed = self.engine
        self.engine = "torch"
        self.precision = resolve_precision(precision, self.device, "torch")
        self.reason = (f"engine auto -> {failed} failed to open ({why}); running torch at "
                       f"{self.precision} instead")
        log.warning("%s", self.reason)

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

    def describe(self) -> str:
        """Which engine and precision run, and why (the log line of a run)."""
        return f"engine {self.engine}, precision {self.precision} ({self.reason})"

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
        with self._lock:
            self.calls += 1
            self.tiles += int(batch.shape[0])
        # Threads of one process may run forwards at once (the in-process threaded scheduler:
        # each thread's torch ops use cores // threads torch threads); the model is read-only
        # in inference mode and the engine backends keep one request per thread.
        return self.backend.probabilities(np.ascontiguousarray(batch, dtype=np.float32))


RUNNER_CACHE_SIZE = 8
"""Runners a process keeps (one per checkpoint file version, device, precision and engine,
plus band views of them): beyond it the least recently used is dropped and loaded again
when next asked for. A run uses one or two; a rewritten checkpoint is a new entry."""

_RUNNERS: LeastRecentlyUsed[tuple[Any, ...], ModelRunner] = LeastRecentlyUsed(RUNNER_CACHE_SIZE)
_RUNNER_LOCK = threading.Lock()
_LOADS = {"count": 0}


def runner_load_count() -> int:
    """How many times :func:`get_runner` loaded a checkpoint in this process."""
    return _LOADS["count"]


def cached_runner_count() -> int:
    """How many runners the cache holds now (at most :data:`RUNNER_CACHE_SIZE`)."""
    with _RUNNER_LOCK:
        return len(_RUNNERS) + len(_INT8_RUNNERS)


def clear_runner_cache() -> None:
    """Forget the cached runners (frees their models)."""
    with _RUNNER_LOCK:
        _RUNNERS.clear()
        _INT8_RUNNERS.clear()


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


MAX_INT8_RUNNERS = 4
"""int8 runners (one per calibrated scene) a process keeps; the least recently used is
dropped first."""

_INT8_RUNNERS: LeastRecentlyUsed[tuple[Any, ...], ModelRunner] = LeastRecentlyUsed(
    MAX_INT8_RUNNERS
)


def get_runner(
    model_path: str | os.PathLike[str] | None,
    device: str = "auto",
    precision: InferencePrecision = "auto",
    bands: tuple[int, ...] | None = None,
    engine: Engine = "torch",
    calibration: Any = None,
) -> ModelRunner:
    """The process-wide runner for a checkpoint, loaded once, reused (ARCHITECTURE invariant 9).

    Parameters
    ----------
    model_path : a geounet checkpoint; None uses the built-in model (:func:`default_model_path`).
    device, precision : see :class:`ModelRunner`.
    bands : 1-based scene bands to read instead of the model card's (same count). Runners
        for other bands share the one loaded model.
    engine : ``torch`` (default here; ``geounet.predict`` and the CLI default to ``auto``),
        ``onnxruntime``, ``openvino`` or ``auto`` (:mod:`geounet.engine.backends`); the export
        is made here, on the worker, once per process and cached on disk.
    calibration : the scene (:class:`~geounet.raster.SceneInfo`) or raw pixels (C, H, W) the
        runner is for: its size takes part in ``engine auto`` / ``precision auto``
        (:func:`resolve_execution`); an int8 model is calibrated on it
        (:mod:`geounet.engine.quantize`) and it is then part of the runner's identity (one
        runner per scene, at most :data:`MAX_INT8_RUNNERS` kept).

    Examples
    --------
    >>> r1 = get_runner("model.pt", "cpu", "fp32")  # doctest: +SKIP
    >>> r1 is get_runner("model.pt", "cpu", "fp32")  # doctest: +SKIP
    True
    >>> get_runner("model.pt", "cpu", "fp32", bands=(3, 2, 1)).model is r1.model  # doctest: +SKIP
    True
    """
    path = default_model_path() if model_path is None else Path(model_path)
    try:
        stat = path.stat()
        stamp: Any = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        stamp = None
    from geounet.engine.quantize import calibration_key, source_pixels

    # what runs depends on the scene's size too (engine auto, precision auto): keyed by it
    choice = resolve_execution(engine, precision, device, source_pixels(calibration))
    key: tuple[Any, ...] = (str(path.resolve()), stamp, str(device), str(precision), str(engine),
                            choice.engine, choice.precision)
    if choice.precision == "int8":
        return _int8_runner(path, key, bands, calibration, calibration_key(calibration))
    with _RUNNER_LOCK:
        runner = _RUNNERS.get(key)
        if runner is None:
            runner = _load_runner(path, device, precision, engine, calibration=calibration)
            _RUNNERS.put(key, runner)
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
            view.reason = runner.reason
            _RUNNERS.put(band_key, view)
        return view


def _load_runner(path: Path, device: str, precision: InferencePrecision, engine: Engine,
                 bands: tuple[int, ...] | None = None, calibration: Any = None) -> ModelRunner:
    from geounet.model import load_checkpoint

    model, card = load_checkpoint(path, map_location="cpu")
    if bands is not None:
        card = dataclasses.replace(card, bands=tuple(int(b) for b in bands))
    runner = ModelRunner(model, card, device=device, precision=precision, engine=engine,
                         checkpoint=path, calibration=calibration)
    _LOADS["count"] += 1
    log.info("loaded %s as %r: %s", path, runner, runner.describe())
    return runner


def _int8_runner(path: Path, key: tuple[Any, ...], bands: tuple[int, ...] | None,
                 calibration: Any, calibration_id: tuple[Any, ...]) -> ModelRunner:
    """The runner of ``key`` calibrated on ``calibration`` (its own model load and int8 model:
    the scene's bands are read for calibration, so ``bands`` is part of it)."""
    device, precision, engine = key[2], key[3], key[4]
    full_key = ("int8", *key, tuple(bands) if bands is not None else None, calibration_id)
    with _RUNNER_LOCK:
        runner = _INT8_RUNNERS.get(full_key)
        if runner is None:
            runner = _load_runner(path, device, precision, engine, bands, calibration)
            _INT8_RUNNERS.put(full_key, runner)
        return runner
