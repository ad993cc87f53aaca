"""Set up a training run: open the chips and build the card, model, datasets and optimizer.

:func:`prepare_run` turns the settings, the chips and the :class:`~geounet.training.start.Start`
into a :class:`TrainingRun`, the fixed parts of the run (nothing in it is replaced while
training; the weights and optimizer state change in place). The order of the steps is the
order of the random draws: the model is built right after ``torch.manual_seed(config.seed)``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geounet.errors import CheckpointError, InputError
from geounet.training.average import WeightAverage
from geounet.training.config import TrainConfig
from geounet.training.start import Start

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch.amp import GradScaler
    from torch.optim import Optimizer
    from torch.optim.lr_scheduler import ReduceLROnPlateau
    from torch.utils.data import DataLoader

    from geounet.model import ModelCard
    from geounet.model.registry import ArchitectureConfig
    from geounet.training.dataset import ChipDataset, ChipStats, SampleSpec
    from geounet.training.record import ChipRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingRun:
    """The fixed parts of one training run: settings, card, model, data, optimizer.

    Attributes
    ----------
    initial_state : the weights the run started from (set with ``refit``, which retrains
        from them).
    all_records : the train, val and buffer chips (what ``refit`` trains on).
    channels_last : model and batches in channels_last memory format
        (:mod:`geounet.training.speed`).
    loaders : the DataLoader of each dataset, made once per run (:meth:`loader`).
    """

    config: TrainConfig
    classes: tuple[str, ...]
    card: ModelCard
    model: torch.nn.Module
    device: torch.device
    amp_dtype: torch.dtype | None
    train_set: ChipDataset
    val_set: ChipDataset
    workers: int
    optimizer: Optimizer
    scheduler: ReduceLROnPlateau
    scaler: GradScaler
    average: WeightAverage | None
    all_records: tuple[ChipRecord, ...] = ()
    initial_state: dict[str, torch.Tensor] | None = None
    channels_last: bool = True
    loaders: dict[int, Any] = field(default_factory=dict)

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
    def net(self) -> torch.nn.Module:
        """The network validated and saved: the weight average when on, else the model."""
        return self.average.model if self.average is not None else self.model

    def loader(self, dataset: ChipDataset, shuffle: bool, epoch: int) -> DataLoader:
        """The run's DataLoader over ``dataset`` (made on first use, its workers persistent),
        set to ``epoch``: the shuffling is seeded by the seed and the epoch
        (:class:`geounet.training.loading.EpochSampler`)."""
        from geounet.training.loading import make_loader

        loader = self.loaders.get(id(dataset))
        if loader is None:
            loader = make_loader(dataset, self.config.batch_size, shuffle, self.config.seed,
                                 self.workers, self.pin)
            self.loaders[id(dataset)] = loader
        loader.sampler.set_epoch(epoch)
        return loader

    def close(self) -> None:
        """Stop the DataLoader workers (the loaders are dropped)."""
        self.loaders.clear()

    def forward(self, net: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Logits of ``net`` on ``images`` under the run's autocast and memory format."""
        import torch

        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            return net(images)

    def loss(self, logits: torch.Tensor, target: torch.Tensor,
             weights: torch.Tensor) -> torch.Tensor:
        """The configured segmentation loss."""
        from geounet.training.losses import segmentation_loss

        return segmentation_loss(logits, target, weights, dice_weight=self.config.dice_weight,
                                 loss=self.config.loss,
                                 dice_foreground=self.config.dice_foreground)

    def score(self, value: float, loss: float) -> float:
        """Higher is better; nan (no validation pixel of any foreground class) ranks last."""
        value = value if self.config.monitor == "iou" else -loss
        return value if math.isfinite(value) else -math.inf


def sample_spec(arch: ArchitectureConfig, chip_size: int, tile_size: int | None) -> SampleSpec:
    """Model input/output sizes for training on ``chip_size`` windows."""
    from geounet.training.dataset import SampleSpec

    if tile_size is None:
        tile_size = arch.input_size_for_output(chip_size)
    out = arch.output_size(tile_size)
    return SampleSpec(tile_size, out, (tile_size - out) // 2)


def prepare_run(chips_dir: str | os.PathLike[str], config: TrainConfig,
                start: Start) -> TrainingRun:
    """Open the chips and build the card, model, datasets, optimizer and schedulers.

    ``start.source`` is the checkpoint continued from, or with ``start.fine_tune`` the one
    whose weights start a new run (``--init``)."""
    import torch

    from geounet.engine.runner import resolve_device
    from geounet.training.dataset import compute_stats, warn_if_unbalanced
    from geounet.training.layout import open_dataset
    from geounet.training.speed import plan_speed

    found = open_dataset(chips_dir, start.dataset, val_fraction=config.val_fraction,
                         seed=config.seed)
    resumed = start.card if start.source is not None else None
    classes = resumed.classes if resumed is not None else found.classes
    records = list(found.records)
    stats = compute_stats(records, len(classes), pixel_size=(
        resumed.pixel_size if resumed is not None else config.pixel_size))
    log.info("%s", stats.resolution.describe())
    warn_if_unbalanced(stats, classes)
    arch, card = _card(chips_dir, config, start, classes, stats)
    if config.class_weights is not None and len(config.class_weights) != len(classes):
        raise InputError(
            f"{len(config.class_weights)} class weights {config.class_weights} for "
            f"{len(classes)} classes {classes}; give one weight per class."
        )
    spec = sample_spec(arch, config.chip_size or stats.max_size, config.tile_size)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = _model(config, arch, start)
    initial = _initial_state(config, arch, start, model)
    model.to(device)
    train_set, val_set = make_datasets(config, card, classes, records, spec)
    speed = plan_speed(config, device.type, train_set.reader.decoded_bytes()
                       + val_set.reader.decoded_bytes())
    train_set.reader.cache = val_set.reader.cache = bool(speed.cache_chips.value)
    if speed.channels_last.value:
        model.to(memory_format=torch.channels_last)
    log.info("training speed on %s (%d torch threads): %s", device, torch.get_num_threads(),
             speed.describe())
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(str(speed.precision.value))
    optimizer, scheduler, scaler, average = make_optimizer(config, model, amp_dtype)
    return TrainingRun(config, classes, card, model, device, amp_dtype, train_set, val_set,
                       int(speed.workers.value), optimizer, scheduler, scaler, average,
                       tuple(records) + tuple(found.buffer), initial,
                       bool(speed.channels_last.value))


def _initial_state(config: TrainConfig, arch: ArchitectureConfig, start: Start,
                   model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The weights a refit starts from: where this run started (seeded fresh weights, the
    pretrained encoder or the ``--init`` checkpoint). A resumed run's start is unknown: fresh
    weights, plus the encoder file when one is configured. None without ``refit``."""
    if not config.refit:
        return None
    if start.source is None or start.fine_tune:
        return {k: v.detach().clone() for k, v in model.state_dict().items()}
    return _model(config, arch, Start()).state_dict()


def _architecture(config: TrainConfig, bands: int, num_classes: int) -> ArchitectureConfig:
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


def _model(config: TrainConfig, arch: ArchitectureConfig, start: Start) -> torch.nn.Module:
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
    if start.payload is not None:
        if start.fine_tune and config.encoder_weights is not None:
            raise InputError(
                f"encoder weights {config.encoder_weights!r} and --init {str(start.source)!r} "
                "both give the encoder's weights; fine-tuning starts from the checkpoint: "
                "leave out --encoder-weights."
            )
        model.load_state_dict(start.payload["state_dict"])
        if start.fine_tune:
            log.info("fine-tuning %s from %s (its card's bands, classes and normalization)",
                     arch.label, start.source)
    elif config.encoder_weights is not None:
        keys = load_encoder_weights(model, config.encoder_weights)
        log.info("encoder weights: %d tensors from %s", len(keys), config.encoder_weights)
    return model


def _card(chips_dir: str | os.PathLike[str], config: TrainConfig, start: Start,
          classes: tuple[str, ...], stats: ChipStats) -> tuple[ArchitectureConfig, ModelCard]:
    """The architecture and model card: new from the chips, or the resumed (fine-tuned)
    checkpoint's, checked against the chips."""
    from geounet.config import PERCENTILE_LEVELS
    from geounet.model import ModelCard

    card, source = start.card, start.source
    if source is None or card is None:
        extra = _extra_outputs(config, classes)
        arch = _architecture(config, stats.count, len(classes) + len(extra))
        card = ModelCard(
            architecture=arch, bands=tuple(range(1, stats.count + 1)), mean=stats.mean,
            std=stats.std, classes=classes, pixel_size=stats.pixel_size, dtype=stats.dtype,
            value_range=stats.value_range, percentiles=stats.percentiles,
            percentile_levels=PERCENTILE_LEVELS if stats.percentiles else (),
            description=config.description or f"trained on chips {Path(chips_dir).name}",
            extra_outputs=extra,
        )
        return arch, card
    if config.contact_class and not card.extra_outputs:
        raise CheckpointError(
            f"contact_class (--contact-class) asked for, but checkpoint {str(source)!r} has "
            "no boundary/contact outputs; train a new model with --contact-class, or leave "
            "the option out to continue with the checkpoint's classes.")
    arch = card.architecture
    fix = ("fine-tune on chips of its band count and data type, or train a new model "
           "without --init" if start.fine_tune else "resume with the chips it was trained on")
    if card.architecture.in_channels != stats.count:
        raise CheckpointError(
            f"checkpoint {str(source)!r} reads {arch.in_channels} bands but the chips have "
            f"{stats.count}; {fix}."
        )
    if start.fine_tune:
        if card.dtype != stats.dtype:
            raise CheckpointError(
                f"checkpoint {str(source)!r} was trained on {card.dtype} scenes but the "
                f"chips are {stats.dtype}; its normalization would not fit: {fix}."
            )
        card = dataclasses.replace(card, description=config.description or (
            f"fine-tuned from {Path(source).name} on chips {Path(chips_dir).name}"))
    return arch, card


def _extra_outputs(config: TrainConfig, classes: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    """The card's extra outputs of a new model: boundary and contact with ``contact_class``."""
    from geounet.training.contact import extra_outputs

    if not config.contact_class:
        return ()
    if "buildings" not in classes:
        raise InputError(
            f"contact_class (--contact-class) separates touching buildings, but the classes "
            f"{list(classes)} have no 'buildings'; name the building class 'buildings' "
            "(--classes) or leave the option out.")
    return extra_outputs(classes)


def make_datasets(config: TrainConfig, card: ModelCard, classes: tuple[str, ...],
                  records: Sequence[ChipRecord], spec: SampleSpec, *,
                  refit: bool = False, cache: bool = False) -> tuple[ChipDataset, ChipDataset]:
    """The training (augmented) and validation chip datasets (with the boundary/contact
    targets when the card has those outputs)."""
    from geounet.training.dataset import ChipDataset

    border_class = classes.index("buildings") if "buildings" in classes else None
    common = dict(mean=card.mean, std=card.std, num_classes=len(classes),
                  class_weights=config.class_weights, border_weight=config.border_weight,
                  border_sigma=config.border_sigma, border_class=border_class,
                  seed=config.seed, pixel_size=card.pixel_size, cache=cache,
                  contact=bool(card.extra_outputs))
    train_set = ChipDataset([r for r in records if r.split == "train"], spec, train=True,
                            elastic=config.elastic, brightness=config.brightness,
                            contrast=config.contrast, scale=config.scale, gamma=config.gamma,
                            hue=config.hue, **common)
    val_set = ChipDataset([r for r in records if r.split == "val"], spec, train=False, **common)
    if len(val_set) == 0 and not refit:
        log.warning("no validation chips: early stopping and the best checkpoint follow the "
                    "training loss")
    return train_set, val_set


def adamw(model: torch.nn.Module, lr: float, weight_decay: float) -> Optimizer:
    """AdamW over ``model``'s parameters, fused (one kernel for all tensors; torch >= 2.4,
    CPU or CUDA) where torch has it, else its multi-tensor (foreach) form: the same update,
    a quarter of the CPU time of the per-tensor loop on the default U-Net."""
    import torch

    try:
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay,
                                 fused=True)
    except (RuntimeError, TypeError, ValueError):  # pragma: no cover - torch < 2.4
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay,
                                 foreach=True)


def make_optimizer(config: TrainConfig, model: torch.nn.Module, amp_dtype: torch.dtype | None
                   ) -> tuple[Optimizer, ReduceLROnPlateau, GradScaler, WeightAverage | None]:
    """AdamW, the plateau scheduler, the gradient scaler and the weight average."""
    import torch

    optimizer = adamw(model, config.lr, config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max" if config.monitor == "iou" else "min", factor=0.5,
        patience=max(1, (config.patience or 10) // 2))
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    average = WeightAverage(model, config.ema) if config.ema > 0 else None
    return optimizer, scheduler, scaler, average
