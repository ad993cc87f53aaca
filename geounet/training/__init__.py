"""Training: labelled chips, datasets and augmentation, losses, the training loop and metrics."""

from __future__ import annotations

from geounet.training.chips import ChipSummary, make_chips
from geounet.training.layout import Dataset, DatasetConfig, export_chips, open_dataset
from geounet.training.loop import TrainConfig, TrainResult, train
from geounet.training.metrics import ClassScores, ConfusionMatrix

__all__ = ["ChipSummary", "ClassScores", "ConfusionMatrix", "Dataset", "DatasetConfig",
           "TrainConfig", "TrainResult", "export_chips", "make_chips", "open_dataset", "train"]
