"""How a training run is made fast: the rules behind its precision, memory format, DataLoader
workers and chip cache (``TrainConfig.precision``, ``channels_last``, ``workers``,
``cache_chips``), each a pure function of the setting and the machine, so every choice is
testable and logged (``training speed: ...``).

The rules (docs/training.md, "Speed"):

- **precision** ``auto``: bf16 autocast on a CPU with native bf16 (AVX512_BF16 or AMX: the rule
  inference's ``--precision auto`` uses, :func:`geounet.environment.native_bf16`), fp32
  on any other CPU (emulated bf16 trains several times slower); mixed precision on CUDA. An
  explicit ``bf16`` on a CPU without native bf16 is ignored with a logged warning (fp32). The
  loss, the optimizer and the weight average stay fp32 either way.
- **channels_last** ``None``: on for the CPU (oneDNN's convolutions run NHWC; inference uses it),
  on CUDA under mixed precision, off for CUDA fp32.
- **workers** ``None``: on CPU one persistent worker when the machine has a core that torch's
  threads leave free, else 0 (a worker on a core torch computes on only takes from the step);
  on CUDA 4.
- **cache_chips** ``None``: decoded chips are kept in memory when all of them (at the training
  resolution) take at most :data:`CACHE_MAX_BYTES` and a quarter of the available memory.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

log = logging.getLogger(__name__)

CACHE_MAX_BYTES = 2 * 1024**3
"""Largest decoded chip set the ``cache_chips`` rule keeps in memory (2 GiB)."""

@dataclass(frozen=True)
class Choice:
    """One switch as resolved: its value and why (logged)."""

    value: object
    reason: str


def precision_rule(precision: str, device_type: str, *, native_bf16: bool,
                   cuda_bf16: bool = False) -> Choice:
    """The autocast dtype name of a training step (``fp32`` = none), and why.

    Examples
    --------
    >>> precision_rule("auto", "cpu", native_bf16=True).value
    'bf16'
    >>> precision_rule("bf16", "cpu", native_bf16=False).value
    'fp32'
    """
    from geounet.errors import DeviceError

    if precision == "fp32":
        return Choice("fp32", "fp32 asked for")
    if device_type == "cuda":
        if precision == "bf16" or (precision == "auto" and cuda_bf16):
            return Choice("bf16", "CUDA bf16 autocast")
        return Choice("fp16", "CUDA fp16 autocast with gradient scaling")
    if precision == "fp16":
        raise DeviceError(
            "precision 'fp16' needs a CUDA device; on CPU train with 'auto', 'bf16' or 'fp32'."
        )
    if native_bf16:
        return Choice("bf16", "bf16 autocast: the CPU has native bf16 (AVX512_BF16/AMX)")
    if precision == "bf16":
        return Choice("fp32", "bf16 asked for, but this CPU has no native bf16 (no "
                              "AVX512_BF16/AMX): emulated bf16 trains several times slower "
                              "than fp32, so this run trains in fp32 (precision 'auto' or "
                              "'fp32' says so without this warning)")
    return Choice("fp32", "fp32: the CPU has no native bf16 (AVX512_BF16/AMX)")


def channels_last_rule(setting: bool | None, device_type: str, amp: bool) -> Choice:
    """Whether the model and its batches are channels_last (NHWC), and why.

    Examples
    --------
    >>> channels_last_rule(None, "cpu", amp=False).value
    True
    """
    if setting is not None:
        return Choice(bool(setting), "asked for" if setting else "off as asked")
    if device_type == "cpu":
        return Choice(True, "CPU: oneDNN convolutions run NHWC")
    return Choice(amp, "CUDA mixed precision" if amp else "CUDA fp32")


def workers_rule(setting: int | None, device_type: str, cores: int, threads: int) -> Choice:
    """DataLoader worker processes (persistent when > 0), and why.

    Examples
    --------
    >>> workers_rule(None, "cpu", cores=2, threads=2).value
    0
    >>> workers_rule(None, "cpu", cores=4, threads=2).value
    1
    """
    if setting is not None:
        return Choice(int(setting), "asked for")
    if device_type == "cuda":
        return Choice(4, "CUDA")
    if cores > threads:
        return Choice(1, f"{cores} cores, {threads} torch threads: a free core loads chips")
    return Choice(0, f"{cores} cores, all {threads} computing: chips load between steps")


def cache_rule(setting: bool | None, nbytes: int, available: int | None) -> Choice:
    """Whether decoded chips are kept in memory, and why.

    Examples
    --------
    >>> cache_rule(None, 30 * 2**20, 8 * 2**30).value
    True
    >>> cache_rule(None, 3 * 2**30, 64 * 2**30).value
    False
    """
    size = f"{nbytes / 2**20:.0f} MiB decoded"
    if setting is not None:
        return Choice(bool(setting), f"{'on' if setting else 'off'} as asked ({size})")
    limit = CACHE_MAX_BYTES if available is None else min(CACHE_MAX_BYTES, available // 4)
    if nbytes <= limit:
        return Choice(True, f"{size} <= {limit / 2**20:.0f} MiB")
    return Choice(False, f"{size} > {limit / 2**20:.0f} MiB: read from the files")


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def available_memory() -> int | None:
    """Bytes of memory available now (psutil), None when unknown."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # pragma: no cover - psutil comes with distributed
        return None


def native_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU computes bf16 natively: inference's rule
    (:func:`geounet.environment.native_bf16`) on this CPU's flags, or on given ``flags``."""
    from geounet import environment

    return environment.native_bf16(environment.cpu_flags() if flags is None else flags)


@dataclass(frozen=True)
class SpeedPlan:
    """The resolved switches of a run (see the module docstring for the rules)."""

    precision: Choice
    channels_last: Choice
    workers: Choice
    cache_chips: Choice

    def describe(self) -> str:
        """One log line, e.g. ``precision bf16 (...); channels_last on (...); ...``."""
        return "; ".join([
            f"precision {self.precision.value} ({self.precision.reason})",
            f"channels_last {'on' if self.channels_last.value else 'off'} "
            f"({self.channels_last.reason})",
            f"{self.workers.value} DataLoader worker(s) ({self.workers.reason})",
            f"chip cache {'on' if self.cache_chips.value else 'off'} "
            f"({self.cache_chips.reason})"])


def plan_speed(config: object, device_type: str, decoded_bytes: int, *,
               flags: frozenset[str] | None = None,
               cores: int | None = None, threads: int | None = None,
               available: int | None = None) -> SpeedPlan:
    """Resolve the four switches of ``config`` (a :class:`~geounet.training.TrainConfig`)
    for this machine (arguments left None are read from it; ``flags``: the CPU's, for the
    bf16 rule)."""
    import torch

    precision = precision_rule(
        getattr(config, "precision"), device_type,
        cuda_bf16=device_type == "cuda" and torch.cuda.is_bf16_supported(),
        native_bf16=native_bf16(flags) if device_type == "cpu" else False)
    if precision.reason.startswith("bf16 asked for"):
        log.warning("%s", precision.reason)
    amp = precision.value != "fp32"
    threads = threads if threads is not None else torch.get_num_threads()
    return SpeedPlan(
        precision, channels_last_rule(getattr(config, "channels_last"), device_type, amp),
        workers_rule(getattr(config, "workers"), device_type,
                     cores if cores is not None else usable_cores(), threads),
        cache_rule(getattr(config, "cache_chips"), decoded_bytes,
                   available if available is not None else available_memory()))
