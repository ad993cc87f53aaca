"""Where vectorization reads predictions: the shared reader of :mod:`geounet.output.prediction`."""

from __future__ import annotations

from geounet.config import DEFAULT_CLASSES, NODATA_CLASS
from geounet.output.prediction import PredictionReader

__all__ = ["DEFAULT_CLASSES", "NODATA_CLASS", "PredictionReader"]
