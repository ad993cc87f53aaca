"""Inference engines behind :class:`geounet.engine.runner.ModelRunner`: PyTorch, ONNX Runtime,
OpenVINO, each a :class:`Backend` registered in :data:`BACKENDS` and opened by
:func:`make_backend` from one :class:`BackendSpec`; and the rules of which engine runs.

The runner normalizes, batches, crops and blends; a backend only turns a normalized float32
batch ``(N, C, H, W)`` into softmax probabilities ``(N, K, h, w)`` of the model's outputs.
:class:`TorchBackend` runs the module itself (device, autocast, channels_last); the two
optional engines (``pip install geounet[onnx]`` / ``geounet[openvino]``) run the same network
exported from the checkpoint to ONNX on the worker that loads it (the export cache:
:mod:`geounet.engine.export`; int8 models: :mod:`geounet.engine.quantize`). OpenVINO compiles
one static shape per input shape it sees and keeps the :data:`COMPILED_SHAPES` last used.

``auto`` (:func:`resolve_engine`) picks by a rule on the CPU's instruction sets, read at run
time from ``/proc/cpuinfo`` (never assumed), and on the installed packages: see docs/engine.md.

Examples
--------
>>> resolve_engine("torch", "cpu")
'torch'
>>> list(BACKENDS)
['torch', 'onnxruntime', 'openvino']
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from geounet import environment
from geounet.config import Engine, choices
from geounet.engine.cache import LeastRecentlyUsed
from geounet.engine.export import (
    exported_model,
    import_openvino,
    package_version,
    remove_folder,
    temporary_checkpoint,
)
from geounet.engine.quantize import int8_model
from geounet.errors import EngineError, InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

log = logging.getLogger(__name__)


# ---- what the machine has ---------------------------------------------------------------
cpu_flags = environment.cpu_flags
"""The CPU's instruction-set flags from ``/proc/cpuinfo`` (:func:`geounet.environment.cpu_flags`)."""

ENGINE_AUTO_MIN_PIXELS = 2048 * 2048
"""``engine auto`` runs a scene of fewer model pixels (4.2 MP) on torch: OpenVINO's start
(import, compiling the tile shape, teardown: about 0.9 s, benchmarks/RESULTS.md "int8")
outweighs its 0.3-0.9 CPU-s per MP advantage there."""

INT8_ENGINES = ("openvino", "onnxruntime")
"""Engines that run int8 models, fastest first (docs/engine.md, "int8")."""


def engine_installed(engine: str) -> bool:
    """Whether the package of ``engine`` (its backend's ``package``) can be imported; a
    backend without an ``extra`` (``torch``, a dependency of geounet) always can."""
    backend = BACKENDS.get(engine)
    if backend is None:
        return False
    return backend.extra is None or importlib.util.find_spec(backend.package) is not None


def available_engines() -> tuple[str, ...]:
    """The engines this installation can run, ``torch`` first."""
    return tuple(e for e in BACKENDS if engine_installed(e))


def resolve_engine(
    engine: Engine,
    device_type: str,
    flags: frozenset[str] | None = None,
    precision: str = "fp32",
    scene_pixels: int | None = None,
) -> str:
    """The engine actually used for ``engine`` on a ``device_type`` (``cpu`` or ``cuda``) device
    at ``precision`` (asked for, ``auto`` included, or resolved: ``fp32``, ``bf16``, ``int8``)
    for a scene of ``scene_pixels`` model pixels (None: not known).

    The ``auto`` rule (docs/engine.md has the measurements behind it, from
    ``benchmarks/bench_engines.py``; a documented table, not a timing at run time, so the engine
    of a run never depends on the machine's load):

    1. a CUDA device, or a CPU without AVX2 (not x86-64 v3, e.g. ARM; no measurement there):
       ``torch``; also a scene of fewer than :data:`ENGINE_AUTO_MIN_PIXELS` model pixels, unless
       the precision is int8 (the other engines' start costs more than they save there);
    2. int8: ``openvino`` if installed, else ``onnxruntime`` (torch runs no int8);
    3. bf16: ``openvino`` if installed (2.4x PyTorch fp32 on an AVX-512 CPU), else ``torch``
       (ONNX Runtime runs fp32 and int8 only);
    4. fp32 or ``auto`` precision on an AVX2 / AVX-512 CPU: ``openvino`` if installed, else
       ``onnxruntime`` if installed, else ``torch`` (OpenVINO used 0.52-0.89x and ONNX Runtime
       0.60-1.02x the CPU-seconds of PyTorch channels_last on AVX2 and AVX-512 CPUs).

    Raises
    ------
    InputError
        ``engine`` is not one of the choices.
    EngineError
        ``onnxruntime`` / ``openvino`` asked for on a CUDA device or without its package;
        ``onnxruntime`` with bf16; int8 with ``torch``, on CUDA, or with no int8 engine installed.
    """
    if engine not in choices(Engine):
        raise InputError(f"engine {engine!r} is not one of {choices(Engine)}; pick one.")
    if precision == "int8":
        _check_int8(engine, device_type)
    if engine == "auto":
        flags = environment.cpu_flags() if flags is None else flags
        if device_type != "cpu" or "avx2" not in flags:
            return "torch"
        small = scene_pixels is not None and scene_pixels < ENGINE_AUTO_MIN_PIXELS
        if small and precision != "int8":
            return "torch"
        order = {"bf16": ("openvino",), "int8": INT8_ENGINES}.get(precision, INT8_ENGINES)
        for candidate in order:
            if engine_installed(candidate):
                return candidate
        return "torch"
    if engine != "torch":
        if device_type != "cpu":
            raise EngineError(
                f"engine {engine!r} runs on the CPU only, but device {device_type!r} was asked "
                f"for; use --engine torch on a GPU, or --device cpu."
            )
        if not engine_installed(engine):
            raise EngineError(
                f"engine {engine!r} is not installed (no {BACKENDS[engine].package!r} package); "
                f"install it with `pip install geounet[{BACKENDS[engine].extra}]`, or use "
                f"--engine torch or auto."
            )
        if engine == "onnxruntime" and precision in ("bf16", "fp16"):
            raise EngineError(
                f"engine 'onnxruntime' runs fp32 and int8 only, but precision {precision!r} was "
                f"resolved; use --precision fp32 or int8, or --engine openvino for bf16."
            )
    return str(engine)


def _check_int8(engine: str, device_type: str) -> None:
    """Raise EngineError where precision int8 cannot run."""
    if device_type != "cpu":
        raise EngineError(
            f"precision 'int8' runs on the CPU (ONNX Runtime or OpenVINO), not on device "
            f"{device_type!r}; use --precision auto, bf16 or fp16 on a GPU, or --device cpu."
        )
    if engine == "torch":
        raise EngineError(
            "precision 'int8' runs on the onnxruntime or openvino engine, not 'torch'; use "
            "--engine auto, openvino or onnxruntime, or --precision fp32."
        )
    if not engine_installed("onnxruntime"):  # its quantizer makes the int8 model, for both
        raise EngineError(
            "precision 'int8' needs ONNX Runtime's quantizer (the 'onnxruntime' package), also "
            "for --engine openvino; install it with `pip install geounet[onnx]`, or use "
            "--precision fp32."
        )


def engine_version(engine: str) -> str:
    """Version string of an engine's package (``torch`` included)."""
    backend = BACKENDS.get(engine)
    return package_version(backend.package if backend is not None else engine)


# ---- backends ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class BackendSpec:
    """What every backend is opened from (:meth:`Backend.open`), resolved by the runner.

    Attributes
    ----------
    model : the network (a :class:`~geounet.model.UNet` or another registered architecture).
    channels : input bands C.
    device : the resolved :class:`torch.device` (the exported engines run on the CPU).
    precision : the resolved precision: ``fp32``, ``bf16``, ``fp16`` or ``int8``.
    threads : intra-op threads of an exported engine.
    checkpoint : the file the model came from (keys the export cache); None for a model built
        in memory (:func:`make_backend` saves it to a temporary folder for the exports).
    calibration : the normalized calibration batch (N, C, S, S) of an int8 model
        (:func:`geounet.engine.quantize.read_calibration`); None otherwise.
    """

    model: nn.Module
    channels: int
    device: torch.device
    precision: str
    threads: int = 1
    checkpoint: Path | None = None
    calibration: np.ndarray | None = None


class Backend(Protocol):
    """An engine's forward pass, what :class:`geounet.engine.runner.ModelRunner` calls: a
    normalized float32 batch ``(N, C, H, W)`` to softmax probabilities ``(N, K, h, w)`` float32
    of the model's outputs, safe to call from several threads at once.

    ``name`` is its :data:`geounet.config.Engine` name, ``package`` the package it imports,
    ``extra`` the ``pip install geounet[EXTRA]`` that installs it (None: always installed),
    ``exported`` whether it runs an export of the checkpoint file (a model built in memory is
    then saved to a temporary file first)."""

    name: ClassVar[str]
    package: ClassVar[str]
    extra: ClassVar[str | None]
    exported: ClassVar[bool]

    @classmethod
    def open(cls, spec: BackendSpec) -> Backend: ...

    def probabilities(self, batch: np.ndarray) -> np.ndarray: ...


class TorchBackend:
    """The PyTorch module on its device: channels_last on the CPU, autocast for ``bf16`` (CPU
    and CUDA) and ``fp16`` (CUDA); the softmax is taken in float32 on the device."""

    name: ClassVar[str] = "torch"
    package: ClassVar[str] = "torch"
    extra: ClassVar[str | None] = None
    exported: ClassVar[bool] = False

    def __init__(self, module: nn.Module, device: torch.device, precision: str) -> None:
        import torch

        self.device, self.precision = device, precision
        self.module = module.to(device).eval()
        if device.type == "cpu":
            self.module = self.module.to(memory_format=torch.channels_last)

    @classmethod
    def open(cls, spec: BackendSpec) -> TorchBackend:
        return cls(spec.model, spec.device, spec.precision)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Softmax probabilities (N, K, h, w) float32 of a normalized batch (N, C, H, W)."""
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
            if self.device.type == "cuda":
                x = x.pin_memory().to(self.device, non_blocking=True)
                dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
                with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
                    logits = self.module(x)
                return torch.softmax(logits.float(), dim=1).cpu().numpy()
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                logits = self.module(x)
            probs = torch.softmax(logits.float(), dim=1)
            return probs.contiguous().numpy()


def model_file(spec: BackendSpec, engine: str) -> Path:
    """The cached model file ``engine`` opens for ``spec``: the fp32 export of its checkpoint
    (:func:`geounet.engine.export.exported_model`) or, at int8, the quantized model calibrated
    on ``spec.calibration`` (:func:`geounet.engine.quantize.int8_model`)."""
    if spec.checkpoint is None:
        raise InputError(f"engine {engine!r} runs an export of a checkpoint file; give one.")
    if spec.precision != "int8":
        return exported_model(spec.checkpoint, spec.model, spec.channels, engine)
    if spec.calibration is None:
        raise InputError(
            "precision 'int8' needs pixels to calibrate on: give calibration= a scene "
            "(geounet.raster.open_scene) or an array (C, H, W)."
        )
    return int8_model(spec.checkpoint, spec.model, spec.channels, engine, spec.calibration)


class ExportedBackend:
    """An engine that runs the exported model: ``__call__`` gives its logits (N, K, h, w)
    float32; :meth:`probabilities` their softmax, taken by torch on the CPU exactly as for
    :class:`TorchBackend`'s CPU path (the same numbers for the same logits)."""

    path: Path
    exported: ClassVar[bool] = True

    def __call__(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - per engine
        raise NotImplementedError

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Softmax probabilities (N, K, h, w) float32 of a normalized batch (N, C, H, W)."""
        import torch

        logits = self(np.ascontiguousarray(batch, dtype=np.float32))
        with torch.inference_mode():
            probs = torch.softmax(torch.from_numpy(logits), dim=1)
            return probs.contiguous().numpy()


COMPILED_SHAPES = 8
"""Input shapes an :class:`OpenVinoBackend` keeps compiled (and each thread keeps infer
requests for); beyond it the least recently used is dropped and compiled again if it comes
back. A run sees a few (full batches, the last batch of a chunk)."""


class OnnxRuntimeBackend(ExportedBackend):
    """ONNX Runtime CPU session of an exported model; ``threads`` intra-op threads."""

    name: ClassVar[str] = "onnxruntime"
    package: ClassVar[str] = "onnxruntime"
    extra: ClassVar[str | None] = "onnx"

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = path
        self.session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )

    @classmethod
    def open(cls, spec: BackendSpec) -> OnnxRuntimeBackend:
        return cls(model_file(spec, cls.name), spec.threads)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Logits (N, K, h, w) float32 of a normalized float32 batch (N, C, H, W)."""
        return np.asarray(self.session.run(None, {"x": batch})[0], dtype=np.float32)


class OpenVinoBackend(ExportedBackend):
    """OpenVINO CPU model; one compiled model per input shape, ``f32`` or ``bf16`` precision
    (an int8 model runs its integer kernels under ``f32``)."""

    name: ClassVar[str] = "openvino"
    package: ClassVar[str] = "openvino"
    extra: ClassVar[str | None] = "openvino"

    def __init__(self, path: Path, threads: int, precision: str) -> None:
        ov = import_openvino()
        self.path = path
        self.core = ov.Core()
        self.model = self.core.read_model(str(path))
        self.config = {
            # explicit: OpenVINO would pick bf16 on its own on AMX CPUs
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "INFERENCE_NUM_THREADS": max(1, int(threads)),
            "PERFORMANCE_HINT": "LATENCY",
        }
        self._compiled: LeastRecentlyUsed[tuple[int, ...], Any] = LeastRecentlyUsed(
            COMPILED_SHAPES)
        self._lock = threading.Lock()
        self._local = threading.local()  # one infer request per thread and shape

    @classmethod
    def open(cls, spec: BackendSpec) -> OpenVinoBackend:
        return cls(model_file(spec, cls.name), spec.threads, spec.precision)

    def _compiled_for(self, shape: tuple[int, ...]) -> Any:
        with self._lock:
            compiled = self._compiled.get(shape)
            if compiled is None:
                model = self.model.clone()
                model.reshape({model.inputs[0].any_name: list(shape)})
                compiled = self.core.compile_model(model, "CPU", self.config)
                self._compiled.put(shape, compiled)
            return compiled

    def _request_for(self, shape: tuple[int, ...]) -> Any:
        requests = self._local.__dict__.setdefault("requests", LeastRecentlyUsed(COMPILED_SHAPES))
        request = requests.get(shape)
        if request is None:  # an infer request runs one inference at a time: one per thread
            request = self._compiled_for(shape).create_infer_request()
            requests.put(shape, request)
        return request

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Logits (N, K, h, w) float32 of a normalized float32 batch (N, C, H, W); safe to
        call from several threads at once."""
        request = self._request_for(tuple(int(n) for n in batch.shape))
        request.infer({0: batch})
        return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)


BACKENDS: dict[str, type[Backend]] = {
    backend.name: backend for backend in (TorchBackend, OnnxRuntimeBackend, OpenVinoBackend)
}
"""Every engine's backend, by :data:`geounet.config.Engine` name (``auto`` is a rule,
:func:`resolve_engine`, not a backend), ``torch`` first."""


def make_backend(engine: str, spec: BackendSpec) -> Backend:
    """Open ``engine``'s backend (:data:`BACKENDS`) for ``spec``.

    An exported engine exports (or reuses the cached export of) ``spec.checkpoint``;
    ``checkpoint=None`` (a model built in memory) exports into a fresh temporary folder,
    removed once the backend is garbage-collected (or at exit).

    Raises
    ------
    InputError
        ``engine`` has no backend (``auto`` is resolved first: :func:`resolve_engine`).
    EngineError
        ``engine`` cannot run ``spec``'s device or precision (e.g. onnxruntime with bf16).
    """
    backend_type = BACKENDS.get(engine)
    if backend_type is None:
        raise InputError(f"engine {engine!r} has no backend; one of {', '.join(BACKENDS)}.")
    resolve_engine(engine, spec.device.type, precision=spec.precision)  # type: ignore[arg-type]
    folder = None
    if backend_type.exported and spec.checkpoint is None:
        checkpoint, folder = temporary_checkpoint(spec.model)
        spec = dataclasses.replace(spec, checkpoint=checkpoint)
    try:
        backend = backend_type.open(spec)
    except BaseException:
        if folder is not None:
            remove_folder(folder)
        raise
    if folder is not None:
        weakref.finalize(backend, remove_folder, folder)
    return backend
