"""Training settings and records: TrainConfig, the per-epoch record, progress and the result."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geounet.config import (
    ArchitectureName,
    Encoder,
    LossType,
    LRSchedule,
    Monitor,
    Padding,
    Precision,
    choices,
)
from geounet.errors import InputError


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes a training run (CLI option names match the fields).

    Attributes
    ----------
    architecture : the network (:data:`geounet.config.ArchitectureName`): ``unet`` (default)
        or ``resnet-unet`` (a U-Net decoder over a ResNet encoder, same padding, tiles
        multiples of 32). A run started from ``init`` keeps that checkpoint's architecture.
    depth, base_channels, padding, batch_norm : U-Net architecture (batch norm on by default:
        in eval mode it is a per-channel affine map, so valid-padding tiling stays exact).
    encoder : the ResNet of ``resnet-unet`` (:data:`geounet.config.Encoder`).
    encoder_weights : a local file with pretrained ResNet weights (a torchvision or timm
        state dict) loaded into the encoder before training (``resnet-unet`` only; nothing
        is downloaded).
    decoder_channels : the five decoder widths of ``resnet-unet``, coarsest first (None =
        ``(256, 128, 64, 32, 16)``).
    freeze_encoder_epochs : the first this many epochs train the decoder only (encoder
        weights and BatchNorm statistics fixed; a ``resnet-unet`` model, new or from
        ``init``): a warm-up that keeps
        pretrained features from being wrecked by a random decoder's first gradients.
    epochs : total epochs (a resumed run continues up to this number).
    batch_size : samples per step.
    lr : peak AdamW learning rate.
    weight_decay : AdamW decoupled weight decay (0 = plain Adam).
    schedule : learning-rate schedule over the run (:data:`geounet.config.LRSchedule`):
        ``one-cycle`` (default), ``cosine``, or ``plateau`` (constant, halved when the
        monitored score stalls for ``patience // 2`` epochs).
    warmup : share of the run spent warming the learning rate up (one-cycle, cosine).
    ema : decay of the exponential moving average of the weights that is validated and saved
        (0 = off; the effective decay ramps up as ``min(ema, (1 + n) / (10 + n))`` after
        ``n`` steps, so short runs are not stuck near their initial weights).
    monitor : ``iou`` (mean foreground IoU on validation, default) or ``loss`` picks the best
        checkpoint and drives ``patience``.
    select_from : share of the run (schedule progress) from which epochs compete for the best
        checkpoint (``one-cycle``/``cosine`` without ``patience``; 0 = every epoch). Before it the checkpoint follows
        the latest epoch: weights taken at a high learning rate scored well on a small
        validation split yet far worse on other scenes (docs/training.md).
    max_minutes : wall-time budget of the run in minutes (None = none): the schedule follows
        the larger of step and time progress, so a slower machine anneals sooner, and the run
        ends gracefully (validated, saved) when the budget is spent.
    chip_size : side of the labelled window trained on per sample (default: the largest chip);
        larger chips are cropped (random crops in training, a grid in validation).
    tile_size : model input side (default: the smallest valid input whose output covers
        ``chip_size``); overrides ``chip_size``.
    class_weights : cross-entropy weight per class (default all 1).
    dice_weight : weight of the soft-Dice term.
    loss : pixel loss, ``ce`` (softmax cross-entropy) or ``bce`` (one-vs-rest sigmoid binary
        cross-entropy per class); either plus ``dice_weight`` x soft Dice.
    border_weight : U-Net border term ``w0`` between touching buildings (0 = off; paper and
        default: 10, measured better on the issue-21 proxy and the devset: docs/training.md).
    border_sigma : its ``sigma`` in pixels (paper: 5).
    contact_class : train building boundary and contact classes as extra outputs (ramp's
        multimasks; :mod:`geounet.training.contact`): the card records them and prediction
        folds them back, contact pixels separating touching buildings. Needs a
        ``buildings`` class.
    elastic : elastic deformation augmentation.
    brightness, contrast : per-band jitter amplitudes (normalized units).
    gamma : gamma jitter, ``g`` log-uniform in ``exp(+-gamma)`` (0 = off).
    hue : hue rotation of the first three bands by up to ``+- hue * pi`` (0 = off).
    scale : zoom augmentation, ``s`` log-uniform in ``[1/(1+scale), 1+scale]`` (0 = off).
    dice_foreground : soft Dice over the foreground classes only (background left out).
    patience : epochs without improvement of ``monitor`` before stopping (None = never).
    val_fraction : share of chips held out when the chips dir has no split.
    seed : seed of weights, sampling and augmentation.
    device : ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    precision : ``auto`` (bf16 autocast on a CPU with native bf16, AVX512_BF16/AMX, else fp32;
        mixed precision on CUDA), ``fp32``, ``bf16`` (ignored with a warning on a CPU without
        native bf16), ``fp16`` (CUDA only). The loss and the optimizer stay fp32.
    channels_last : channels_last (NHWC) model and batches (None = the rule: on for the CPU,
        on CUDA under mixed precision; :mod:`geounet.training.speed`).
    workers : DataLoader worker processes, persistent across epochs (None = the rule: on CPU 1
        when a core is left free by torch's threads, else 0; 4 on CUDA).
    cache_chips : keep the decoded chips in memory after their first read (None = the rule:
        when they take at most 2 GiB and a quarter of the available memory).
    description : stored in the model card.
    pixel_size : training resolution in metres per pixel (None = chosen from the chips: the
        most common within 10 %, ties the finest; :mod:`geounet.training.resolution`). Chips
        at another resolution are resampled to it when loaded; the card stores it.
    refit : after the run, retrain from fresh weights on every chip (train, val and buffer)
        for the optimizer steps up to the selected epoch, and save that model as the best
        checkpoint (the validation-selected one is kept as ``*.selected.pt``).
    """

    depth: int = 4
    base_channels: int = 16
    padding: Padding = "valid"
    batch_norm: bool = True
    epochs: int = 90
    batch_size: int = 8
    lr: float = 2e-3
    chip_size: int | None = None
    tile_size: int | None = None
    class_weights: tuple[float, ...] | None = None
    dice_weight: float = 1.0
    loss: LossType = "ce"
    border_weight: float = 10.0
    border_sigma: float = 5.0
    elastic: bool = False
    brightness: float = 0.2
    contrast: float = 0.2
    patience: int | None = None
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    precision: Precision = "auto"
    workers: int | None = None
    description: str = ""
    weight_decay: float = 1e-4
    schedule: LRSchedule = "one-cycle"
    warmup: float = 0.1
    ema: float = 0.98
    monitor: Monitor = "iou"
    max_minutes: float | None = 27.0
    gamma: float = 0.25
    hue: float = 0.05
    scale: float = 0.25
    dice_foreground: bool = True
    select_from: float = 0.7
    pixel_size: float | None = None
    refit: bool = False
    architecture: ArchitectureName = "unet"
    encoder: Encoder = "resnet34"
    encoder_weights: str | None = None
    decoder_channels: tuple[int, ...] | None = None
    freeze_encoder_epochs: int = 0
    channels_last: bool | None = None
    cache_chips: bool | None = None
    contact_class: bool = False

    def __post_init__(self) -> None:
        self._check_architecture()
        self._check_loss()
        self._check_schedule()
        self._check_run()

    def _check_architecture(self) -> None:
        """The network fields (normalized where they may come as lists)."""
        if self.architecture not in choices(ArchitectureName):
            raise InputError(f"architecture {self.architecture!r} is not one of "
                             f"{choices(ArchitectureName)}; pick one.")
        if self.encoder not in choices(Encoder):
            raise InputError(f"encoder {self.encoder!r} is not one of {choices(Encoder)}.")
        if self.architecture != "resnet-unet":
            for name in ("encoder_weights", "decoder_channels"):
                if getattr(self, name) is not None:
                    raise InputError(
                        f"{name} {getattr(self, name)!r} applies to the resnet-unet "
                        f"architecture only; pass architecture 'resnet-unet' (--architecture "
                        f"resnet-unet) or leave it out.")
        if self.encoder_weights is not None:
            object.__setattr__(self, "encoder_weights", str(self.encoder_weights))
        if self.decoder_channels is not None:
            object.__setattr__(self, "decoder_channels", tuple(self.decoder_channels))
        if (isinstance(self.freeze_encoder_epochs, bool)
                or not isinstance(self.freeze_encoder_epochs, int)
                or self.freeze_encoder_epochs < 0):
            raise InputError(f"freeze_encoder_epochs {self.freeze_encoder_epochs!r} must be a "
                             "whole number >= 0 (0 = never frozen).")

    def _check_loss(self) -> None:
        """Network sizes, padding and the loss."""
        for name in ("depth", "base_channels", "epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InputError(f"{name} {value!r} must be a whole number >= 1.")
        if self.padding not in choices(Padding):
            raise InputError(f"padding {self.padding!r} is not one of {choices(Padding)}.")
        if self.loss not in choices(LossType):
            raise InputError(f"loss {self.loss!r} is not one of {choices(LossType)}; pick one.")
        if not (self.dice_weight >= 0 and math.isfinite(self.dice_weight)):
            raise InputError(f"dice weight {self.dice_weight} must be finite and >= 0; e.g. 1.")

    def _check_schedule(self) -> None:
        """The schedule, its selection and the time budget."""
        if self.schedule not in choices(LRSchedule):
            raise InputError(f"schedule {self.schedule!r} is not one of {choices(LRSchedule)}.")
        if self.monitor not in choices(Monitor):
            raise InputError(f"monitor {self.monitor!r} is not one of {choices(Monitor)}.")
        if not 0.0 <= self.warmup < 1.0:
            raise InputError(f"warmup {self.warmup} must be a share of the run in [0, 1); "
                             "e.g. 0.1.")
        if not 0.0 <= self.select_from <= 1.0:
            raise InputError(f"select_from {self.select_from} must be a share of the run in "
                             "[0, 1] (0 = every epoch competes); e.g. 0.7.")
        if not 0.0 <= self.ema < 1.0:
            raise InputError(f"ema decay {self.ema} must be in [0, 1) (0 = off); e.g. 0.98.")
        for name in ("weight_decay", "gamma", "hue", "scale"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise InputError(f"{name} {value} must be finite and >= 0 (0 = off).")
        if self.max_minutes is not None and not (self.max_minutes > 0
                                                 and math.isfinite(self.max_minutes)):
            raise InputError(f"max minutes {self.max_minutes} must be > 0 (or None for no "
                             "time budget); e.g. 27 to finish within half an hour.")
        if self.pixel_size is not None and not (self.pixel_size > 0
                                                and math.isfinite(self.pixel_size)):
            raise InputError(f"pixel size {self.pixel_size} must be > 0 metres (or None to "
                             "choose it from the chips); e.g. 0.3.")

    def _check_run(self) -> None:
        """Precision, learning rate, patience, the split, weights and sizes."""
        if self.precision not in choices(Precision):
            raise InputError(f"precision {self.precision!r} is not one of {choices(Precision)}.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"learning rate {self.lr} must be > 0; use e.g. 1e-3.")
        if self.patience is not None and self.patience < 1:
            raise InputError(f"patience {self.patience} must be >= 1 (or None to never stop).")
        if not 0.0 <= self.val_fraction < 1.0:
            raise InputError(f"val_fraction {self.val_fraction} must be in [0, 1); e.g. 0.2.")
        if self.class_weights is not None:
            weights = tuple(float(w) for w in self.class_weights)
            if any(w < 0 or not math.isfinite(w) for w in weights):
                raise InputError(f"class weights {weights} must be finite and >= 0.")
            object.__setattr__(self, "class_weights", weights)
        if self.border_weight < 0 or self.border_sigma <= 0:
            raise InputError(
                f"border weight {self.border_weight} must be >= 0 and sigma "
                f"{self.border_sigma} > 0; the U-Net paper uses 10 and 5."
            )
        if self.contact_class not in (True, False):
            raise InputError(f"contact_class {self.contact_class!r} must be true or false.")
        for name in ("channels_last", "cache_chips"):
            if getattr(self, name) not in (None, True, False):
                raise InputError(f"{name} {getattr(self, name)!r} must be true, false or None "
                                 "(None = the rule, docs/training.md).")
        for name in ("chip_size", "tile_size", "workers"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < (0 if name ==
                                                                              "workers" else 1)):
                raise InputError(f"{name} {value!r} must be a positive whole number.")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (stored in checkpoints)."""
        out = dataclasses.asdict(self)
        for name in ("class_weights", "decoder_channels"):
            if out[name] is not None:
                out[name] = list(out[name])
        return out


@dataclass(frozen=True)
class EpochRecord:
    """Scores of one epoch (``f1`` per class is pixel F1; ``object_f1`` is the building
    object F1 at IoU 0.5 over the validation windows, ``nan`` without a buildings class)."""

    epoch: int
    lr: float
    train_loss: float
    val_loss: float
    iou: tuple[float, ...]
    f1: tuple[float, ...]
    mean_iou: float
    seconds: float
    chips_per_s: float
    object_f1: float = float("nan")

    def row(self, classes: Sequence[str]) -> dict[str, Any]:
        """A CSV row (``object_f1_buildings`` when the model has a ``buildings`` class)."""
        row = {"epoch": self.epoch, "lr": self.lr, "train_loss": self.train_loss,
               "val_loss": self.val_loss, "mean_iou": self.mean_iou}
        row.update({f"iou_{c}": v for c, v in zip(classes, self.iou)})
        row.update({f"f1_{c}": v for c, v in zip(classes, self.f1)})
        if "buildings" in classes:
            row["object_f1_buildings"] = self.object_f1
        row.update({"seconds": self.seconds, "chips_per_s": self.chips_per_s})
        return row


@dataclass(frozen=True)
class TrainProgress:
    """Sent to the progress callback after every step (``record`` set at epoch ends)."""

    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    record: EpochRecord | None = None


@dataclass(frozen=True)
class TrainResult:
    """What :func:`geounet.training.loop.train` wrote and measured."""

    best_path: Path
    last_path: Path
    log_path: Path
    plot_path: Path | None
    best_epoch: int
    history: tuple[EpochRecord, ...]
    stopped_early: bool
    classes: tuple[str, ...] = field(default=())
    out_of_time: bool = False
    refit: dict[str, Any] | None = None  # with ``refit``: chips, epochs, steps, samples seen
    selected_path: Path | None = None  # with ``refit``: the validation-selected checkpoint

    @property
    def best(self) -> EpochRecord:
        """The record of the best epoch (the last one when no epoch was best)."""
        for rec in self.history:
            if rec.epoch == self.best_epoch:
                return rec
        return self.history[-1]

    def summary(self) -> str:
        """One line: the best epoch and its validation scores per foreground class.

        Examples
        --------
        >>> rec = EpochRecord(3, 1e-3, 0.2, 0.3, (0.9, 0.7), (0.95, 0.8), 0.7, 1.0, 5.0)
        >>> TrainResult(Path("m.pt"), Path("m.last.pt"), Path("m.log.csv"), None, 3, (rec,),
        ...             False, ("background", "buildings")).summary()
        'best epoch 3/3: val loss 0.3000, mean IoU 0.700, IoU buildings 0.700, F1 buildings 0.800 -> m.pt'
        """
        rec = self.best
        parts = [f"val loss {rec.val_loss:.4f}", f"mean IoU {rec.mean_iou:.3f}"]
        for i, name in enumerate(self.classes):
            if i > 0 and i < len(rec.iou):
                parts.append(f"IoU {name} {rec.iou[i]:.3f}")
                parts.append(f"F1 {name} {rec.f1[i]:.3f}")
                if name == "buildings" and math.isfinite(rec.object_f1):
                    parts.append(f"object F1 {name} {rec.object_f1:.3f}")
        end = ("  (stopped early)" if self.stopped_early else "") + (
            "  (time budget spent)" if self.out_of_time else "")
        if self.refit is not None:
            end += (f"  (refit on all {self.refit['chips']} chips for {self.refit['steps']} "
                    f"steps; selected model: {self.selected_path})")
        return (f"best epoch {rec.epoch}/{self.history[-1].epoch}: " + ", ".join(parts)
                + f" -> {self.best_path}{end}")
