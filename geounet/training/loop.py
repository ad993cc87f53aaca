"""The training loop: train() as named steps (set-up, resume, one epoch, validation, saving).

The settings and records (:class:`TrainConfig`, :class:`EpochRecord`, :class:`TrainProgress`,
:class:`TrainResult`) live in :mod:`geounet.training.config` and are re-exported here.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geounet.errors import CheckpointError, DeviceError, InputError, OutputExistsError
from geounet.training.average import WeightAverage
from geounet.training.config import (  # re-exported: user code imports them from here
    EpochRecord,
    TrainConfig,
    TrainProgress,
    TrainResult,
)
from geounet.training.report import write_log, write_plot

log = logging.getLogger(__name__)


def output_paths(out: str | os.PathLike[str]) -> dict[str, Path]:
    """Files written next to the best checkpoint ``out`` (``model.pt``): ``model.last.pt``,
    ``model.log.csv``, ``model.curves.png``."""
    out = Path(out)
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return {"best": out, "last": out.with_name(f"{stem}.last.pt"),
            "log": out.with_name(f"{stem}.log.csv"), "plot": out.with_name(f"{stem}.curves.png")}


def _autocast_dtype(precision: str, device: Any) -> Any:
    """Autocast dtype of a training step (None = fp32).

    Unlike inference (:func:`geounet.engine.runner.resolve_precision`), ``auto`` stays fp32 on
    CPU: bf16 autocast made training about 10x slower on the project CPU (docs/training.md).
    """
    import torch

    if precision == "fp32":
        return None
    if device.type == "cuda":
        if precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
            return torch.bfloat16
        return torch.float16
    if precision == "fp16":
        raise DeviceError(
            "precision 'fp16' needs a CUDA device; on CPU train with 'fp32' or 'auto'."
        )
    return torch.bfloat16 if precision == "bf16" else None


def sample_spec(arch: Any, chip_size: int, tile_size: int | None) -> Any:
    """Model input/output sizes for training on ``chip_size`` windows."""
    from geounet.training.dataset import SampleSpec

    if tile_size is None:
        tile_size = arch.input_size_for_output(chip_size)
    out = arch.output_size(tile_size)
    return SampleSpec(tile_size, out, (tile_size - out) // 2)


def _rng_state() -> dict[str, Any]:
    """The torch (and CUDA) RNG states, saved in checkpoints."""
    import torch

    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def train(
    chips_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    config: TrainConfig | None = None,
    resume: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: Callable[[TrainProgress], None] | None = None,
    dataset: Any = None,
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
    paths = output_paths(out)
    _check_outputs(paths, overwrite, resume)
    payload, state, card, dataset = _read_resume(resume, dataset)
    if init is not None:
        payload, card, dataset = _read_init(init, resume, dataset)
    run = _set_up(chips_dir, config, dataset, resume if init is None else init, payload, card,
                  fine_tune=init is not None)
    tally = _restore(run, state, payload, resume)
    paths["best"].parent.mkdir(parents=True, exist_ok=True)  # only once the inputs are checked
    tally.run_start = time.perf_counter()
    for epoch in range(tally.start, config.epochs + 1):
        if _run_epoch(run, tally, epoch, paths, chips_dir, progress):
            break
    result = _result(run, tally, paths)
    if config.refit:
        result = _refit(run, tally, paths, result)
    return result


@dataclass
class _Run:
    """The fixed parts of one training run: settings, card, model, data, optimizer."""

    config: TrainConfig
    classes: tuple[str, ...]
    card: Any
    model: Any
    device: Any
    amp_dtype: Any
    train_set: Any
    val_set: Any
    workers: int
    optimizer: Any
    scheduler: Any
    scaler: Any
    average: WeightAverage | None
    all_records: tuple[Any, ...] = ()  # train, val and buffer chips (for the refit)
    initial_state: dict[str, Any] | None = None  # the weights the run started from (refit)

    @property
    def pin(self) -> bool:
        """Pin host memory (CUDA only)."""
        return self.device.type == "cuda"

    @property
    def steps(self) -> int:
        """Optimizer steps per epoch."""
        return math.ceil(len(self.train_set) / self.config.batch_size)

    @property
    def budget(self) -> float | None:
        """The time budget in seconds (None = none)."""
        return self.config.max_minutes * 60.0 if self.config.max_minutes else None

    @property
    def net(self) -> Any:
        """The network validated and saved: the weight average when on, else the model."""
        return self.average.model if self.average is not None else self.model

    def loader(self, dataset: Any, shuffle: bool, epoch: int) -> Any:
        """A DataLoader over ``dataset``, its shuffling seeded by the seed and the epoch."""
        import torch

        generator = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        return torch.utils.data.DataLoader(
            dataset, batch_size=self.config.batch_size, shuffle=shuffle,
            num_workers=self.workers, pin_memory=self.pin, generator=generator, drop_last=False)

    def forward(self, net: Any, images: Any) -> Any:
        """Logits of ``net`` on ``images`` under the run's autocast."""
        import torch

        if self.device.type == "cpu":
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            return net(images)

    def loss(self, logits: Any, target: Any, weights: Any) -> Any:
        """The configured segmentation loss."""
        from geounet.training.losses import segmentation_loss

        return segmentation_loss(logits, target, weights, dice_weight=self.config.dice_weight,
                                 loss=self.config.loss,
                                 dice_foreground=self.config.dice_foreground)

    def score(self, value: float, loss: float) -> float:
        """Higher is better; nan (no validation pixel of any foreground class) ranks last."""
        value = value if self.config.monitor == "iou" else -loss
        return value if math.isfinite(value) else -math.inf


@dataclass
class _Tally:
    """What the run has done so far (restored on resume): history, best score, steps, time."""

    history: list[EpochRecord] = field(default_factory=list)
    best: float = -math.inf
    bad_epochs: int = 0
    start: int = 1
    done_steps: int = 0  # optimizer steps and training seconds before this process
    spent: float = 0.0
    best_epoch: int = 0
    best_steps: int = 0  # optimizer steps up to the end of the best epoch
    stopped: bool = False
    out_of_time: bool = False
    run_start: float = 0.0
    val_estimate: float = 0.0  # seconds of the last validation pass

    def elapsed(self) -> float:
        """Training seconds of the whole run, earlier processes included."""
        return self.spent + time.perf_counter() - self.run_start


def _check_outputs(paths: dict[str, Path], overwrite: bool,
                   resume: str | os.PathLike[str] | None) -> None:
    """Refuse to replace an existing best checkpoint unless overwriting or resuming."""
    if paths["best"].exists() and not (overwrite or resume is not None):
        raise OutputExistsError(
            f"checkpoint {str(paths['best'])!r} exists; choose another --out, pass --overwrite, "
            "or --resume its .last.pt."
        )


def _read_resume(resume: str | os.PathLike[str] | None, dataset: Any
                 ) -> tuple[dict[str, Any] | None, dict[str, Any] | None, Any, Any]:
    """Read the checkpoint resumed from: its payload, training state, card and dataset rule."""
    from geounet.model import ModelCard, read_checkpoint
    from geounet.training.layout import DatasetConfig

    if resume is None:
        return None, None, None, dataset
    payload = read_checkpoint(resume)
    state = (payload.get("extra") or {}).get("train_state")
    if not isinstance(state, dict) or "optimizer" not in state:
        raise CheckpointError(
            f"checkpoint {str(resume)!r} has no training state (optimizer, epoch); resume "
            "from the .last.pt written by geounet train."
        )
    card = ModelCard.from_dict(payload["card"])
    if dataset is None or dataset.classes is None:  # read the labels as the model did
        dataset = dataclasses.replace(dataset or DatasetConfig(), classes=card.classes)
    return payload, state, card, dataset


def _read_init(init: str | os.PathLike[str], resume: str | os.PathLike[str] | None,
               dataset: Any) -> tuple[dict[str, Any], Any, Any]:
    """Read the checkpoint fine-tuned from: its payload, card, and the dataset rule with the
    card's classes (the chips are read as the model reads them)."""
    from geounet.model import ModelCard, read_checkpoint
    from geounet.training.layout import DatasetConfig

    if resume is not None:
        raise InputError(
            f"--init {str(init)!r} and --resume {str(resume)!r} both given: --resume continues "
            "a run (its epoch, optimizer and schedule), --init starts a new run from a "
            "checkpoint's weights; pass one of them."
        )
    payload = read_checkpoint(init)
    card = ModelCard.from_dict(payload["card"])
    if dataset is not None and dataset.classes is not None and \
            tuple(dataset.classes) != tuple(card.classes):
        raise CheckpointError(
            f"checkpoint {str(init)!r} predicts classes {list(card.classes)} but the chips are "
            f"read as {list(dataset.classes)}; fine-tuning keeps the model's classes: label "
            f"the chips with {','.join(card.classes)} (--classes), or train a new model "
            "without --init."
        )
    dataset = dataclasses.replace(dataset or DatasetConfig(), classes=card.classes)
    return payload, card, dataset


def _set_up(chips_dir: str | os.PathLike[str], config: TrainConfig, dataset: Any,
            resume: str | os.PathLike[str] | None, payload: dict[str, Any] | None,
            card: Any, fine_tune: bool = False) -> _Run:
    """Open the chips and build the card, model, datasets, optimizer and schedulers.

    ``resume`` is the checkpoint continued from, or with ``fine_tune`` the one whose weights
    start a new run (``--init``)."""
    import torch

    from geounet.engine.runner import resolve_device
    from geounet.training.dataset import compute_stats, warn_if_unbalanced
    from geounet.training.layout import open_dataset

    found = open_dataset(chips_dir, dataset, val_fraction=config.val_fraction, seed=config.seed)
    classes = card.classes if resume is not None else found.classes
    records = list(found.records)
    stats = compute_stats(records, len(classes), pixel_size=(
        card.pixel_size if resume is not None else config.pixel_size))
    log.info("%s", stats.resolution.describe())
    warn_if_unbalanced(stats, classes)
    arch, card = _card(chips_dir, config, resume, card, classes, stats, fine_tune)
    if config.class_weights is not None and len(config.class_weights) != len(classes):
        raise InputError(
            f"{len(config.class_weights)} class weights {config.class_weights} for "
            f"{len(classes)} classes {classes}; give one weight per class."
        )
    chip_size = config.chip_size or stats.max_size
    spec = sample_spec(arch, chip_size, config.tile_size)
    device = resolve_device(config.device)
    amp_dtype = _autocast_dtype(config.precision, device)
    torch.manual_seed(config.seed)
    model = _model(config, arch, payload, resume, fine_tune)
    # the refit starts where this run started: seeded fresh weights, the pretrained encoder
    # or the --init checkpoint (a resumed run's start is unknown: fresh weights, plus the
    # encoder file when one is configured)
    initial = None
    if config.refit:
        if resume is None or fine_tune:
            initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            initial = _model(config, arch, None, None, False).state_dict()
    model.to(device)
    if device.type == "cpu":
        model.to(memory_format=torch.channels_last)
        log.info("training in %s on CPU (threads: %d)", "fp32" if amp_dtype is None
                 else str(amp_dtype).replace("torch.", ""), torch.get_num_threads())
    train_set, val_set = _datasets(config, card, classes, records, spec)
    workers = config.workers if config.workers is not None else (4 if device.type == "cuda"
                                                                 else 0)
    optimizer, scheduler, scaler, average = _optimizer(config, model, amp_dtype)
    return _Run(config, classes, card, model, device, amp_dtype, train_set, val_set, workers,
                optimizer, scheduler, scaler, average, tuple(records) + tuple(found.buffer),
                initial)


def _architecture(config: TrainConfig, bands: int, num_classes: int) -> Any:
    """The architecture config a new run trains (:mod:`geounet.model.registry`)."""
    from geounet.model import ResNetUNetConfig, UNetConfig

    if config.architecture == "resnet-unet":
        extra = ({} if config.decoder_channels is None
                 else {"decoder_channels": config.decoder_channels})
        return ResNetUNetConfig(in_channels=bands, num_classes=num_classes,
                                encoder=config.encoder, **extra)
    return UNetConfig(in_channels=bands, num_classes=num_classes, depth=config.depth,
                      base_channels=config.base_channels, padding=config.padding,
                      batch_norm=config.batch_norm)


def _model(config: TrainConfig, arch: Any, payload: dict[str, Any] | None,
           source: str | os.PathLike[str] | None, fine_tune: bool) -> Any:
    """The network: new (pretrained encoder weights loaded from a file if given), or with
    the weights of the checkpoint resumed or fine-tuned from."""
    from geounet.model import ResNetUNetConfig, build_model, load_encoder_weights

    if config.freeze_encoder_epochs and not isinstance(arch, ResNetUNetConfig):
        raise InputError(
            f"freeze_encoder_epochs {config.freeze_encoder_epochs} needs a resnet-unet model "
            f"(a pretrained encoder to keep); this run trains a {arch.label}: pass "
            "--architecture resnet-unet, or leave out --freeze-encoder-epochs."
        )
    model = build_model(arch)
    if payload is not None:
        if fine_tune and config.encoder_weights is not None:
            raise InputError(
                f"encoder weights {config.encoder_weights!r} and --init {str(source)!r} both "
                "give the encoder's weights; fine-tuning starts from the checkpoint: leave "
                "out --encoder-weights."
            )
        model.load_state_dict(payload["state_dict"])
        if fine_tune:
            log.info("fine-tuning %s from %s (its card's bands, classes and normalization)",
                     arch.label, source)
    elif config.encoder_weights is not None:
        keys = load_encoder_weights(model, config.encoder_weights)
        log.info("encoder weights: %d tensors from %s", len(keys), config.encoder_weights)
    return model


def _card(chips_dir: str | os.PathLike[str], config: TrainConfig,
          resume: str | os.PathLike[str] | None, card: Any, classes: tuple[str, ...],
          stats: Any, fine_tune: bool = False) -> tuple[Any, Any]:
    """The architecture and model card: new from the chips, or the resumed (fine-tuned)
    checkpoint's, checked against the chips."""
    from geounet.config import PERCENTILE_LEVELS
    from geounet.model import ModelCard

    if resume is None:
        arch = _architecture(config, stats.count, len(classes))
        card = ModelCard(
            architecture=arch, bands=tuple(range(1, stats.count + 1)), mean=stats.mean,
            std=stats.std, classes=classes, pixel_size=stats.pixel_size, dtype=stats.dtype,
            value_range=stats.value_range, percentiles=stats.percentiles,
            percentile_levels=PERCENTILE_LEVELS if stats.percentiles else (),
            description=config.description or f"trained on chips {Path(chips_dir).name}",
        )
    else:
        arch = card.architecture
        fix = ("fine-tune on chips of its band count and data type, or train a new model "
               "without --init" if fine_tune else "resume with the chips it was trained on")
        if card.architecture.in_channels != stats.count:
            raise CheckpointError(
                f"checkpoint {str(resume)!r} reads {arch.in_channels} bands but the chips have "
                f"{stats.count}; {fix}."
            )
        if fine_tune:
            if card.dtype != stats.dtype:
                raise CheckpointError(
                    f"checkpoint {str(resume)!r} was trained on {card.dtype} scenes but the "
                    f"chips are {stats.dtype}; its normalization would not fit: {fix}."
                )
            card = dataclasses.replace(card, description=config.description or (
                f"fine-tuned from {Path(resume).name} on chips {Path(chips_dir).name}"))
    return arch, card


def _datasets(config: TrainConfig, card: Any, classes: tuple[str, ...], records: list[Any],
              spec: Any, *, refit: bool = False) -> tuple[Any, Any]:
    """The training (augmented) and validation chip datasets."""
    from geounet.training.dataset import ChipDataset

    border_class = classes.index("buildings") if "buildings" in classes else None
    common = dict(mean=card.mean, std=card.std, num_classes=len(classes),
                  class_weights=config.class_weights, border_weight=config.border_weight,
                  border_sigma=config.border_sigma, border_class=border_class,
                  seed=config.seed, pixel_size=card.pixel_size)
    train_set = ChipDataset([r for r in records if r.split == "train"], spec, train=True,
                            elastic=config.elastic, brightness=config.brightness,
                            contrast=config.contrast, scale=config.scale, gamma=config.gamma,
                            hue=config.hue, **common)
    val_set = ChipDataset([r for r in records if r.split == "val"], spec, train=False, **common)
    if len(val_set) == 0 and not refit:
        log.warning("no validation chips: early stopping and the best checkpoint follow the "
                    "training loss")
    return train_set, val_set


def _optimizer(config: TrainConfig, model: Any, amp_dtype: Any
               ) -> tuple[Any, Any, Any, WeightAverage | None]:
    """AdamW, the plateau scheduler, the gradient scaler and the weight average."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max" if config.monitor == "iou" else "min", factor=0.5,
        patience=max(1, (config.patience or 10) // 2))
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    average = WeightAverage(model, config.ema) if config.ema > 0 else None
    return optimizer, scheduler, scaler, average


def _restore(run: _Run, state: dict[str, Any] | None, payload: dict[str, Any] | None,
             resume: str | os.PathLike[str] | None) -> _Tally:
    """The tally to start from: empty, or the resumed run's state (also restored into ``run``)."""
    import torch

    tally = _Tally()
    if state is None:
        return tally
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    if state.get("live") is not None:
        run.model.load_state_dict(state["live"])  # the checkpoint's weights are the average
    if run.average is not None:
        run.average.load(payload["state_dict"], int(state.get("ema_updates", 0)))
    tally.history = [EpochRecord(**{**h, "iou": tuple(h["iou"]), "f1": tuple(h["f1"])})
                     for h in state.get("history", [])]
    tally.best, tally.bad_epochs = float(state["best"]), int(state["bad_epochs"])
    if state.get("monitor", "loss") != run.config.monitor:
        tally.best = -math.inf  # a score on another scale: restart the comparison
    tally.start = int(state["epoch"]) + 1
    tally.done_steps = int(state.get("steps", 0))
    tally.spent = float(state.get("seconds", 0.0))
    torch.set_rng_state(state["rng"]["torch"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    log.info("resuming from epoch %d of %s", tally.start - 1, resume)
    tally.best_epoch = int(state.get("best_epoch", 0))
    tally.best_steps = int(state.get("best_steps", tally.best_epoch * run.steps))
    return tally


def _run_epoch(run: _Run, tally: _Tally, epoch: int, paths: dict[str, Path],
               chips_dir: str | os.PathLike[str],
               progress: Callable[[TrainProgress], None] | None) -> bool:
    """Train, validate, save and report one epoch; True when the run ends after it."""
    started = time.perf_counter()
    seen, total = _train_epoch(run, tally, epoch, progress)
    train_seconds = time.perf_counter() - started
    train_loss = total / max(seen, 1)
    val_loss, cm, val_seen, objects = _validate(run, tally, epoch)
    current = run.score(cm.mean_iou(), val_loss) if val_seen else -train_loss
    if run.config.schedule == "plateau":  # mode "min" on the loss, "max" on the IoU
        run.scheduler.step(current if run.config.monitor == "iou" else -current)
    scores = cm.scores()
    record = EpochRecord(
        epoch=epoch, lr=run.optimizer.param_groups[0]["lr"], train_loss=train_loss,
        val_loss=val_loss, iou=tuple(s.iou for s in scores), f1=tuple(s.f1 for s in scores),
        mean_iou=cm.mean_iou(), seconds=time.perf_counter() - started,
        chips_per_s=seen / train_seconds if train_seconds > 0 else float("nan"),
        object_f1=objects.f1 if objects is not None else float("nan"))
    improved = _keep(run, tally, record, current)
    _save_epoch(run, tally, epoch, improved, paths, chips_dir)
    log.info("epoch %d/%d train loss %.4f val loss %.4f mean IoU %.3f%s (%.1f chips/s)",
             epoch, run.config.epochs, train_loss, val_loss, record.mean_iou,
             f" building object F1 {record.object_f1:.3f}" if objects is not None else "",
             record.chips_per_s)
    if progress is not None:
        progress(TrainProgress(epoch, run.config.epochs, run.steps, run.steps, train_loss,
                               record))
    return _should_stop(run, tally, epoch)


def _train_epoch(run: _Run, tally: _Tally, epoch: int,
                 progress: Callable[[TrainProgress], None] | None) -> tuple[int, float]:
    """One pass over the training chips; returns the chips seen and their summed loss."""
    import torch

    config, model, device, pin = run.config, run.model, run.device, run.pin
    model.train()
    _freeze_encoder(run, epoch)
    run.train_set.set_epoch(epoch)
    total, seen = 0.0, 0
    for step, (images, target, weights) in enumerate(run.loader(run.train_set, True, epoch), 1):
        images = images.to(device, non_blocking=pin)
        target = target.to(device, non_blocking=pin)
        weights = weights.to(device, non_blocking=pin)
        _set_lr(run, tally)
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
        tally.done_steps += 1
        if run.average is not None:
            run.average.update(model)
        total += loss.item() * images.shape[0]
        seen += images.shape[0]
        if progress is not None:
            progress(TrainProgress(epoch, config.epochs, step, run.steps, loss.item()))
        budget = run.budget
        if budget and tally.elapsed() + tally.val_estimate >= budget:
            tally.out_of_time = True
            break
    return seen, total


def _freeze_encoder(run: _Run, epoch: int) -> None:
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


def _progress(run: _Run, tally: _Tally) -> float:
    """The schedule's progress through the run in [0, 1] (steps or time, the larger)."""
    from geounet.training.schedule import run_progress

    budget = run.budget
    usable = budget - tally.val_estimate if budget else None
    return run_progress(tally.done_steps, run.steps * run.config.epochs, tally.elapsed(),
                        max(usable, 1.0) if usable else None)


def _set_lr(run: _Run, tally: _Tally) -> None:
    """Set the learning rate of the next step from the run's progress (not for ``plateau``)."""
    from geounet.training.schedule import lr_factor

    config = run.config
    if config.schedule != "plateau":
        factor = lr_factor(_progress(run, tally), schedule=config.schedule,
                           warmup=config.warmup)
        for group in run.optimizer.param_groups:
            group["lr"] = config.lr * factor


def _validate(run: _Run, tally: _Tally, epoch: int) -> tuple[float, Any, int, Any]:
    """One pass over the validation chips: mean loss, confusion matrix, chips seen and the
    building object counts (IoU 0.5 matching per validation window; None without a
    ``buildings`` class)."""
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
        for images, target, weights in run.loader(run.val_set, False, epoch):
            images, target, weights = images.to(device), target.to(device), weights.to(device)
            logits = run.forward(net, images)
            loss = run.loss(logits, target, weights)
            val_total += loss.item() * images.shape[0]
            val_seen += images.shape[0]
            pred = logits.argmax(1).to(torch.uint8).cpu().numpy()
            truth = target.clamp(max=255).to(torch.uint8).cpu().numpy()
            cm.update(pred, truth)
            if objects is not None:
                for p, t in zip(pred, truth):
                    objects.update(p, t)
    tally.val_estimate = time.perf_counter() - val_started
    val_loss = val_total / val_seen if val_seen else float("nan")
    return val_loss, cm, val_seen, objects


def _keep(run: _Run, tally: _Tally, record: EpochRecord, current: float) -> bool:
    """Add the epoch to the history and the best/patience count; True when it is the best.

    Only epochs from ``select_from`` of the run on compete (one-cycle/cosine, no
    ``patience``): before, each epoch is kept as the current model and the comparison starts
    afresh after it.
    """
    tally.history.append(record)
    config = run.config
    competes = (config.schedule == "plateau" or config.select_from <= 0
                or config.patience is not None  # early stopping: every epoch competes
                or record.epoch >= config.epochs or tally.out_of_time
                or _progress(run, tally) >= config.select_from - 1e-9)
    if not competes:
        tally.best, tally.bad_epochs, tally.best_epoch = -math.inf, 0, record.epoch
        tally.best_steps = tally.done_steps
        return True
    improved = current > tally.best or tally.best_epoch == 0 or tally.best == -math.inf
    if improved:
        tally.best, tally.bad_epochs, tally.best_epoch = current, 0, record.epoch
        tally.best_steps = tally.done_steps
    else:
        tally.bad_epochs += 1
    tally.stopped = (run.config.patience is not None
                     and tally.bad_epochs >= run.config.patience)
    return improved


def _save_epoch(run: _Run, tally: _Tally, epoch: int, improved: bool, paths: dict[str, Path],
                chips_dir: str | os.PathLike[str]) -> None:
    """Write the last (and when improved the best) checkpoint, the CSV log and the curves."""
    from geounet.model import save_checkpoint

    train_state = {
        "epoch": epoch, "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(),
        "history": [dataclasses.asdict(h) | {"iou": list(h.iou), "f1": list(h.f1)}
                    for h in tally.history],
        "best": tally.best, "best_epoch": tally.best_epoch, "bad_epochs": tally.bad_epochs,
        "best_steps": tally.best_steps,
        "monitor": run.config.monitor, "steps": tally.done_steps,
        "seconds": tally.elapsed(),
        "live": run.model.state_dict() if run.average is not None else None,
        "ema_updates": run.average.updates if run.average is not None else 0,
        "rng": _rng_state(), "config": run.config.to_dict(), "chips_dir": str(chips_dir),
    }
    extra = {"train_state": train_state}
    save_checkpoint(paths["last"], run.net, run.card, extra=extra, overwrite=True)
    if improved:
        save_checkpoint(paths["best"], run.net, run.card, extra=extra, overwrite=True)
    write_log(paths["log"], tally.history, run.classes)
    try:
        write_plot(paths["plot"], tally.history, run.classes, tally.best_epoch)
    except Exception as exc:  # a plot must never lose a training run
        log.warning("could not draw the training curves: %s", exc)


def _should_stop(run: _Run, tally: _Tally, epoch: int) -> bool:
    """Log and return whether patience or the time budget ends the run after ``epoch``."""
    if tally.stopped:
        log.info("early stop: no improvement for %d epochs", tally.bad_epochs)
        return True
    if tally.out_of_time:
        log.info("time budget of %s minutes spent at epoch %d; the schedule has annealed",
                 run.config.max_minutes, epoch)
        return True
    return False


def _result(run: _Run, tally: _Tally, paths: dict[str, Path]) -> TrainResult:
    """The result of the run (an error when no epoch was left to train)."""
    if not tally.history:
        raise InputError(
            f"nothing to train: the checkpoint is at epoch {tally.start - 1} and epochs is "
            f"{run.config.epochs}; raise --epochs to continue."
        )
    result = TrainResult(paths["best"], paths["last"], paths["log"],
                         paths["plot"] if paths["plot"].exists() else None, tally.best_epoch,
                         tuple(tally.history), tally.stopped, tuple(run.classes),
                         tally.out_of_time)
    log.info("%s", result.summary())
    return result


def _refit(run: _Run, tally: _Tally, paths: dict[str, Path], result: TrainResult
           ) -> TrainResult:
    """Retrain from fresh (seeded) weights on every chip for the selected number of steps.

    The run's validation picked the epoch ``tally.best_epoch`` after ``tally.best_steps``
    optimizer steps; the refit trains on the train, val and buffer chips with the same
    settings for that many steps rounded up to whole epochs over all chips, under the same
    schedule shape (by steps: no time budget, no validation), and saves the result as the
    best checkpoint with the same card. The validation-selected checkpoint is kept as
    ``*.selected.pt``.
    """
    import shutil

    import torch

    from geounet.model import save_checkpoint

    config = run.config
    records = [dataclasses.replace(r, split="train") for r in run.all_records]
    counts = {s: sum(r.split == s for r in run.all_records) for s in ("train", "val", "buffer")}
    steps_per_epoch = math.ceil(len(records) / config.batch_size)
    epochs = max(1, math.ceil(tally.best_steps / steps_per_epoch))
    refit_config = dataclasses.replace(config, epochs=epochs, max_minutes=None, patience=None,
                                       refit=False)
    torch.manual_seed(config.seed)
    model = copy.deepcopy(run.model)
    model.load_state_dict(run.initial_state)  # set for every run with refit
    train_set, _ = _datasets(refit_config, run.card, run.classes, records,
                             run.train_set.spec, refit=True)
    optimizer, scheduler, scaler, average = _optimizer(refit_config, model, run.amp_dtype)
    refit = _Run(refit_config, run.classes, run.card, model, run.device, run.amp_dtype,
                 train_set, run.val_set, run.workers, optimizer, scheduler, scaler, average)
    selected = paths["best"].with_name(paths["last"].name.replace(".last.pt", ".selected.pt"))
    log.info("refit: retraining on all %d chips (%d train, %d val, %d buffer) for %d epochs "
             "(%d steps; the selected epoch %d came after %d)", len(records), counts["train"],
             counts["val"], counts["buffer"], epochs, epochs * steps_per_epoch,
             tally.best_epoch, tally.best_steps)
    inner = _Tally(run_start=time.perf_counter())
    seen_total = 0
    for epoch in range(1, epochs + 1):
        seen, total = _train_epoch(refit, inner, epoch, None)
        seen_total += seen
        log.info("refit epoch %d/%d train loss %.4f", epoch, epochs, total / max(seen, 1))
    shutil.copyfile(paths["best"], selected)
    info = {"chips": len(records), "splits": counts, "epochs": epochs,
            "steps": inner.done_steps, "samples": seen_total,
            "selected_epoch": tally.best_epoch, "selected_steps": tally.best_steps,
            "selected": selected.name, "seconds": inner.elapsed()}
    save_checkpoint(paths["best"], refit.net, run.card, extra={"refit": info}, overwrite=True)
    log.info("refit model (all %d chips) -> %s; the validation-selected model is %s",
             len(records), paths["best"], selected)
    return dataclasses.replace(result, refit=info, selected_path=selected)
