"""``geounet train``: train the U-Net on labelled chips."""

from __future__ import annotations

import sys
from typing import Any

import click

from geounet.cli import options
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


def _weights(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a comma-separated list of numbers; use e.g. 1,2,2.", param=param
        ) from None


def _widths(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a comma-separated list of whole numbers; use e.g. "
            "256,128,64,32,16.", param=param
        ) from None


@click.command()
@click.argument("chips_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), required=True,
              help="Best checkpoint (.pt); *.last.pt, *.log.csv and *.curves.png go next to it.")
@click.option("--resume", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Continue from a checkpoint's epoch and optimizer state (usually *.last.pt).")
@click.option("--init", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Fine-tune a geounet checkpoint: a new run from its weights, keeping its "
                   "architecture, classes and normalization (not its epoch or optimizer).")
@click.option("--architecture", type=click.Choice(choices(ArchitectureName)), default="unet",
              show_default=True,
              help="unet (the 2015 U-Net) or resnet-unet (U-Net decoder over a ResNet encoder, "
                   "same padding, tiles multiples of 32).")
@click.option("--encoder", type=click.Choice(choices(Encoder)), default="resnet34",
              show_default=True, help="ResNet encoder of --architecture resnet-unet.")
@click.option("--encoder-weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Local file of pretrained ResNet weights (torchvision/timm state dict) for "
                   "the resnet-unet encoder; nothing is downloaded.")
@click.option("--decoder-channels", callback=_widths, default=None,
              help="resnet-unet decoder widths, coarsest first (default 256,128,64,32,16).")
@click.option("--freeze-encoder-epochs", type=click.IntRange(0), default=0, show_default=True,
              help="Train the decoder only for the first N epochs (resnet-unet warm-up).")
@click.option("--depth", type=int, default=4, show_default=True, callback=options._positive)
@click.option("--base-channels", type=int, default=16, show_default=True,
              callback=options._positive, help="Channels at level 0 (doubled per level).")
@click.option("--padding", type=click.Choice(choices(Padding)), default="valid",
              show_default=True)
@click.option("--batch-norm/--no-batch-norm", default=True, show_default=True)
@click.option("--epochs", type=int, default=90, show_default=True, callback=options._positive)
@click.option("--batch-size", type=int, default=8, show_default=True,
              callback=options._positive, help="Chips per training step.")
@click.option("--lr", type=click.FloatRange(0.0, min_open=True), default=2e-3,
              show_default=True, help="Peak AdamW learning rate.")
@click.option("--weight-decay", type=click.FloatRange(0.0), default=1e-4, show_default=True,
              help="AdamW weight decay (0 = Adam).")
@click.option("--schedule", type=click.Choice(choices(LRSchedule)), default="one-cycle",
              show_default=True, help="Learning-rate schedule (warm-up and annealing).")
@click.option("--ema", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.98,
              show_default=True, help="Decay of the weight average validated and saved (0 = off).")
@click.option("--max-minutes", type=click.FloatRange(0.0, min_open=True), default=27.0,
              show_default=True,
              help="Wall-time budget: the schedule anneals by it and training ends in time.")
@click.option("--no-time-limit", "no_time_limit", is_flag=True, default=False,
              help="Train all epochs whatever the time (no --max-minutes).")
@click.option("--pixel-size", type=click.FloatRange(0.0, min_open=True), default=None,
              help="Training resolution in metres (default: the most common of the chips "
                   "within 10%, ties the finest); other chips are resampled to it.")
@click.option("--refit/--no-refit", default=False, show_default=True,
              help="After the run, retrain on every chip (train, val, buffer) for the "
                   "selected number of steps and save that as --out.")
@click.option("--chip-size", type=int, default=None, callback=options._positive,
              help="Labelled window per sample (default: the largest chip).")
@options.tile_size
@options.dataset_options
@click.option("--class-weights", callback=_weights, default=None,
              help="Cross-entropy weight per class, e.g. 1,2,2.")
@click.option("--loss", type=click.Choice(choices(LossType)), default="ce", show_default=True,
              help="Pixel loss: ce (softmax cross-entropy) or bce (per-class sigmoid BCE).")
@click.option("--dice-weight", type=click.FloatRange(0.0), default=1.0, show_default=True,
              help="Weight of the soft-Dice term added to the pixel loss (0 = off).")
@click.option("--border-weight", type=click.FloatRange(0.0), default=10.0, show_default=True,
              help="U-Net border weight w0 between touching buildings (paper: 10; 0 = off).")
@click.option("--border-sigma", type=click.FloatRange(0.0, min_open=True), default=5.0,
              show_default=True, help="Border weight sigma in pixels.")
@click.option("--contact-class/--no-contact-class", default=False, show_default=True,
              help="Train building boundary and contact classes (ramp's multimasks); "
                   "prediction folds them back, contact pixels separating touching buildings.")
@click.option("--elastic", is_flag=True, default=False, help="Elastic deformation augmentation.")
@click.option("--select-from", type=click.FloatRange(0.0, 1.0), default=0.7, show_default=True,
              help="Share of the run from which epochs compete for the best checkpoint "
                   "(one-cycle/cosine, no --patience); before it the checkpoint follows the "
                   "latest epoch. 0 = every epoch.")
@click.option("--monitor", type=click.Choice(choices(Monitor)), default="iou",
              show_default=True,
              help="Best checkpoint by validation foreground IoU (iou) or validation loss.")
@click.option("--patience", type=int, default=None, callback=options._positive,
              help="Stop after this many epochs without validation improvement (default: never).")
@click.option("--val-fraction", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.2,
              show_default=True, help="Held-out share when the chips have no split.")
@options.seed
@options.device
@click.option("--precision", type=click.Choice(choices(Precision)), default="auto",
              show_default=True,
              help="auto: bf16 autocast on a CPU with native bf16 (AVX512_BF16/AMX), else fp32; "
                   "mixed precision on CUDA. bf16 on a CPU without native bf16 trains fp32.")
@click.option("--workers", type=click.IntRange(0), default=None,
              help="DataLoader worker processes, persistent (default: 1 on CPU when a core is "
                   "free of torch's threads, else 0; 4 on CUDA).")
@click.option("--channels-last/--no-channels-last", default=None,
              help="channels_last model and batches (default: on for CPU, on CUDA under mixed "
                   "precision).")
@click.option("--cache-chips/--no-cache-chips", default=None,
              help="Keep decoded chips in memory (default: when they fit in 2 GiB and a "
                   "quarter of the free memory).")
@options.overwrite
@click.pass_context
def train(ctx: click.Context, chips_dir: str, out: str, resume: str | None, init: str | None,
          overwrite: bool, mask_pattern: str | None, mask_values: tuple[int, ...] | None,
          classes: tuple[str, ...] | None, labels: str | None, line_width: float | None,
          split_block: int, **kwargs: Any) -> None:
    """Train a U-Net (or with --init fine-tune a checkpoint) on CHIPS_DIR: images with masks or vector labels in any common layout
    (images/ + masks/ as geounet chips writes, NAME.tif + NAME.mask.tif, img/ + gt/, per-chip
    GeoJSON, ...); the detected pairing rule, mask values and classes are logged."""
    from geounet.training import TrainConfig
    from geounet.training.layout import DatasetConfig
    from geounet.training.loop import train as run_train

    if kwargs.pop("no_time_limit"):
        kwargs["max_minutes"] = None
    config = TrainConfig(**kwargs)
    dataset = DatasetConfig(mask_pattern=mask_pattern, mask_values=mask_values, classes=classes,
                            labels=labels, line_width=line_width, split_block=split_block)
    quiet = bool((ctx.find_root().obj or {}).get("quiet", False))
    draw = sys.stderr.isatty() and not quiet

    def progress(event: Any) -> None:
        if event.record is not None:
            r = event.record
            if draw:
                click.echo("\r" + " " * 70 + "\r", nl=False, err=True)
            if not quiet:
                click.echo(f"epoch {r.epoch}/{event.epochs}  train loss {r.train_loss:.4f}  "
                           f"val loss {r.val_loss:.4f}  mean IoU {r.mean_iou:.3f}  "
                           + (f"object F1 buildings {r.object_f1:.3f}  "
                              if r.object_f1 == r.object_f1 else "")
                           + f"{r.chips_per_s:.1f} chips/s")
        elif draw:
            filled = int(30 * event.step / max(event.steps, 1))
            click.echo(f"\repoch {event.epoch} [{'#' * filled}{'-' * (30 - filled)}] "
                       f"{event.step}/{event.steps} loss {event.loss:.4f}", nl=False, err=True)

    result = run_train(chips_dir, out, config=config, resume=resume, overwrite=overwrite,
                       progress=progress, dataset=dataset, init=init)
    click.echo(result.summary() + f"  classes {','.join(result.classes)}")
