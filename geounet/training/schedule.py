"""Learning-rate schedules as pure functions of run progress, and the training time budget.

The schedule is a function of *progress* in [0, 1], not of the step number, so that a run
cut short by its time budget still warms up and anneals: progress is the larger of the share
of steps done and the share of the time budget spent.
"""

from __future__ import annotations

import math

from geounet.config import LRSchedule, choices
from geounet.errors import InputError

#: one-cycle starts at lr / ONE_CYCLE_START and ends at lr / ONE_CYCLE_START / ONE_CYCLE_END
ONE_CYCLE_START = 25.0
ONE_CYCLE_END = 1e4


def lr_factor(progress: float, *, schedule: LRSchedule, warmup: float) -> float:
    """Multiplier of the peak learning rate at ``progress`` (0 = first step, 1 = run end).

    Parameters
    ----------
    progress : share of the run done, clipped to [0, 1].
    schedule : ``one-cycle``: cosine ramp from ``1/25`` to 1 over the first ``warmup`` share,
        then cosine annealing to ``1/25/1e4``; ``cosine``: linear ramp from 0 (first step at
        a small positive value) to 1, then cosine annealing to 0; ``plateau``: always 1 (the
        plateau scheduler lowers the rate on its own).
    warmup : share of the run spent warming up, in [0, 1).

    Examples
    --------
    >>> round(lr_factor(0.0, schedule="one-cycle", warmup=0.1), 3)
    0.04
    >>> lr_factor(0.1, schedule="one-cycle", warmup=0.1)
    1.0
    >>> lr_factor(1.0, schedule="cosine", warmup=0.1)
    0.0
    """
    if schedule not in choices(LRSchedule):
        raise InputError(f"schedule {schedule!r} is not one of {choices(LRSchedule)}.")
    if not 0.0 <= warmup < 1.0:
        raise InputError(f"warmup {warmup} must be a share of the run in [0, 1); e.g. 0.1.")
    p = min(max(float(progress), 0.0), 1.0)
    if schedule == "plateau":
        return 1.0
    if schedule == "one-cycle":
        start = 1.0 / ONE_CYCLE_START
        end = start / ONE_CYCLE_END
        if p < warmup:
            return start + (1.0 - start) * (1.0 - math.cos(math.pi * p / warmup)) / 2.0
        q = (p - warmup) / (1.0 - warmup)
        return end + (1.0 - end) * (1.0 + math.cos(math.pi * q)) / 2.0
    if p < warmup:
        return max(p / warmup, 1e-3)
    q = (p - warmup) / (1.0 - warmup)
    return (1.0 + math.cos(math.pi * q)) / 2.0


def run_progress(step: int, total_steps: int, seconds: float, budget_s: float | None) -> float:
    """Share of the run done: the steps share, or the time-budget share once the run, at its
    pace so far, would overrun ``budget_s`` (whichever is larger).

    A run on course to finish within its budget follows its steps only, so it is
    reproducible; one that would overrun anneals by the clock.

    Examples
    --------
    >>> run_progress(10, 100, 30.0, 60.0)   # 300 s projected for a 60 s budget
    0.5
    >>> run_progress(10, 100, 3.0, 60.0)    # 30 s projected: steps decide
    0.1
    >>> run_progress(10, 100, 30.0, None)
    0.1
    """
    done = step / max(total_steps, 1)
    if budget_s and step > 0 and seconds / done > budget_s:
        done = max(done, seconds / budget_s)
    return min(max(done, 0.0), 1.0)
