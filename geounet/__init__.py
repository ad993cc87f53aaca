"""geounet: find roads and buildings in satellite scenes with a seamless, bounded-memory U-Net.

The public API is imported lazily so ``import geounet`` (and ``geounet --help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from geounet._version import __version__

# public name -> module that defines it
_PUBLIC = {
    "synthesize_scene": "geounet.synth",
    "UNet": "geounet.model",
    "ModelCard": "geounet.model",
    "load_checkpoint": "geounet.model",
    "save_checkpoint": "geounet.model",
    "PredictOptions": "geounet.run.options",
    "VectorizeOptions": "geounet.vectorization",
    "BatchOptions": "geounet.batch.options",
    "predict": "geounet.run.pipeline",
    "segment": "geounet.run.pipeline",
    "vectorize": "geounet.vectorization",
    "make_chips": "geounet.training.chips",
    "train": "geounet.training.loop",
    "evaluate": "geounet.evaluation",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'geounet' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
