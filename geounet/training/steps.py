"""One pass over the chips: a training epoch (optimizer steps under the schedule) and the
evaluation step (validation loss, confusion counts, building objects)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from geounet.errors import InputError
from geounet.training.config import TrainProgress

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from geounet.training.metrics import ConfusionMatrix, ObjectCounter
    from geounet.training.prepare import TrainingRun
    from geounet.training.state import TrainState

log = logging.getLogger(__name__)

Progress = Callable[[TrainProgress], None]
"""The progress callback of :func:`geounet.training.loop.train`."""


@dataclass(frozen=True)
class Validation:
    """One pass over the validation chips.

    Attributes
    ----------
    loss : mean loss per chip (nan without validation chips).
    confusion : pixel confusion counts per class.
    seen : validation samples seen.
    objects : building object counts (IoU 0.5 matching per validation window; None without
        a ``buildings`` class).
    """

    loss: float
    confusion: ConfusionMatrix
    seen: int
    objects: ObjectCounter | None


def train_epoch(run: TrainingRun, state: TrainState, epoch: int,
                progress: Progress | None) -> tuple[int, float]:
    """One pass over the training chips; returns the chips seen and their summed loss."""
    import torch

    config, model, device, pin = run.config, run.model, run.device, run.pin
    model.train()
    freeze_encoder(run, epoch)
    run.train_set.set_epoch(epoch)
    total, seen = 0.0, 0
    for step, batch in enumerate(run.loader(run.train_set, True, epoch), 1):
        images, target, weights = batch[:3]
        images = images.to(device, non_blocking=pin)
        target = target.to(device, non_blocking=pin)
        weights = weights.to(device, non_blocking=pin)
        set_lr(run, state)
        run.optimizer.zero_grad(set_to_none=True)
        loss = run.loss(run.forward(model, images), target, weights)
        if not torch.isfinite(loss):
            raise InputError(
                f"training loss became {loss.item()} at epoch {epoch}; lower --lr "
                f"(now {config.lr}) or use --precision fp32."
            )
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        state.done_steps += 1
        if run.average is not None:
            run.average.update(model)
        total += loss.item() * images.shape[0]
        seen += images.shape[0]
        if progress is not None:
            progress(TrainProgress(epoch, config.epochs, step, run.steps, loss.item()))
        budget = run.budget
        if budget and state.elapsed() + state.val_estimate >= budget:
            state.out_of_time = True
            break
    return seen, total


def freeze_encoder(run: TrainingRun, epoch: int) -> None:
    """Freeze (epochs up to ``freeze_encoder_epochs``) or thaw the encoder of the model.

    Frozen: no gradients (AdamW skips the parameters, weight decay included) and its
    BatchNorm layers in eval mode, so neither weights nor statistics move."""
    count = run.config.freeze_encoder_epochs
    if not count:
        return
    frozen = epoch <= count
    encoder = run.model.encoder
    encoder.requires_grad_(not frozen)
    if frozen:
        encoder.eval()
    if epoch in (1, count + 1):
        log.info("epoch %d: encoder %s", epoch, f"frozen (warm-up of {count} epochs)"
                 if frozen else "trained again")


def schedule_progress(run: TrainingRun, state: TrainState) -> float:
    """The schedule's progress through the run in [0, 1] (steps or time, the larger)."""
    from geounet.training.schedule import run_progress

    budget = run.budget
    usable = budget - state.val_estimate if budget else None
    return run_progress(state.done_steps, run.steps * run.config.epochs, state.elapsed(),
                        max(usable, 1.0) if usable else None)


def set_lr(run: TrainingRun, state: TrainState) -> None:
    """Set the learning rate of the next step from the run's progress (not for ``plateau``)."""
    from geounet.training.schedule import lr_factor

    config = run.config
    if config.schedule != "plateau":
        factor = lr_factor(schedule_progress(run, state), schedule=config.schedule,
                           warmup=config.warmup)
        for group in run.optimizer.param_groups:
            group["lr"] = config.lr * factor


def predicted_classes(run: TrainingRun, logits: torch.Tensor) -> np.ndarray:
    """The predicted class per pixel (uint8), as prediction makes it: the argmax of the
    logits, or with extra outputs (boundary, contact) of their probabilities folded into the
    card's classes (:meth:`geounet.model.ModelCard.fold`)."""
    import torch

    groups = run.card.output_groups
    if groups is None:
        return logits.argmax(1).to(torch.uint8).cpu().numpy()
    probs = torch.softmax(logits.float(), dim=1)
    folded = torch.stack([probs[:, list(g)].sum(1) for g in groups], 1)
    return folded.argmax(1).to(torch.uint8).cpu().numpy()


def validate(run: TrainingRun, state: TrainState, epoch: int) -> Validation:
    """One pass over the validation chips (its duration kept in ``state.val_estimate``)."""
    import torch

    from geounet.training.metrics import ConfusionMatrix, ObjectCounter

    net, device = run.net, run.device
    net.eval()
    cm = ConfusionMatrix(run.classes)
    objects = (ObjectCounter(run.classes.index("buildings")) if "buildings" in run.classes
               else None)
    val_total, val_seen = 0.0, 0
    val_started = time.perf_counter()
    with torch.no_grad():
        for batch in run.loader(run.val_set, False, epoch):
            images, target, weights = (t.to(device) for t in batch[:3])
            logits = run.forward(net, images)
            loss = run.loss(logits, target, weights)
            val_total += loss.item() * images.shape[0]
            val_seen += images.shape[0]
            pred = predicted_classes(run, logits)
            labels = batch[3] if len(batch) > 3 else batch[1]  # contact: the class mask
            truth = labels.clamp(max=255).to(torch.uint8).numpy()
            cm.update(pred, truth)
            if objects is not None:
                for p, t in zip(pred, truth):
                    objects.update(p, t)
    state.val_estimate = time.perf_counter() - val_started
    val_loss = val_total / val_seen if val_seen else float("nan")
    return Validation(val_loss, cm, val_seen, objects)
