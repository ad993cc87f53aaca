"""``refit``: after a run, retrain from its start weights on every chip for the selected steps."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import shutil
import time

from geounet.training.config import TrainResult
from geounet.training.prepare import TrainingRun, make_datasets, make_optimizer
from geounet.training.start import OutputPaths
from geounet.training.state import TrainState
from geounet.training.steps import train_epoch

log = logging.getLogger(__name__)


def refit(run: TrainingRun, state: TrainState, paths: OutputPaths,
          result: TrainResult) -> TrainResult:
    """Retrain from the run's start weights on every chip for the selected number of steps.

    The run's validation picked the epoch ``state.best_epoch`` after ``state.best_steps``
    optimizer steps; the refit trains on the train, val and buffer chips with the same
    settings for that many steps rounded up to whole epochs over all chips, under the same
    schedule shape (by steps: no time budget, no validation), and saves the result as the
    best checkpoint with the same card. The validation-selected checkpoint is kept as
    ``*.selected.pt``.
    """
    import torch

    from geounet.model import save_checkpoint

    config = run.config
    records = [dataclasses.replace(r, split="train") for r in run.all_records]
    counts = {s: sum(r.split == s for r in run.all_records) for s in ("train", "val", "buffer")}
    steps_per_epoch = math.ceil(len(records) / config.batch_size)
    epochs = max(1, math.ceil(state.best_steps / steps_per_epoch))
    refit_config = dataclasses.replace(config, epochs=epochs, max_minutes=None, patience=None,
                                       refit=False)
    torch.manual_seed(config.seed)
    model = copy.deepcopy(run.model)
    assert run.initial_state is not None  # set for every run with refit
    model.load_state_dict(run.initial_state)
    train_set, _ = make_datasets(refit_config, run.card, run.classes, records,
                                 run.train_set.spec, refit=True, cache=run.train_set.reader.cache)
    optimizer, scheduler, scaler, average = make_optimizer(refit_config, model, run.amp_dtype)
    again = TrainingRun(refit_config, run.classes, run.card, model, run.device, run.amp_dtype,
                        train_set, run.val_set, run.workers, optimizer, scheduler, scaler,
                        average, channels_last=run.channels_last)
    log.info("refit: retraining on all %d chips (%d train, %d val, %d buffer) for %d epochs "
             "(%d steps; the selected epoch %d came after %d)", len(records), counts["train"],
             counts["val"], counts["buffer"], epochs, epochs * steps_per_epoch,
             state.best_epoch, state.best_steps)
    inner = TrainState(run_start=time.perf_counter())
    seen_total = 0
    try:
        for epoch in range(1, epochs + 1):
            seen, total = train_epoch(again, inner, epoch, None)
            seen_total += seen
            log.info("refit epoch %d/%d train loss %.4f", epoch, epochs, total / max(seen, 1))
    finally:
        again.close()
    shutil.copyfile(paths.best, paths.selected)
    info = {"chips": len(records), "splits": counts, "epochs": epochs,
            "steps": inner.done_steps, "samples": seen_total,
            "selected_epoch": state.best_epoch, "selected_steps": state.best_steps,
            "selected": paths.selected.name, "seconds": inner.elapsed()}
    save_checkpoint(paths.best, again.net, run.card, extra={"refit": info}, overwrite=True)
    log.info("refit model (all %d chips) -> %s; the validation-selected model is %s",
             len(records), paths.best, paths.selected)
    return dataclasses.replace(result, refit=info, selected_path=paths.selected)
