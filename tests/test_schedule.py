"""Learning-rate schedules: warm-up then annealing, following steps or the time budget."""

from __future__ import annotations

import numpy as np
import pytest

from geounet.errors import InputError
from geounet.training.schedule import ONE_CYCLE_START, lr_factor, run_progress


@pytest.mark.parametrize("schedule", ["one-cycle", "cosine"])
@pytest.mark.parametrize("total,warmup", [(40, 0.1), (300, 0.1), (1000, 0.3)])
def test_schedule_warms_up_then_anneals(schedule, total, warmup):
    lrs = np.array([lr_factor(run_progress(s, total, 0.0, None), schedule=schedule,
                              warmup=warmup) for s in range(total + 1)])
    peak = int(np.argmax(lrs))
    assert lrs.max() == pytest.approx(1.0)
    assert abs(peak / total - warmup) <= 1.0 / total + 1e-9  # peak where warm-up ends
    assert np.all(np.diff(lrs[: peak + 1]) > 0)  # warms up ...
    assert np.all(np.diff(lrs[peak:]) < 0)  # ... then anneals
    assert lrs[0] <= 1.0 / ONE_CYCLE_START + 1e-9  # starts low
    assert lrs[-1] < 1e-4  # ends annealed
    assert lrs[total // 2] > 0.3  # the middle of the run still learns


def test_plateau_is_constant_and_bad_values_raise():
    assert {lr_factor(p, schedule="plateau", warmup=0.1) for p in (0, 0.5, 1)} == {1.0}
    with pytest.raises(InputError, match="warmup"):
        lr_factor(0.5, schedule="cosine", warmup=1.0)
    with pytest.raises(InputError, match="schedule"):
        lr_factor(0.5, schedule="linear", warmup=0.1)  # type: ignore[arg-type]


def test_slow_run_anneals_by_the_clock():
    """A run at a pace that would take 4x its budget follows the clock: fully annealed when
    the budget is spent (a quarter of the steps), while a fast run follows its steps."""
    total, budget = 400, 100.0
    slow = [run_progress(s, total, s * 1.0, budget) for s in range(1, 101)]
    assert slow[-1] == 1.0 and slow[49] == pytest.approx(0.5)
    assert lr_factor(slow[-1], schedule="one-cycle", warmup=0.1) < 1e-4
    fast = [run_progress(s, total, s * 0.1, budget) for s in range(1, total + 1)]
    assert fast == [s / total for s in range(1, total + 1)]  # reproducible: time ignored
