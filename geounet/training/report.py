"""The run's report files: the per-epoch CSV log and the PNG training curves."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from geounet.training.config import EpochRecord


def write_log(path: Path, history: Sequence[EpochRecord], classes: Sequence[str]) -> None:
    """Write the per-epoch CSV log (atomically: a temporary file, then a rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        rows = [rec.row(classes) for rec in history]
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def write_plot(path: Path, history: Sequence[EpochRecord], classes: Sequence[str],
               best_epoch: int = 0) -> None:
    """Draw the loss and validation IoU (and building object F1) curves to a PNG (best epoch
    marked), atomically."""
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
    if "buildings" in classes:
        right.plot(epochs, [r.object_f1 for r in history], ":", label="object F1 buildings")
    if best_epoch:
        right.axvline(best_epoch, color="grey", lw=0.8, ls=":", label=f"best ({best_epoch})")
    right.set_xlabel("epoch")
    right.set_ylabel("validation IoU / object F1" if "buildings" in classes
                    else "validation IoU")
    right.set_ylim(0, 1)
    right.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=80)
    os.replace(tmp, path)
