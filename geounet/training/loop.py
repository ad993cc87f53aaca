"""The training loop: :func:`train` and the :class:`Trainer` that runs its epochs.

A run is read from its start (:mod:`geounet.training.start`: fresh, ``resume`` or ``init``),
set up (:mod:`geounet.training.prepare`: card, model, datasets, optimizer), its state restored
(:mod:`geounet.training.state`), then trained epoch by epoch here: train and validate
(:mod:`geounet.training.steps`), keep the best, save, stop on patience or the time budget; with
``refit`` retrained on every chip (:mod:`geounet.training.refit`). The settings and records
(:class:`TrainConfig`, :class:`~geounet.training.config.EpochRecord`, :class:`TrainResult`)
live in :mod:`geounet.training.config`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import TYPE_CHECKING

from geounet.errors import InputError
from geounet.training.config import EpochRecord, TrainConfig, TrainProgress, TrainResult
from geounet.training.prepare import TrainingRun, prepare_run
from geounet.training.report import write_log, write_plot
from geounet.training.start import OutputPaths, check_outputs, read_start, run_paths
from geounet.training.state import TrainState, restore_state
from geounet.training.steps import Progress, schedule_progress, train_epoch, validate

if TYPE_CHECKING:  # pragma: no cover
    from geounet.training.layout import DatasetConfig

log = logging.getLogger(__name__)


def train(
    chips_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    config: TrainConfig | None = None,
    resume: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    dataset: DatasetConfig | None = None,
    init: str | os.PathLike[str] | None = None,
) -> TrainResult:
    """Train a U-Net on the chip pairs of ``chips_dir``; write ``out`` (best) and friends.

    Normalization (per-band mean/std over labelled training pixels), bands, classes, pixel
    size, dtype and value range go into the model card. Each epoch validates (loss, IoU and F1
    per class from summed confusion counts) and writes ``out`` when the validation loss
    improves, ``*.last.pt`` always (with optimizer, scheduler, epoch and RNG state), the CSV
    log and the PNG curves.

    Parameters
    ----------
    chips_dir : directory with ``images/`` + ``masks/`` GeoTIFF pairs (see :mod:`.dataset`).
    out : best checkpoint path, e.g. ``model.pt``.
    config : :class:`TrainConfig`.
    resume : a checkpoint written by this function (usually ``*.last.pt``): continue from its
        epoch with its weights, optimizer, scheduler and RNG state, up to ``config.epochs``.
    overwrite : replace existing outputs (implied for the files of the run being resumed).
    progress : called after every step with a :class:`TrainProgress`.
    dataset : :class:`geounet.training.layout.DatasetConfig`: pairing rule, mask values,
        class names, labels file, split blocks (default: detected, see
        :func:`geounet.training.layout.open_dataset`).
    init : any geounet checkpoint to fine-tune (a new run from its weights): its card's
        architecture, bands, classes, normalization and pixel size are kept, the chips must
        have its band count, data type and classes; the architecture fields of ``config``
        are not used. Unlike ``resume``, the epochs, schedule and optimizer start afresh.

    Returns
    -------
    TrainResult

    Examples
    --------
    >>> train("chips", "model.pt", config=TrainConfig(depth=2, base_channels=8, epochs=5))  # doctest: +SKIP
    """
    config = config or TrainConfig()
    paths = run_paths(out)
    check_outputs(paths, overwrite, resume)
    start = read_start(resume, init, dataset)
    run = prepare_run(chips_dir, config, start)
    state = restore_state(run, start)
    paths.best.parent.mkdir(parents=True, exist_ok=True)  # only once the inputs are checked
    try:
        result = Trainer(run, state, paths, chips_dir, progress).fit()
        if config.refit:
            from geounet.training.refit import refit

            result = refit(run, state, paths, result)
    finally:
        run.close()  # DataLoader workers
    return result


class Trainer:
    """The epoch loop of one run: train, validate, keep the best, save, stop.

    Parameters
    ----------
    run : the fixed parts (:func:`~geounet.training.prepare.prepare_run`).
    state : what the run has done (fresh or restored); updated as it trains.
    paths : the files written.
    chips_dir : stored in the checkpoints' training state.
    progress : called after every step and epoch.
    """

    def __init__(self, run: TrainingRun, state: TrainState, paths: OutputPaths,
                 chips_dir: str | os.PathLike[str], progress: Progress | None = None) -> None:
        self.run = run
        self.state = state
        self.paths = paths
        self.chips_dir = chips_dir
        self.progress = progress

    def fit(self) -> TrainResult:
        """Train from ``state.start`` to ``config.epochs`` (or an earlier stop); the result."""
        self.state.run_start = time.perf_counter()
        for epoch in range(self.state.start, self.run.config.epochs + 1):
            if self.epoch(epoch):
                break
        return self.result()

    def epoch(self, epoch: int) -> bool:
        """Train, validate, save and report one epoch; True when the run ends after it."""
        run, state = self.run, self.state
        started = time.perf_counter()
        seen, total = train_epoch(run, state, epoch, self.progress)
        train_seconds = time.perf_counter() - started
        train_loss = total / max(seen, 1)
        val = validate(run, state, epoch)
        cm = val.confusion
        current = run.score(cm.mean_iou(), val.loss) if val.seen else -train_loss
        if run.config.schedule == "plateau":  # mode "min" on the loss, "max" on the IoU
            run.scheduler.step(current if run.config.monitor == "iou" else -current)
        scores = cm.scores()
        record = EpochRecord(
            epoch=epoch, lr=run.optimizer.param_groups[0]["lr"], train_loss=train_loss,
            val_loss=val.loss, iou=tuple(s.iou for s in scores),
            f1=tuple(s.f1 for s in scores), mean_iou=cm.mean_iou(),
            seconds=time.perf_counter() - started,
            chips_per_s=seen / train_seconds if train_seconds > 0 else float("nan"),
            object_f1=val.objects.f1 if val.objects is not None else float("nan"))
        improved = self.keep(record, current)
        self.save(epoch, improved)
        log.info("epoch %d/%d train loss %.4f val loss %.4f mean IoU %.3f%s (%.1f chips/s)",
                 epoch, run.config.epochs, train_loss, val.loss, record.mean_iou,
                 f" building object F1 {record.object_f1:.3f}" if val.objects is not None
                 else "", record.chips_per_s)
        if self.progress is not None:
            self.progress(TrainProgress(epoch, run.config.epochs, run.steps, run.steps,
                                        train_loss, record))
        return self.should_stop(epoch)

    def keep(self, record: EpochRecord, current: float) -> bool:
        """Add the epoch to the history and the best/patience count; True when it is the best.

        Only epochs from ``select_from`` of the run on compete (one-cycle/cosine, no
        ``patience``): before, each epoch is kept as the current model and the comparison
        starts afresh after it.
        """
        state, config = self.state, self.run.config
        state.history.append(record)
        competes = (config.schedule == "plateau" or config.select_from <= 0
                    or config.patience is not None  # early stopping: every epoch competes
                    or record.epoch >= config.epochs or state.out_of_time
                    or schedule_progress(self.run, state) >= config.select_from - 1e-9)
        if not competes:
            state.best, state.bad_epochs, state.best_epoch = -math.inf, 0, record.epoch
            state.best_steps = state.done_steps
            return True
        improved = current > state.best or state.best_epoch == 0 or state.best == -math.inf
        if improved:
            state.best, state.bad_epochs, state.best_epoch = current, 0, record.epoch
            state.best_steps = state.done_steps
        else:
            state.bad_epochs += 1
        state.stopped = config.patience is not None and state.bad_epochs >= config.patience
        return improved

    def save(self, epoch: int, improved: bool) -> None:
        """Write the last (and when improved the best) checkpoint, the CSV log and the
        curves."""
        from geounet.model import save_checkpoint

        run, state, paths = self.run, self.state, self.paths
        extra = {"train_state": state.checkpoint(run, epoch, self.chips_dir)}
        save_checkpoint(paths.last, run.net, run.card, extra=extra, overwrite=True)
        if improved:
            save_checkpoint(paths.best, run.net, run.card, extra=extra, overwrite=True)
        write_log(paths.log, state.history, run.classes)
        try:
            write_plot(paths.plot, state.history, run.classes, state.best_epoch)
        except Exception as exc:  # a plot must never lose a training run
            log.warning("could not draw the training curves: %s", exc)

    def should_stop(self, epoch: int) -> bool:
        """Log and return whether patience or the time budget ends the run after ``epoch``."""
        if self.state.stopped:
            log.info("early stop: no improvement for %d epochs", self.state.bad_epochs)
            return True
        if self.state.out_of_time:
            log.info("time budget of %s minutes spent at epoch %d; the schedule has annealed",
                     self.run.config.max_minutes, epoch)
            return True
        return False

    def result(self) -> TrainResult:
        """The result of the run (an error when no epoch was left to train)."""
        state, paths = self.state, self.paths
        if not state.history:
            raise InputError(
                f"nothing to train: the checkpoint is at epoch {state.start - 1} and epochs is "
                f"{self.run.config.epochs}; raise --epochs to continue."
            )
        result = TrainResult(paths.best, paths.last, paths.log,
                             paths.plot if paths.plot.exists() else None, state.best_epoch,
                             tuple(state.history), state.stopped, tuple(self.run.classes),
                             state.out_of_time)
        log.info("%s", result.summary())
        return result
