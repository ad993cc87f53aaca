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


from geounet.config import LossType, Padding, Precision, choices
from geounet.errors import CheckpointError, DeviceError, InputError, OutputExistsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes a training run (CLI option names match the fields).

    Attributes
    ----------
    depth, base_channels, padding, batch_norm : U-Net architecture.
    epochs : total epochs (a resumed run continues up to this number).
    batch_size : samples per step.
    lr : Adam learning rate (reduced x0.5 when the validation loss plateaus).
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
    brightness, contrast : jitter amplitudes (normalized units).
    patience : epochs without validation-loss improvement before stopping (None = never).
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
    batch_norm: bool = False
    epochs: int = 50
    batch_size: int = 8
    lr: float = 1e-3
    chip_size: int | None = None
    tile_size: int | None = None
    class_weights: tuple[float, ...] | None = None
    dice_weight: float = 1.0
    loss: LossType = "ce"
    border_weight: float = 0.0
    border_sigma: float = 5.0
    elastic: bool = False
    brightness: float = 0.1
    contrast: float = 0.1
    patience: int | None = 10
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    precision: Precision = "auto"
    workers: int | None = None
    description: str = ""

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


def _write_plot(path: Path, history: Sequence[EpochRecord], classes: Sequence[str]) -> None:
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
    right.set_xlabel("epoch")
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
    border_class = classes.index("buildings") if "buildings" in classes else None
    common = dict(mean=card.mean, std=card.std, num_classes=len(classes),
                  class_weights=config.class_weights, border_weight=config.border_weight,
                  border_sigma=config.border_sigma, border_class=border_class,
                  seed=config.seed)
    train_set = ChipDataset([r for r in records if r.split == "train"], spec, train=True,
                            elastic=config.elastic, brightness=config.brightness,
                            contrast=config.contrast, **common)
    val_set = ChipDataset([r for r in records if r.split == "val"], spec, train=False, **common)
    if len(val_set) == 0:
        log.warning("no validation chips: early stopping and the best checkpoint follow the "
                    "training loss")
    workers = config.workers if config.workers is not None else (4 if device.type == "cuda"
                                                                 else 0)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=0.5, patience=max(1, (config.patience or 10) // 2))
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    history: list[EpochRecord] = []
    best, bad_epochs, start = math.inf, 0, 1
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        history = [EpochRecord(**{**h, "iou": tuple(h["iou"]), "f1": tuple(h["f1"])})
                   for h in state.get("history", [])]
        best, bad_epochs = float(state["best"]), int(state["bad_epochs"])
        start = int(state["epoch"]) + 1
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

    def forward(images: Any) -> Any:
        if device.type == "cpu":
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                            enabled=amp_dtype is not None):
            return model(images)

    best_epoch = int(state.get("best_epoch", 0)) if state else 0
    paths["best"].parent.mkdir(parents=True, exist_ok=True)  # only once the inputs are checked
    stopped = False
    steps = math.ceil(len(train_set) / config.batch_size)
    for epoch in range(start, config.epochs + 1):
        started = time.perf_counter()
        model.train()
        train_set.set_epoch(epoch)
        total, seen = 0.0, 0
        for step, (images, target, weights) in enumerate(loader(train_set, True, epoch), 1):
            images = images.to(device, non_blocking=pin)
            target = target.to(device, non_blocking=pin)
            weights = weights.to(device, non_blocking=pin)
            optimizer.zero_grad(set_to_none=True)
            loss = segmentation_loss(forward(images), target, weights,
                                     dice_weight=config.dice_weight, loss=config.loss)
            if not torch.isfinite(loss):
                raise InputError(
                    f"training loss became {loss.item()} at epoch {epoch}; lower --lr "
                    f"(now {config.lr}) or use --precision fp32."
                )
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += loss.item() * images.shape[0]
            seen += images.shape[0]
            if progress is not None:
                progress(TrainProgress(epoch, config.epochs, step, steps, loss.item()))
        train_seconds = time.perf_counter() - started
        train_loss = total / max(seen, 1)
        model.eval()
        cm = ConfusionMatrix(classes)
        val_total, val_seen = 0.0, 0
        with torch.no_grad():
            for images, target, weights in loader(val_set, False, epoch):
                images, target, weights = images.to(device), target.to(device), weights.to(device)
                logits = forward(images)
                loss = segmentation_loss(logits, target, weights,
                                         dice_weight=config.dice_weight, loss=config.loss)
                val_total += loss.item() * images.shape[0]
                val_seen += images.shape[0]
                cm.update(logits.argmax(1).to(torch.uint8).cpu().numpy(),
                          target.clamp(max=255).to(torch.uint8).cpu().numpy())
        val_loss = val_total / val_seen if val_seen else float("nan")
        scores = cm.scores()
        monitor = val_loss if val_seen else train_loss
        scheduler.step(monitor)
        record = EpochRecord(
            epoch=epoch, lr=optimizer.param_groups[0]["lr"], train_loss=train_loss,
            val_loss=val_loss, iou=tuple(s.iou for s in scores), f1=tuple(s.f1 for s in scores),
            mean_iou=cm.mean_iou(), seconds=time.perf_counter() - started,
            chips_per_s=seen / train_seconds if train_seconds > 0 else float("nan"))
        history.append(record)
        improved = monitor < best
        if improved:
            best, bad_epochs, best_epoch = monitor, 0, epoch
        else:
            bad_epochs += 1
        stopped = config.patience is not None and bad_epochs >= config.patience
        train_state = {
            "epoch": epoch, "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "history": [dataclasses.asdict(h) | {"iou": list(h.iou), "f1": list(h.f1)}
                        for h in history],
            "best": best, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
            "rng": _rng_state(), "config": config.to_dict(), "chips_dir": str(chips_dir),
        }
        extra = {"train_state": train_state}
        save_checkpoint(paths["last"], model, card, extra=extra, overwrite=True)
        if improved:
            save_checkpoint(paths["best"], model, card, extra=extra, overwrite=True)
        _write_log(paths["log"], history, classes)
        try:
            _write_plot(paths["plot"], history, classes)
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
    if not history:
        raise InputError(
            f"nothing to train: the checkpoint is at epoch {start - 1} and epochs is "
            f"{config.epochs}; raise --epochs to continue."
        )
    return TrainResult(paths["best"], paths["last"], paths["log"],
                       paths["plot"] if paths["plot"].exists() else None, best_epoch,
                       tuple(history), stopped, tuple(classes))
