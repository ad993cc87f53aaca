"""int8 inference: post-training static quantization of the exported model, calibrated on crops
of the scene being predicted, cached per (checkpoint hash, calibration digest).

The recipe (docs/engine.md, "int8"):

- **Calibration inputs**: :data:`CALIBRATION_GRID` x :data:`CALIBRATION_GRID` crops of the
  scene at the centres of an even lattice over it (:func:`calibration_windows`, a pure
  function of the scene's size and the model's architecture, so a rerun or a resume reads the
  same pixels), normalized by the model card exactly as tiles are. Nothing random.
- **Quantization**: ONNX Runtime's ``quantize_static``, QDQ format (one file that ONNX
  Runtime fuses into integer kernels and OpenVINO reads as FakeQuantize), uint8 activations,
  int8 per-channel weights, min/max ranges; weights reduced to 7 bits on CPUs without VNNI/AMX
  (ONNX Runtime's advice against 16-bit saturation in AVX2's ``vpmaddubsw``).
- **Cache**: ``<stem>-<sha256[:16]>-int8-<calibration digest[:16]>-onnxruntime<version>.onnx``
  (and its OpenVINO IR) next to the fp32 export (:func:`~geounet.engine.export.cache_path`),
  written under a temporary name and renamed, by one process at a time (a file lock), the
  :data:`MAX_CACHED` most recently used calibrations of a checkpoint kept.

Examples
--------
>>> calibration_windows(1000, 700, 284, 16)[:3]
[(16, 0, 284), (16, 208, 284), (16, 416, 284)]
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geounet.engine.export import (
    checkpoint_digest,
    exported_model,
    package_version,
    save_openvino_ir,
)
from geounet.environment import cpu_flags, int8_is_faster

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from geounet.model import UNetConfig

log = logging.getLogger(__name__)

CALIBRATION_GRID = 3
"""Calibration crops per side of the lattice: 9 crops in all."""

CALIBRATION_EXTRA = 96
"""A calibration crop is the model's smallest valid input plus this many pixels (284 px at
depth 4 valid, 204 at depth 3; 256 same), so each crop still has an output of some size."""

MAX_CACHED = 8
"""Quantized models (calibrations) kept per checkpoint; the least recently used go first."""

RECIPE = "qdq-u8s8-perchannel-minmax-v1"
"""Part of the calibration digest: a change of recipe never reuses an older file."""

_QUANTIZED = {"count": 0}
_LOCK = threading.Lock()


def quantize_count() -> int:
    """How many int8 models this process has quantized (cache misses)."""
    return _QUANTIZED["count"]


def crop_size(config: UNetConfig) -> int:
    """The side of a calibration crop for ``config`` (:data:`CALIBRATION_EXTRA`)."""
    if config.padding == "valid":
        low = config.min_input_size + CALIBRATION_EXTRA
        return int(config.valid_input_sizes(low, low + 2 * config.alignment)[0])
    return int(-(-256 // config.alignment) * config.alignment)


def calibration_windows(height: int, width: int, size: int,
                        alignment: int) -> list[tuple[int, int, int]]:
    """``(y0, x0, size)`` of each calibration crop of a ``height`` x ``width`` scene, row by row:
    centred on the cells of a :data:`CALIBRATION_GRID` lattice, origins on multiples of
    ``alignment``, inside the scene where it is large enough (else from 0: the reader mirrors)."""

    def starts(extent: int) -> list[int]:
        out = []
        for i in range(CALIBRATION_GRID):
            centre = (2 * i + 1) * extent // (2 * CALIBRATION_GRID)
            start = max(0, min(centre - size // 2, extent - size))
            out.append(start // alignment * alignment)
        return out

    return [(y, x, size) for y in starts(height) for x in starts(width)]


def calibration_digest(batch: np.ndarray, reduce_range: bool) -> str:
    """SHA-256 (hex) of the calibration inputs, their shape and the recipe."""
    h = hashlib.sha256(f"{RECIPE}|r7={reduce_range}|{batch.shape}|".encode())
    h.update(np.ascontiguousarray(batch, dtype=np.float32).tobytes())
    return h.hexdigest()


def reduce_range_for(flags: frozenset[str] | None = None) -> bool:
    """7-bit weights on a CPU without VNNI/AMX (see the module docstring)."""
    return not int8_is_faster(cpu_flags() if flags is None else flags)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` between processes (POSIX ``flock``; elsewhere only the
    in-process lock, and the atomic renames keep files whole)."""
    with _LOCK, open(path, "a+b") as handle:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _Reader:
    """ONNX Runtime's calibration data reader over the rows of ``batch``; ``set_range`` lets
    the calibrator take them one at a time (``CalibStridedMinMax``), so only one crop's
    intermediate tensors are in memory at once."""

    def __init__(self, batch: np.ndarray) -> None:
        self._batch = batch
        self._rows = iter(())

    def __len__(self) -> int:
        return len(self._batch)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._rows = iter(self._batch[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        row = next(self._rows, None)
        return None if row is None else {"x": np.ascontiguousarray(row[None], dtype=np.float32)}


class _QuietQuantizer(logging.Filter):
    """Turns ONNX Runtime quantizer's root-logger chatter (a warning per int64 shape tensor it
    cannot quantize, an info per bias copy) into DEBUG records of this module's logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "onnxruntime" not in record.pathname:
            return True
        log.debug("onnxruntime.quantization: %s", record.getMessage())
        return False


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    quiet = _QuietQuantizer()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def quantize_onnx(source: Path, target: Path, batch: np.ndarray, reduce_range: bool) -> None:
    """Write the int8 QDQ model of fp32 ONNX ``source`` calibrated on ``batch`` (N, C, H, W),
    to ``target`` atomically; ONNX Runtime's temporary folders are removed."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reader = type("Reader", (_Reader, CalibrationDataReader), {})(batch)
    with (tempfile.TemporaryDirectory(prefix=".int8-", dir=target.parent) as work,
          _quiet_root_logger()):
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        part = Path(work) / "int8.onnx"
        quantize_static(
            str(prepared), str(part), reader, quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
            reduce_range=reduce_range, calibrate_method=CalibrationMethod.MinMax,
            extra_options={"CalibStridedMinMax": 1},  # one crop's tensors at a time
        )
        os.replace(part, target)


def _prune(folder: Path, prefix: str, keep: Path) -> None:
    """Keep the :data:`MAX_CACHED` most recently used int8 files of one checkpoint."""
    models = sorted((p for p in folder.glob(f"{prefix}*.onnx") if p != keep),
                    key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in models[MAX_CACHED - 1:]:
        for path in folder.glob(old.stem + "*"):
            with contextlib.suppress(OSError):
                path.unlink()


def int8_model(checkpoint: str | os.PathLike[str], model: nn.Module, channels: int, engine: str,
               batch: np.ndarray, reduce_range: bool | None = None) -> Path:
    """The cached int8 model of ``checkpoint`` calibrated on ``batch``: the QDQ ONNX file for
    ``onnxruntime``, its OpenVINO IR (``.xml``) for ``openvino``; quantized on first use."""
    reduce_range = reduce_range_for() if reduce_range is None else reduce_range
    digest = checkpoint_digest(checkpoint)
    fp32 = exported_model(checkpoint, model, channels, "onnxruntime")
    folder = fp32.parent
    prefix = f"{Path(checkpoint).stem}-{digest[:16]}-int8-"
    tag = calibration_digest(batch, reduce_range)[:16]
    onnx_path = folder / f"{prefix}{tag}-onnxruntime{package_version('onnxruntime')}.onnx"
    xml = onnx_path.with_name(f"{onnx_path.stem}-openvino{package_version('openvino')}.xml")
    with _file_lock(folder / ".int8.lock"):
        if not onnx_path.is_file():
            log.info("quantizing %s to int8 on %d calibration crops: %s", checkpoint,
                     len(batch), onnx_path.name)
            quantize_onnx(fp32, onnx_path, batch, reduce_range)
            _QUANTIZED["count"] += 1
        os.utime(onnx_path)  # most recently used
        _prune(folder, prefix, onnx_path)
        if engine != "openvino":
            return onnx_path
        if not (xml.is_file() and xml.with_suffix(".bin").is_file()):
            save_openvino_ir(onnx_path, xml)
        return xml


def source_pixels(source: Any) -> int | None:
    """Pixels of a calibration source (a scene's or an array's height x width; None for None)."""
    if source is None:
        return None
    if isinstance(source, np.ndarray):
        return int(source.shape[-2] * source.shape[-1])
    return int(source.height * source.width)


def calibration_key(source: Any) -> tuple[Any, ...]:
    """What identifies a calibration source cheaply (no pixels read): a scene's description
    with its file's size and mtime, or an array's content hash."""
    if isinstance(source, np.ndarray):
        return ("array", source.shape, hashlib.sha256(np.ascontiguousarray(source)).hexdigest())
    try:
        stat = os.stat(source.path)
        stamp: tuple[int, ...] = (stat.st_size, stat.st_mtime_ns)
    except (OSError, TypeError, ValueError):
        stamp = ()
    return ("scene", source, stamp)


def read_calibration(source: Any, bands: tuple[int, ...], config: UNetConfig,
                     valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw pixels (N, C, S, S) and validity (N, S, S) of the calibration crops of ``source``: a
    :class:`~geounet.raster.SceneInfo` (its ``bands`` read as tiles are, mirrored beyond the
    scene) or an array (C, H, W) of raw pixels (``valid`` (H, W) optional)."""
    from geounet.raster import mirror_pad, read_window

    size = crop_size(config)
    if isinstance(source, np.ndarray):
        height, width = source.shape[-2:]
    else:
        height, width = source.height, source.width
    pixels, masks = [], []
    for y0, x0, side in calibration_windows(height, width, size, config.alignment):
        if isinstance(source, np.ndarray):
            after = (max(0, y0 + side - height), max(0, x0 + side - width))
            crop = mirror_pad(source[:, y0:y0 + side, x0:x0 + side], (0, 0), after)
            ok = (np.ones(crop.shape[1:], bool) if valid is None
                  else mirror_pad(valid[y0:y0 + side, x0:x0 + side], (0, 0), after))
        else:
            crop, ok = read_window(source, y0, x0, side, side, bands=bands)
        pixels.append(crop)
        masks.append(ok)
    return np.stack(pixels), np.stack(masks)
