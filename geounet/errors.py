"""All geounet exceptions: one root, each subclass also a fitting builtin.

Messages name the value, the rule and the fix, e.g. ``tile size 500 is not valid for a
depth-4 valid-padding U-Net (input sizes are 16k+12); use 492 or 508``. The CLI turns any
:class:`GeounetError` into one clean line and a non-zero exit code; code never branches on
message text, only on the class.
"""

from __future__ import annotations


class GeounetError(Exception):
    """Root of every error geounet raises on purpose."""


class InputError(GeounetError, ValueError):
    """A value given by the user breaks a rule (size, band index, option combination)."""


class TileSizeError(InputError):
    """A tile, chunk or chip size the model cannot use."""


class RunTooLargeError(InputError):
    """A planned run would compute more model pixels than its ceiling (``max_pixels``)."""


class SceneError(GeounetError, OSError):
    """A scene is missing, unreadable, corrupt or truncated."""


class GeoreferenceError(InputError):
    """A raster lacks the georeferencing a step needs (no CRS, no transform)."""


class IncompatibleSceneError(InputError):
    """A scene does not fit a model card (band count, dtype range, pixel size)."""


class CheckpointError(GeounetError, ValueError):
    """A file is not a geounet checkpoint, or is truncated or corrupt."""


class OutputExistsError(GeounetError, FileExistsError):
    """An output already exists and overwriting was not asked for."""


class UnsupportedFormatError(InputError):
    """An input or output format geounet cannot read or write."""


class LabelError(InputError):
    """Training labels or chips that do not fit (missing pairs, unknown classes, no overlap)."""


class DeviceError(GeounetError, RuntimeError):
    """A requested compute device is not available."""


class TransientError(GeounetError, OSError):
    """An I/O failure that may pass (a remote read, a network hiccup, a lost worker).

    Retried with backoff a bounded number of times before it ends a run; the run's completed
    chunks are kept for ``--resume``.
    """


class ClusterError(GeounetError, RuntimeError):
    """A Dask scheduler or its workers cannot run geounet (unreachable, versions differ)."""


class EngineError(DeviceError):
    """A requested inference engine (ONNX Runtime, OpenVINO) is not installed or cannot run."""


class PredictionKeptError(GeounetError, RuntimeError):
    """A step after prediction (vectorizing, writing the COG) failed; the finished prediction
    is kept under its resumable name (:attr:`store`) and ``resume=True`` (``--resume``)
    finishes the job without predicting again."""

    def __init__(self, message: str, store: str = "") -> None:
        super().__init__(message)
        self.store = store
