"""The training loop: TrainConfig, train(), resume, early stopping, checkpoints, log and plot."""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from geounet.config import LossType, LRSchedule, Monitor, Padding, Precision, choices
from geounet.errors import CheckpointError, DeviceError, InputError, OutputExistsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes a training run (CLI option names match the fields).

    Attributes
    ----------
    depth, base_channels, padding, batch_norm : U-Net architecture (batch norm on by default:
        in eval mode it is a per-channel affine map, so valid-padding tiling stays exact).
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
    border_weight : U-Net border term ``w0`` between touching buildings (0 = off; paper: 10).
    border_sigma : its ``sigma`` in pixels (paper: 5).
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
    precision : ``auto`` (fp16/bf16 autocast on CUDA, fp32 on CPU), ``fp32``, ``bf16``, ``fp16``.
    workers : DataLoader worker processes (None = 0 on CPU, 4 on CUDA).
    description : stored in the model card.
    """

    depth: int = 4
    base_channels: int = 16
    padding: Padding = "valid"
    batch_norm: bool = True
    epochs: int = 20
    batch_size: int = 8
    lr: float = 2e-3
    chip_size: int | None = None
    tile_size: int | None = None
    class_weights: tuple[float, ...] | None = None
    dice_weight: float = 1.0
    loss: LossType = "ce"
    border_weight: float = 0.0
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

    def __post_init__(self) -> None:
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
        if self.schedule not in choices(LRSchedule):
            raise InputError(f"schedule {self.schedule!r} is not one of {choices(LRSchedule)}.")
        if self.monitor not in choices(Monitor):
            raise InputError(f"monitor {self.monitor!r} is not one of {choices(Monitor)}.")
        if not 0.0 <= self.warmup < 1.0:
            raise InputError(f"warmup {self.warmup} must be a share of the run in [0, 1); "
                             "e.g. 0.1.")
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
        for name in ("chip_size", "tile_size", "workers"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < (0 if name ==
                                                                              "workers" else 1)):
                raise InputError(f"{name} {value!r} must be a positive whole number.")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (stored in checkpoints)."""
        out = dataclasses.asdict(self)
        if out["class_weights"] is not None:
            out["class_weights"] = list(out["class_weights"])
        return out


@dataclass(frozen=True)
class EpochRecord:
    """Scores of one epoch."""

    epoch: int
    lr: float
    train_loss: float
    val_loss: float
    iou: tuple[float, ...]
    f1: tuple[float, ...]
    mean_iou: float
    seconds: float
    chips_per_s: float

    def row(self, classes: Sequence[str]) -> dict[str, Any]:
        """A CSV row."""
        row = {"epoch": self.epoch, "lr": self.lr, "train_loss": self.train_loss,
               "val_loss": self.val_loss, "mean_iou": self.mean_iou}
        row.update({f"iou_{c}": v for c, v in zip(classes, self.iou)})
        row.update({f"f1_{c}": v for c, v in zip(classes, self.f1)})
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
    """What :func:`train` wrote and measured."""

    best_path: Path
    last_path: Path
    log_path: Path
    plot_path: Path | None
    best_epoch: int
    history: tuple[EpochRecord, ...]
    stopped_early: bool
    classes: tuple[str, ...] = field(default=())
    out_of_time: bool = False

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
        end = ("  (stopped early)" if self.stopped_early else "") + (
            "  (time budget spent)" if self.out_of_time else "")
        return (f"best epoch {rec.epoch}/{self.history[-1].epoch}: " + ", ".join(parts)
                + f" -> {self.best_path}{end}")


def output_paths(out: str | os.PathLike[str]) -> dict[str, Path]:
    """Files written next to the best checkpoint ``out`` (``model.pt``): ``model.last.pt``,
    ``model.log.csv``, ``model.curves.png``."""
    out = Path(out)
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return {"best": out, "last": out.with_name(f"{stem}.last.pt"),
            "log": out.with_name(f"{stem}.log.csv"), "plot": out.with_name(f"{stem}.curves.png")}


def _autocast_dtype(precision: str, device: Any) -> Any:
    """Autocast dtype of a training step (None = fp32).

    Unlike inference (:func:`geounet.inference.resolve_precision`), ``auto`` stays fp32 on
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


def _write_log(path: Path, history: Sequence[EpochRecord], classes: Sequence[str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        rows = [rec.row(classes) for rec in history]
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _write_plot(path: Path, history: Sequence[EpochRecord], classes: Sequence[str],
                best_epoch: int = 0) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [r.epoch for r in history]
    fig = Figure(figsize=(9, 3.5))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    left.plot(epochs, [r.train_loss for r in history], label="train")
    left.plot(epochs, [r.val_loss for r in history], label="validation")
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    left.legend()
    for i, name in enumerate(classes):
        if i > 0:
            right.plot(epochs, [r.iou[i] for r in history], label=f"IoU {name}")
    right.plot(epochs, [r.mean_iou for r in history], "k--", label="mean IoU")
    if best_epoch:
        right.axvline(best_epoch, color="grey", lw=0.8, ls=":", label=f"best ({best_epoch})")
    right.set_xlabel("epoch")
    right.set_ylabel("validation IoU")
    right.set_ylim(0, 1)
    right.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=80)
    os.replace(tmp, path)


def _rng_state() -> dict[str, Any]:
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

    Returns
    -------
    TrainResult

    Examples
    --------
    >>> train("chips", "model.pt", config=TrainConfig(depth=2, base_channels=8, epochs=5))  # doctest: +SKIP
    """
    import torch

    from geounet.inference import resolve_device
    from geounet.model import ModelCard, UNet, UNetConfig, read_checkpoint, save_checkpoint
    from geounet.training.dataset import ChipDataset, compute_stats, warn_if_unbalanced
    from geounet.training.layout import DatasetConfig, open_dataset
    from geounet.training.losses import segmentation_loss
    from geounet.training.metrics import ConfusionMatrix
    from geounet.training.schedule import lr_factor, run_progress

    config = config or TrainConfig()
    paths = output_paths(out)
    if paths["best"].exists() and not (overwrite or resume is not None):
        raise OutputExistsError(
            f"checkpoint {str(paths['best'])!r} exists; choose another --out, pass --overwrite, "
            "or --resume its .last.pt."
        )
    state: dict[str, Any] | None = None
    if resume is not None:
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
    found = open_dataset(chips_dir, dataset, val_fraction=config.val_fraction, seed=config.seed)
    classes = card.classes if resume is not None else found.classes
    records = list(found.records)
    stats = compute_stats(records, len(classes))
    warn_if_unbalanced(stats, classes)
    if resume is None:
        arch = UNetConfig(in_channels=stats.count, num_classes=len(classes), depth=config.depth,
                          base_channels=config.base_channels, padding=config.padding,
                          batch_norm=config.batch_norm)
        card = ModelCard(
            architecture=arch, bands=tuple(range(1, stats.count + 1)), mean=stats.mean,
            std=stats.std, classes=classes, pixel_size=stats.pixel_size, dtype=stats.dtype,
            value_range=stats.value_range,
            description=config.description or f"trained on chips {Path(chips_dir).name}",
        )
    else:
        arch = card.architecture
        if card.architecture.in_channels != stats.count:
            raise CheckpointError(
                f"checkpoint {str(resume)!r} reads {arch.in_channels} bands but the chips have "
                f"{stats.count}; resume with the chips it was trained on."
            )
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
    model = UNet(arch)
    if state is not None:
        model.load_state_dict(payload["state_dict"])
    model.to(device)
    if device.type == "cpu":
        model.to(memory_format=torch.channels_last)
        log.info("training in %s on CPU (threads: %d)", "fp32" if amp_dtype is None
                 else str(amp_dtype).replace("torch.", ""), torch.get_num_threads())
    border_class = classes.index("buildings") if "buildings" in classes else None
    common = dict(mean=card.mean, std=card.std, num_classes=len(classes),
                  class_weights=config.class_weights, border_weight=config.border_weight,
                  border_sigma=config.border_sigma, border_class=border_class,
                  seed=config.seed)
    train_set = ChipDataset([r for r in records if r.split == "train"], spec, train=True,
                            elastic=config.elastic, brightness=config.brightness,
                            contrast=config.contrast, scale=config.scale, gamma=config.gamma,
                            hue=config.hue, **common)
    val_set = ChipDataset([r for r in records if r.split == "val"], spec, train=False, **common)
    if len(val_set) == 0:
        log.warning("no validation chips: early stopping and the best checkpoint follow the "
                    "training loss")
    workers = config.workers if config.workers is not None else (4 if device.type == "cuda"
                                                                 else 0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max" if config.monitor == "iou" else "min", factor=0.5,
        patience=max(1, (config.patience or 10) // 2))
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    average = WeightAverage(model, config.ema) if config.ema > 0 else None
    history: list[EpochRecord] = []
    best, bad_epochs, start = -math.inf, 0, 1
    done_steps, spent = 0, 0.0  # optimizer steps and training seconds before this process
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if state.get("live") is not None:
            model.load_state_dict(state["live"])  # the checkpoint's weights are the average
        if average is not None:
            average.load(payload["state_dict"], int(state.get("ema_updates", 0)))
        history = [EpochRecord(**{**h, "iou": tuple(h["iou"]), "f1": tuple(h["f1"])})
                   for h in state.get("history", [])]
        best, bad_epochs = float(state["best"]), int(state["bad_epochs"])
        if state.get("monitor", "loss") != config.monitor:
            best = -math.inf  # a score on another scale: restart the comparison
        start = int(state["epoch"]) + 1
        done_steps = int(state.get("steps", 0))
        spent = float(state.get("seconds", 0.0))
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        log.info("resuming from epoch %d of %s", start - 1, resume)
    pin = device.type == "cuda"

    def loader(dataset: Any, shuffle: bool, epoch: int) -> Any:
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        return torch.utils.data.DataLoader(
            dataset, batch_size=config.batch_size, shuffle=shuffle, num_workers=workers,
            pin_memory=pin, generator=generator, drop_last=False)

    def forward(net: Any, images: Any) -> Any:
        if device.type == "cpu":
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                            enabled=amp_dtype is not None):
            return net(images)

    def score(value: float, loss: float) -> float:
        """Higher is better; nan (no validation pixel of any foreground class) ranks last."""
        value = value if config.monitor == "iou" else -loss
        return value if math.isfinite(value) else -math.inf

    best_epoch = int(state.get("best_epoch", 0)) if state else 0
    paths["best"].parent.mkdir(parents=True, exist_ok=True)  # only once the inputs are checked
    stopped = out_of_time = False
    steps = math.ceil(len(train_set) / config.batch_size)
    total_steps = steps * config.epochs
    budget = config.max_minutes * 60.0 if config.max_minutes else None
    run_start = time.perf_counter()
    val_estimate = 0.0  # seconds of the last validation pass
    for epoch in range(start, config.epochs + 1):
        started = time.perf_counter()
        model.train()
        train_set.set_epoch(epoch)
        total, seen = 0.0, 0
        for step, (images, target, weights) in enumerate(loader(train_set, True, epoch), 1):
            images = images.to(device, non_blocking=pin)
            target = target.to(device, non_blocking=pin)
            weights = weights.to(device, non_blocking=pin)
            elapsed = spent + time.perf_counter() - run_start
            usable = budget - val_estimate if budget else None
            if config.schedule != "plateau":
                progress_now = run_progress(done_steps, total_steps, elapsed,
                                            max(usable, 1.0) if usable else None)
                factor = lr_factor(progress_now, schedule=config.schedule,
                                   warmup=config.warmup)
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * factor
            optimizer.zero_grad(set_to_none=True)
            loss = segmentation_loss(forward(model, images), target, weights,
                                     dice_weight=config.dice_weight, loss=config.loss,
                                     dice_foreground=config.dice_foreground)
            if not torch.isfinite(loss):
                raise InputError(
                    f"training loss became {loss.item()} at epoch {epoch}; lower --lr "
                    f"(now {config.lr}) or use --precision fp32."
                )
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            done_steps += 1
            if average is not None:
                average.update(model)
            total += loss.item() * images.shape[0]
            seen += images.shape[0]
            if progress is not None:
                progress(TrainProgress(epoch, config.epochs, step, steps, loss.item()))
            if budget and spent + time.perf_counter() - run_start + val_estimate >= budget:
                out_of_time = True
                break
        train_seconds = time.perf_counter() - started
        train_loss = total / max(seen, 1)
        net = average.model if average is not None else model
        net.eval()
        cm = ConfusionMatrix(classes)
        val_total, val_seen = 0.0, 0
        val_started = time.perf_counter()
        with torch.no_grad():
            for images, target, weights in loader(val_set, False, epoch):
                images, target, weights = images.to(device), target.to(device), weights.to(device)
                logits = forward(net, images)
                loss = segmentation_loss(logits, target, weights,
                                         dice_weight=config.dice_weight, loss=config.loss,
                                         dice_foreground=config.dice_foreground)
                val_total += loss.item() * images.shape[0]
                val_seen += images.shape[0]
                cm.update(logits.argmax(1).to(torch.uint8).cpu().numpy(),
                          target.clamp(max=255).to(torch.uint8).cpu().numpy())
        val_estimate = time.perf_counter() - val_started
        val_loss = val_total / val_seen if val_seen else float("nan")
        scores = cm.scores()
        if val_seen:
            current = score(cm.mean_iou(), val_loss)
        else:
            current = -train_loss
        if config.schedule == "plateau":  # mode "min" on the loss, "max" on the IoU
            scheduler.step(current if config.monitor == "iou" else -current)
        record = EpochRecord(
            epoch=epoch, lr=optimizer.param_groups[0]["lr"], train_loss=train_loss,
            val_loss=val_loss, iou=tuple(s.iou for s in scores), f1=tuple(s.f1 for s in scores),
            mean_iou=cm.mean_iou(), seconds=time.perf_counter() - started,
            chips_per_s=seen / train_seconds if train_seconds > 0 else float("nan"))
        history.append(record)
        improved = current > best or best_epoch == 0
        if improved:
            best, bad_epochs, best_epoch = current, 0, epoch
        else:
            bad_epochs += 1
        stopped = config.patience is not None and bad_epochs >= config.patience
        train_state = {
            "epoch": epoch, "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "history": [dataclasses.asdict(h) | {"iou": list(h.iou), "f1": list(h.f1)}
                        for h in history],
            "best": best, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
            "monitor": config.monitor, "steps": done_steps,
            "seconds": spent + time.perf_counter() - run_start,
            "live": model.state_dict() if average is not None else None,
            "ema_updates": average.updates if average is not None else 0,
            "rng": _rng_state(), "config": config.to_dict(), "chips_dir": str(chips_dir),
        }
        extra = {"train_state": train_state}
        save_checkpoint(paths["last"], net, card, extra=extra, overwrite=True)
        if improved:
            save_checkpoint(paths["best"], net, card, extra=extra, overwrite=True)
        _write_log(paths["log"], history, classes)
        try:
            _write_plot(paths["plot"], history, classes, best_epoch)
        except Exception as exc:  # a plot must never lose a training run
            log.warning("could not draw the training curves: %s", exc)
        log.info("epoch %d/%d train loss %.4f val loss %.4f mean IoU %.3f (%.1f chips/s)",
                 epoch, config.epochs, train_loss, val_loss, record.mean_iou,
                 record.chips_per_s)
        if progress is not None:
            progress(TrainProgress(epoch, config.epochs, steps, steps, train_loss, record))
        if stopped:
            log.info("early stop: no improvement for %d epochs", bad_epochs)
            break
        if out_of_time:
            log.info("time budget of %s minutes spent at epoch %d; the schedule has annealed",
                     config.max_minutes, epoch)
            break
    if not history:
        raise InputError(
            f"nothing to train: the checkpoint is at epoch {start - 1} and epochs is "
            f"{config.epochs}; raise --epochs to continue."
        )
    result = TrainResult(paths["best"], paths["last"], paths["log"],
                         paths["plot"] if paths["plot"].exists() else None, best_epoch,
                         tuple(history), stopped, tuple(classes), out_of_time)
    log.info("%s", result.summary())
    return result


class WeightAverage:
    """Exponential moving average of a model's weights and buffers (BatchNorm statistics).

    After ``n`` updates the decay is ``min(decay, (1 + n) / (10 + n))``, so the average
    follows the early, fast-moving weights closely and smooths the late ones: validated and
    saved instead of the raw weights, it keeps the late validation curve steady.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Linear(2, 1)
    >>> avg = WeightAverage(net, 0.9)
    >>> avg.update(net); avg.updates
    1
    """

    def __init__(self, model: Any, decay: float) -> None:
        import copy

        self.decay = float(decay)
        self.model = copy.deepcopy(model)
        self.model.requires_grad_(False)
        self.updates = 0

    def load(self, state_dict: Any, updates: int) -> None:
        """Restore an average saved in a checkpoint after ``updates`` updates."""
        self.model.load_state_dict(state_dict)
        self.updates = updates

    def update(self, model: Any) -> None:
        """Move the average towards ``model``'s current weights and buffers."""
        import torch

        self.updates += 1
        decay = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        with torch.no_grad():
            ours = self.model.state_dict()
            for name, value in model.state_dict().items():
                if value.dtype.is_floating_point:
                    ours[name].lerp_(value.detach(), 1.0 - decay)
                else:
                    ours[name].copy_(value)

