"""What a training run has done so far, saved in every ``*.last.pt`` and restored on resume.

:class:`TrainState` is the one mutable record of a run (history, best score, patience,
optimizer steps, time); :meth:`TrainState.checkpoint` writes it with the optimizer, scheduler,
scaler, weight average and RNG state, :func:`restore_state` reads it back into a new
:class:`~geounet.training.prepare.TrainingRun`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from geounet.training.config import EpochRecord

if TYPE_CHECKING:  # pragma: no cover
    from geounet.training.prepare import TrainingRun
    from geounet.training.start import Start

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """What the run has done so far (restored on resume): history, best score, steps, time.

    Attributes
    ----------
    start : the first epoch this process trains.
    done_steps, spent : optimizer steps and training seconds before this process (then
        counted on).
    best_steps : optimizer steps up to the end of the best epoch (what ``refit`` trains).
    run_start : ``time.perf_counter()`` when this process started training.
    val_estimate : seconds of the last validation pass (kept free of the time budget).
    """

    history: list[EpochRecord] = field(default_factory=list)
    best: float = -math.inf
    bad_epochs: int = 0
    start: int = 1
    done_steps: int = 0
    spent: float = 0.0
    best_epoch: int = 0
    best_steps: int = 0
    stopped: bool = False
    out_of_time: bool = False
    run_start: float = 0.0
    val_estimate: float = 0.0

    def elapsed(self) -> float:
        """Training seconds of the whole run, earlier processes included."""
        return self.spent + time.perf_counter() - self.run_start

    def checkpoint(self, run: TrainingRun, epoch: int,
                   chips_dir: str | os.PathLike[str]) -> dict[str, Any]:
        """The ``train_state`` saved after ``epoch``: everything :func:`restore_state` needs."""
        return {
            "epoch": epoch, "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(),
            "history": [dataclasses.asdict(h) | {"iou": list(h.iou), "f1": list(h.f1)}
                        for h in self.history],
            "best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
            "best_steps": self.best_steps,
            "monitor": run.config.monitor, "steps": self.done_steps,
            "seconds": self.elapsed(),
            "live": run.model.state_dict() if run.average is not None else None,
            "ema_updates": run.average.updates if run.average is not None else 0,
            "rng": rng_state(), "config": run.config.to_dict(), "chips_dir": str(chips_dir),
        }


def rng_state() -> dict[str, Any]:
    """The torch (and CUDA) RNG states, saved in checkpoints."""
    import torch

    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_state(run: TrainingRun, start: Start) -> TrainState:
    """The state to start from: empty, or the resumed run's (its optimizer, scheduler, scaler,
    weights and RNG state also restored into ``run``)."""
    import torch

    saved, payload = start.train_state, start.payload
    state = TrainState()
    if saved is None or payload is None:
        return state
    run.optimizer.load_state_dict(saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    if saved.get("scaler"):
        run.scaler.load_state_dict(saved["scaler"])
    if saved.get("live") is not None:
        run.model.load_state_dict(saved["live"])  # the checkpoint's weights are the average
    if run.average is not None:
        run.average.load(payload["state_dict"], int(saved.get("ema_updates", 0)))
    state.history = [EpochRecord(**{**h, "iou": tuple(h["iou"]), "f1": tuple(h["f1"])})
                     for h in saved.get("history", [])]
    state.best, state.bad_epochs = float(saved["best"]), int(saved["bad_epochs"])
    if saved.get("monitor", "loss") != run.config.monitor:
        state.best = -math.inf  # a score on another scale: restart the comparison
    state.start = int(saved["epoch"]) + 1
    state.done_steps = int(saved.get("steps", 0))
    state.spent = float(saved.get("seconds", 0.0))
    torch.set_rng_state(saved["rng"]["torch"])
    if "cuda" in saved["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
    log.info("resuming from epoch %d of %s", state.start - 1, start.source)
    state.best_epoch = int(saved.get("best_epoch", 0))
    state.best_steps = int(saved.get("best_steps", state.best_epoch * run.steps))
    return state
