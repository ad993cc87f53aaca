"""Inference engines behind :class:`geounet.engine.runner.ModelRunner`: PyTorch, ONNX Runtime, OpenVINO.

The runner normalizes, batches, crops and blends; an engine only turns a normalized float32
batch ``(N, C, H, W)`` into logits ``(N, K, h, w)``. PyTorch is the runner's own path; the two
optional engines (``pip install geounet[onnx]`` / ``geounet[openvino]``) run the same network
exported from the checkpoint to ONNX on the worker that loads it. The export is cached next to
the checkpoint (``.geounet-cache/`` in its folder) or, when that folder is not writable, under
the user cache directory (``$XDG_CACHE_HOME/geounet``, default ``~/.cache/geounet``), keyed by
the checkpoint's SHA-256, the engine and its version; a second load reuses it
(:func:`export_count` counts the exports of this process).

The export has dynamic batch, height and width axes, so one cached file serves every tile size
(and the whole-scene reference used by the exactness tests); OpenVINO compiles one static
shape per input shape it sees and keeps it in memory.

``auto`` (:func:`resolve_engine`) picks by a rule on the CPU's instruction sets, read at run
time from ``/proc/cpuinfo`` (never assumed), and on the installed packages: see docs/engine.md.

Examples
--------
>>> resolve_engine("torch", "cpu")
'torch'
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import threading
import warnings
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from geounet import environment
from geounet.config import Engine, choices
from geounet.engine.cache import LeastRecentlyUsed
from geounet.errors import EngineError, InputError

if TYPE_CHECKING:  # pragma: no cover
    from geounet.model import UNet

log = logging.getLogger(__name__)

OPSET = 17
"""ONNX opset of the export."""

CACHE_DIR_NAME = ".geounet-cache"
"""Folder next to a checkpoint that holds its exports."""

_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
_EXTRAS = {"onnxruntime": "onnx", "openvino": "openvino"}
_EXPORTS = {"count": 0}
_EXPORT_LOCK = threading.Lock()


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
    """Whether the package of ``engine`` can be imported (``torch`` always can)."""
    if engine == "torch":
        return True
    package = _PACKAGES.get(engine)
    return package is not None and importlib.util.find_spec(package) is not None


def available_engines() -> tuple[str, ...]:
    """The engines this installation can run, ``torch`` first."""
    return tuple(e for e in ("torch", *BACKENDS) if engine_installed(e))


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
                f"engine {engine!r} is not installed (no {_PACKAGES[engine]!r} package); "
                f"install it with `pip install geounet[{_EXTRAS[engine]}]`, or use "
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
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(_PACKAGES.get(engine, engine))
    except PackageNotFoundError:  # pragma: no cover - checked by resolve_engine before
        return "unknown"


# ---- export cache -----------------------------------------------------------------------
def export_count() -> int:
    """How many ONNX / OpenVINO exports this process has written (cache misses)."""
    return _EXPORTS["count"]


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/geounet`` (default ``~/.cache/geounet``): exports of checkpoints
    whose folder is not writable."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "geounet"


def checkpoint_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a checkpoint file (hex): :func:`geounet.model.checkpoint.file_sha256`."""
    from geounet.model.checkpoint import file_sha256

    return file_sha256(path)


def _writable_dir(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)


def cache_path(checkpoint: str | os.PathLike[str], kind: str, digest: str | None = None) -> Path:
    """Where an export of ``checkpoint`` lives (the file may not exist yet).

    ``kind`` ``onnx``: ``<stem>-<sha256[:16]>-torch<version>-opset17.onnx`` (what wrote it: the
    file does not depend on ONNX Runtime's version); ``openvino``:
    ``<stem>-<sha256[:16]>-openvino<version>-torch<version>.xml`` (+ ``.bin``). The folder is
    ``.geounet-cache/`` next to the checkpoint, or :func:`user_cache_dir` when the checkpoint's
    folder is not writable.
    """
    checkpoint = Path(checkpoint)
    digest = digest or checkpoint_digest(checkpoint)
    torch_version = engine_version("torch").split("+")[0]
    if kind == "onnx":
        name = f"{checkpoint.stem}-{digest[:16]}-torch{torch_version}-opset{OPSET}.onnx"
    else:
        name = (f"{checkpoint.stem}-{digest[:16]}-openvino{engine_version('openvino')}"
                f"-torch{torch_version}.xml")
    folder = checkpoint.resolve().parent / CACHE_DIR_NAME
    if not _writable_dir(folder):
        folder = user_cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
    return folder / name.replace("/", "_")


def export_onnx(model: UNet, path: Path, channels: int) -> None:
    """Write ``model`` as ONNX with dynamic batch, height and width to ``path`` (atomically)."""
    import torch

    cfg = model.config
    size = 8 * cfg.alignment
    if cfg.padding == "valid":
        size = cfg.valid_input_sizes(max(size, cfg.min_input_size), max(size, cfg.min_input_size)
                                     + 4 * cfg.alignment)[0]
    example = torch.zeros(1, channels, size, size)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent, prefix=".part-")
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and deprecation chatter of torch.onnx
            torch.onnx.export(
                model.float().eval(), (example,), tmp, input_names=["x"], output_names=["logits"],
                dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "logits": {0: "n", 2: "oh", 3: "ow"}},
                opset_version=OPSET, dynamo=False,
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def exported_model(
    checkpoint: str | os.PathLike[str], model: UNet, channels: int, engine: str
) -> Path:
    """The cached export of ``checkpoint`` for ``engine``, written once (first load) and reused.

    ``onnxruntime`` opens the ONNX file; ``openvino`` its IR (``.xml``/``.bin``) converted from
    that ONNX file. Each is written under a temporary name and renamed when complete.
    """
    digest = checkpoint_digest(checkpoint)
    with _EXPORT_LOCK:
        onnx_path = cache_path(checkpoint, "onnx", digest)
        if engine == "openvino":
            xml = cache_path(checkpoint, "openvino", digest)
            if xml.is_file() and xml.with_suffix(".bin").is_file():
                return xml
        if not onnx_path.is_file():
            log.info("exporting %s to ONNX: %s", checkpoint, onnx_path)
            export_onnx(model, onnx_path, channels)
            _EXPORTS["count"] += 1
        if engine != "openvino":
            return onnx_path
        ov = import_openvino()
        log.info("converting %s to OpenVINO IR: %s", onnx_path, xml)
        tmp = xml.with_name(f".part-{os.getpid()}-{xml.name}")
        ov.save_model(read_onnx(onnx_path), str(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(tmp, xml)
        _EXPORTS["count"] += 1
        return xml


def import_openvino() -> Any:
    """``import openvino`` without its model conversion tool.

    ``openvino/__init__.py`` imports ``openvino.tools.ovc`` for ``openvino.convert_model``, and
    that import sends a usage-telemetry event (``openvino_telemetry``: a forked copy of this
    process posting to Google Analytics) unless the user opted out with ``opt_in_out
    --opt_out``. geounet sends nothing anywhere and does not need the tool (it reads ONNX
    with the runtime's frontend, :func:`read_onnx`), so the first import here skips it: in
    this process ``openvino.convert_model`` is then missing; ``from openvino.tools.ovc import
    convert_model`` still works (and sends its event). An ``openvino`` already imported is
    returned as it is."""
    import sys

    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    blocked = "openvino.tools.ovc" not in sys.modules
    if blocked:
        sys.modules["openvino.tools.ovc"] = None  # type: ignore[assignment]  # ImportError
    try:
        import openvino
    finally:
        if blocked and sys.modules.get("openvino.tools.ovc", False) is None:
            del sys.modules["openvino.tools.ovc"]
    return openvino


def read_onnx(path: Path) -> Any:
    """An ONNX file as an OpenVINO model, by OpenVINO's ONNX frontend (``Core.read_model``;
    the same model as ``openvino.convert_model`` of the file without options, without the
    conversion tool: :func:`import_openvino`)."""
    return import_openvino().Core().read_model(str(path))


# ---- backends ---------------------------------------------------------------------------
class Backend(Protocol):
    """An engine's forward pass, what :class:`geounet.engine.runner.ModelRunner` calls: a
    normalized float32 batch ``(N, C, H, W)`` to logits ``(N, K, h, w)`` float32, safe to
    call from several threads at once. ``name`` is its :data:`geounet.config.Engine` name."""

    name: str

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


COMPILED_SHAPES = 8
"""Input shapes an :class:`OpenVinoBackend` keeps compiled (and each thread keeps infer
requests for); beyond it the least recently used is dropped and compiled again if it comes
back. A run sees a few (full batches, the last batch of a chunk)."""


class OnnxRuntimeBackend:
    """ONNX Runtime CPU session of an exported model; ``threads`` intra-op threads."""

    name = "onnxruntime"

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

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Logits (N, K, h, w) float32 of a normalized float32 batch (N, C, H, W)."""
        return np.asarray(self.session.run(None, {"x": batch})[0], dtype=np.float32)


class OpenVinoBackend:
    """OpenVINO CPU model; one compiled model per input shape, ``f32`` or ``bf16`` precision."""

    name = "openvino"

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


BACKENDS: dict[str, type[Backend]] = {"onnxruntime": OnnxRuntimeBackend,
                                       "openvino": OpenVinoBackend}
"""The engines besides torch (the runner's own path), by :data:`geounet.config.Engine` name."""


def save_in_memory_model(model: UNet) -> Path:
    """Save the weights of a model built in memory (no checkpoint) to a fresh temporary folder,
    removed when the process exits, so its exports have a file to be keyed by."""
    import atexit
    import shutil

    import torch

    folder = Path(tempfile.mkdtemp(prefix="geounet-export-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    checkpoint = folder / "model.pt"
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, checkpoint)
    return checkpoint


def make_backend(
    engine: str,
    model: UNet,
    checkpoint: str | os.PathLike[str] | None,
    channels: int,
    precision: str,
    threads: int,
) -> Backend:
    """Export (or reuse the cached export of) ``checkpoint`` and open it with ``engine``.

    ``checkpoint=None`` (a model built in memory) exports into a fresh temporary folder,
    removed once the backend is garbage-collected (or at exit).

    Raises
    ------
    EngineError
        ``onnxruntime`` with a precision other than fp32.
    """
    resolve_engine(engine, "cpu", precision=precision)  # onnxruntime: fp32 only
    folder = None
    if checkpoint is None:
        import torch

        folder = Path(tempfile.mkdtemp(prefix="geounet-export-"))
        checkpoint = folder / "model.pt"
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, checkpoint)
    try:
        path = exported_model(checkpoint, model, channels, engine)
        backend: Backend
        if engine == "onnxruntime":
            backend = OnnxRuntimeBackend(path, threads)
        else:
            backend = OpenVinoBackend(path, threads, precision)
    except BaseException:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    if folder is not None:
        weakref.finalize(backend, shutil.rmtree, folder, ignore_errors=True)
    return backend
