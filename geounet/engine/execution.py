"""Where and how a model runs: the device, the engine and the precision, resolved together from
what was asked for and what the machine has (docs/engine.md, "Engines" and "int8"); the rules
are functions of the CPU's flags, so each is tested per flag set.

Examples
--------
>>> resolve_execution("torch", "fp32", "cpu").precision  # doctest: +SKIP
'fp32'
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import TYPE_CHECKING

from geounet.config import Engine, InferencePrecision, choices
from geounet.errors import DeviceError, InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["INT8_AUTO_MIN_PIXELS", "Execution", "cpu_supports_bf16", "resolve_device", "resolve_execution",
           "resolve_precision"]


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


INT8_AUTO_MIN_PIXELS = 4096 * 4096
"""``precision auto`` picks int8 only for scenes of at least this many model pixels (16.8 MP):
calibrating and quantizing costs about 1.5 CPU-s per new scene (benchmarks/RESULTS.md, "int8"),
which int8 wins back at 0.1 CPU-s per MP against OpenVINO bf16 (AVX512_BF16 CPUs) and 0.3
against OpenVINO fp32 (VNNI without bf16)."""


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX512_BF16 or AMX), from ``/proc/cpuinfo``
    (:func:`geounet.environment.native_bf16`)."""
    from geounet.environment import cpu_flags, native_bf16

    return native_bf16(cpu_flags())


def resolve_precision(
    precision: InferencePrecision,
    device: torch.device,
    engine: str = "torch",
    scene_pixels: int = 0,
    flags: frozenset[str] | None = None,
) -> str:
    """The precision actually used: ``fp32``, ``bf16``, ``fp16`` or ``int8``, for ``engine``
    (resolved: ``torch``, ``onnxruntime`` or ``openvino``).

    ``auto``: on CUDA bf16 where supported, else fp16. On CPU: int8 when the engine runs int8,
    the CPU has VNNI or AMX (:func:`geounet.environment.int8_is_faster`) and the scene to
    calibrate on has at least :data:`INT8_AUTO_MIN_PIXELS` pixels (``scene_pixels``; 0: no
    scene); else bf16 when the CPU has AVX512_BF16/AMX (about 2.2x faster than fp32) and the
    engine runs bf16 (not ONNX Runtime); else fp32.
    """
    from geounet.environment import cpu_flags, int8_is_faster, native_bf16

    if precision not in choices(InferencePrecision):
        raise InputError(
            f"precision {precision!r} is not one of {choices(InferencePrecision)}; pick one."
        )
    if precision == "int8":  # EngineError on CUDA, with torch, or without onnxruntime
        from geounet.engine.backends import resolve_engine

        resolve_engine(engine, device.type, flags, precision="int8")  # type: ignore[arg-type]
        return "int8"
    if device.type == "cuda":
        if precision == "auto":
            import torch  # only here: a CPU device's rules read the CPU's flags alone

            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return str(precision)
    flags = cpu_flags() if flags is None else flags
    if precision == "auto":
        if (engine in ("onnxruntime", "openvino") and scene_pixels >= INT8_AUTO_MIN_PIXELS
                and int8_is_faster(flags)):
            return "int8"
        return "bf16" if native_bf16(flags) and engine != "onnxruntime" else "fp32"
    if precision == "fp16":
        raise DeviceError(
            "precision 'fp16' needs a CUDA device; on CPU use 'bf16', 'int8', 'fp32' or 'auto'."
        )
    if precision == "bf16" and not native_bf16(flags):
        warnings.warn(
            "this CPU has no native bf16 (AVX512_BF16/AMX): bf16 will be emulated and slower "
            "than fp32; use precision 'auto' or 'fp32'.",
            stacklevel=3,
        )
    return str(precision)


@dataclasses.dataclass(frozen=True)
class Execution:
    """How a runner computes: the device, the engine and precision resolved from what was
    asked for, and why (for the log)."""

    device: torch.device
    engine: str
    precision: str
    reason: str


def resolve_execution(
    engine: Engine,
    precision: InferencePrecision,
    device: str = "auto",
    scene_pixels: int | None = None,
) -> Execution:
    """Resolve ``device``, ``engine`` and ``precision`` together (docs/engine.md) for a scene of
    ``scene_pixels`` model pixels (None: no scene, e.g. a runner used on arrays): the engine
    from the precision asked for and the scene's size
    (:func:`geounet.engine.backends.resolve_engine`), then the precision for that engine and
    scene (:func:`resolve_precision`), checked against each other.

    Raises
    ------
    DeviceError, EngineError, InputError
        A device, engine or precision this machine cannot run, or that cannot go together.
    """
    from geounet.engine.backends import ENGINE_AUTO_MIN_PIXELS, resolve_engine
    from geounet.environment import cpu_features, cpu_flags

    torch_device = resolve_device(device)
    chosen = resolve_engine(engine, torch_device.type, precision=str(precision),
                            scene_pixels=scene_pixels)
    resolved = resolve_precision(precision, torch_device, chosen, scene_pixels or 0)
    resolve_engine(chosen, torch_device.type, precision=resolved)  # e.g. onnxruntime + bf16
    parts = []
    if engine == "auto":
        isa = ", ".join(cpu_features(cpu_flags())) or "no AVX2"
        small = scene_pixels is not None and scene_pixels < ENGINE_AUTO_MIN_PIXELS
        if torch_device.type != "cpu":
            why = "the other engines run on the CPU only"
        elif "avx2" not in cpu_flags():
            why = "a CPU without AVX2: the other engines are not measured there"
        elif small and chosen == "torch":
            why = (f"a scene under {ENGINE_AUTO_MIN_PIXELS / 1e6:.1f} MP: the other engines' "
                   "start costs more than they save")
        else:
            why = "the fastest installed engine for it by docs/engine.md's table"
        parts.append(f"engine auto -> {chosen} (device {torch_device.type}, CPU {isa}; {why})")
    if precision == "auto":
        why = {"int8": "the CPU has VNNI/AMX, the engine runs int8 and the scene has at least "
                       f"{INT8_AUTO_MIN_PIXELS / 1e6:.1f} MP",
               "bf16": "native bf16", "fp16": "CUDA without bf16"}.get(resolved, "the default")
        parts.append(f"precision auto -> {resolved} ({why})")
    return Execution(torch_device, chosen, resolved, "; ".join(parts) or "as asked")
