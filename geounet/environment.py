"""Describe the software stack and compute devices geounet runs on, and what the CPU can do.

The CPU's instruction sets are read from ``/proc/cpuinfo`` at run time, never assumed; the rules
that use them (:func:`int8_is_faster`, :func:`native_bf16`) take the flag set as an argument so
each rule is tested per flag set without the machine having it.

Examples
--------
>>> flags = parse_cpu_flags("processor : 0\\nflags : fpu sse4_2 avx2 fma avx512f avx512_vnni\\n")
>>> cpu_features(flags)
('AVX2', 'AVX-512', 'AVX512-VNNI')
>>> int8_is_faster(flags), native_bf16(flags)
(True, False)
"""

from __future__ import annotations

import functools
import platform
import sys

VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})
"""8-bit dot-product instructions (AVX512-VNNI on Cascade Lake and later Xeons and AMD Zen 4;
AVX-VNNI on Alder Lake and later cores): one instruction per 4 multiply-adds of int8."""

AMX_INT8_FLAGS = frozenset({"amx_int8"})
"""Intel AMX tiles with int8 support (Sapphire Rapids and later)."""

BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""Native bf16 arithmetic (AVX512_BF16 on Cooper Lake / Zen 4, AMX-BF16)."""


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The instruction-set flags of the first ``flags`` line of ``/proc/cpuinfo`` text (x86);
    ARM's ``Features`` line otherwise; empty when there is neither."""
    for key in ("flags", "Features"):
        for line in cpuinfo.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key:
                return frozenset(value.split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This machine's CPU flags (:func:`parse_cpu_flags` of ``/proc/cpuinfo``; empty where it
    cannot be read, e.g. macOS or Windows: every rule then takes the conservative branch)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            return parse_cpu_flags(handle.read())
    except OSError:
        return frozenset()


def has_vnni(flags: frozenset[str]) -> bool:
    """Whether ``flags`` include an 8-bit dot-product instruction (AVX512-VNNI or AVX-VNNI)."""
    return bool(flags & VNNI_FLAGS)


def has_amx(flags: frozenset[str]) -> bool:
    """Whether ``flags`` include AMX with int8 tiles."""
    return bool(flags & AMX_INT8_FLAGS)


def native_bf16(flags: frozenset[str]) -> bool:
    """Whether ``flags`` include native bf16 arithmetic (AVX512_BF16 or AMX-BF16)."""
    return bool(flags & BF16_FLAGS)


def int8_is_faster(flags: frozenset[str]) -> bool:
    """The rule by which ``--precision auto`` may pick int8 (docs/engine.md, "int8"): the CPU
    has VNNI or AMX-int8.

    Measured (benchmarks/RESULTS.md, "int8"): on an AVX-512 VNNI CPU the int8 model runs at
    0.16-0.33x the CPU time of fp32 (OpenVINO) and at 0.5x (ONNX Runtime). Without VNNI, int8
    convolutions go through AVX2's 16-bit multiply-add (``vpmaddubsw``), which saturates and
    has not been measured faster here: no VNNI, no int8 by default (``--precision int8`` still
    runs it). ARM's dot-product extensions are not measured and not used.
    """
    return has_vnni(flags) or has_amx(flags)


def cpu_features(flags: frozenset[str]) -> tuple[str, ...]:
    """The inference-relevant instruction sets in ``flags``, by name (for logs and ``info``)."""
    named = (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_vnni", "AVX512-VNNI"),
             ("avx_vnni", "AVX-VNNI"), ("avx512_bf16", "AVX512-BF16"), ("amx_int8", "AMX-INT8"),
             ("amx_bf16", "AMX-BF16"), ("asimd", "NEON"))
    return tuple(label for flag, label in named if flag in flags)


def describe_environment() -> dict[str, str]:
    """Return versions of geounet and its stack, the CPU's inference instruction sets and the
    CUDA devices torch can see.

    Examples
    --------
    >>> env = describe_environment()
    >>> env["cuda"]  # doctest: +SKIP
    'no CUDA device (CPU only)'
    >>> {"geounet", "torch", "gdal", "dask", "zarr", "pyogrio", "cpu"} <= set(env)
    True
    """
    from importlib.metadata import version

    import dask
    import pyogrio
    import rasterio
    import torch
    import xarray
    import zarr

    from geounet._version import __version__

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        cuda = f"{len(names)} device(s): " + ", ".join(names)
    else:
        cuda = "no CUDA device (CPU only)"
    return {
        "geounet": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": cuda,
        "cpu": ", ".join(cpu_features(cpu_flags())) or "no AVX2 / NEON flags found",
        "cpu threads": str(torch.get_num_threads()),
        "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__,
        "dask": dask.__version__,
        "distributed": version("distributed"),  # not imported: the engine may import this module
        "xarray": xarray.__version__,
        "zarr": zarr.__version__,
        "pyogrio": pyogrio.__version__,
        "gdal (ogr)": pyogrio.__gdal_version_string__,
    }


def release_freed_memory() -> bool:
    """Give memory freed by a finished stage back to the system (glibc's ``malloc_trim``).

    The chunk tasks run on threads, each allocating from its own glibc arena; what they free
    stays mapped in those arenas, so a process that predicts and then vectorizes would carry
    the prediction's high-water mark into the next stage. Returns whether anything could be
    asked (False off glibc: nothing to do there).
    """
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    if sys.platform != "linux" or name is None:
        return False
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return False
    trim(0)
    return True
