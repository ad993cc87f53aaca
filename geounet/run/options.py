"""What a prediction run computes, as one frozen, validated value: :class:`PredictOptions`.

Built once (by the caller, or the CLI from its flags) and passed through
:func:`geounet.predict`, :func:`geounet.segment`, :func:`geounet.batch.run_batch` and
:func:`geounet.run.planning.plan_prediction`; each also takes the fields as keyword
shorthands (``predict(scene, out, tta="d4")``, the rule in
:func:`geounet.errors.with_settings`). Every value is checked in ``__post_init__``, once, with
the project's error types and messages; what depends on the scene, the model or this machine
(bands against the model, the device, an installed engine) is checked by planning.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from geounet.config import (
    TTA,
    Engine,
    InferencePrecision,
    OutputGrid,
    ProbabilityDtype,
    ResampleMode,
    Resampling,
    choices,
)
from geounet.errors import InputError, TileSizeError, option

DEFAULT_MAX_PIXELS = 4_000_000_000
"""Default ceiling on the model pixels one run (one scene of a batch) computes: 4 gigapixels.

4 Gpx is 1,000 km^2 at 0.5 m (about a 32 x 32 km city, or one large very-high-resolution
satellite scene on the model's grid), so a real scene passes; what exceeds it is almost always
a mistake (a coarse scene warped to a fine model, a wrong CRS) that would run for days: at the
0.2-0.6 MP/s measured on a 2-core CPU (benchmarks/RESULTS.md) 4 Gpx already takes 2-6 hours.
Raise it (``max_pixels``, ``--max-pixels``) or turn it off (0 or None) for larger jobs.
"""


@dataclass(frozen=True)
class PredictOptions:
    """What a prediction run computes (one setting for every scene of a batch).

    Attributes
    ----------
    model : geounet checkpoint (``.pt``); default: the built-in model.
    bands : 1-based scene bands fed to the model; default: the model card's.
    assets : a STAC item's asset keys or ``eo:bands`` common names read as its bands, in the
        model's order (``"red,green,blue"``): :func:`geounet.raster.stac.open_item`.
    chunk_size : chunk core side (a multiple of ``2**depth``): the unit of scheduling, I/O and
        output writing, and the Zarr chunk side.
    tile_size : model input side; default: about 1024 px tile cores, plus the halo
        (:func:`geounet.engine.tiling.default_tile_size`). The chunk side is rounded to whole
        tile cores, so each tile runs once.
    batch_size : tiles per model call; default 1 on CPU, 8 on CUDA.
    device, precision : where and how the model runs (``auto`` picks the fastest correct one;
        ``int8`` runs a model quantized after calibration on crops of this scene, on the ONNX
        Runtime or OpenVINO engine: docs/engine.md).
    engine : ``auto`` (default: a documented rule on the CPU and the installed packages; an
        optional engine that fails to open falls back to torch, logged), ``torch``,
        ``onnxruntime`` or ``openvino`` (:mod:`geounet.engine.backends`).
    tta : test-time augmentation: ``none`` (default), ``flips`` (4x the model work) or ``d4``
        (8x); the softmax probabilities are averaged over the transforms, each undone, so the
        output stays exact and chunk-invariant (docs/predict.md).
    probability_dtype : ``uint8`` (``round(p * 255)``) or ``float32``.
    threshold : probability a class needs to win a pixel; default argmax.
    resample : ``auto`` (default): a scene more than 1.25x off the model's pixel size is read
        through a GDAL WarpedVRT at the model's pixel size, a scene more than 4x off
        (:data:`geounet.config.AUTO_RESAMPLE_MAX_FACTOR`) is refused; ``always``: whenever they
        differ; ``error``: never (a scene more than 2x off is refused).
    resampling : GDAL resampling of that warp; ``auto``: bilinear when the scene is finer
        than the model, lanczos when it is coarser.
    rescale : map the scene's values into the model's range: ``"match"``, ``"percentile"``,
        ``"percentile:LOW,HIGH"``, ``"bits"``, ``"bits:N"``, ``"MIN,MAX"`` or ``(min, max)``;
        required when the scene's data type differs from the model's.
    max_pixels : refuse (:class:`~geounet.errors.RunTooLargeError`, before any pixel is read)
        a run whose model grid (the scene after any resampling) has more pixels than this;
        default :data:`DEFAULT_MAX_PIXELS` (4 gigapixels); 0 or None: no limit (stored as None).
    allow_no_crs : accept a scene without CRS (outputs in pixel coordinates, with a warning).
    output_grid : the grid of the raster output of a resampled run: ``scene`` (default, the
        scene's own grid) or ``model`` (the grid the model read).

    Raises
    ------
    InputError, TileSizeError
        A value no scene could run with (the message names the value, the rule and the fix).
    """

    model: str | os.PathLike[str] | None = None
    bands: tuple[int, ...] | None = None
    assets: str | Sequence[str] | None = None
    chunk_size: int = 2048
    tile_size: int | None = None
    batch_size: int | None = None
    device: str = "auto"
    precision: InferencePrecision = "auto"
    engine: Engine = "auto"
    tta: TTA = "none"
    probability_dtype: ProbabilityDtype = "uint8"
    threshold: float | None = None
    resample: ResampleMode = "auto"
    resampling: Resampling = "auto"
    rescale: str | tuple[float, float] | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    allow_no_crs: bool = False
    output_grid: OutputGrid = "scene"

    def __post_init__(self) -> None:
        from geounet.engine.runner import tta_transforms

        _check_choices(self.precision, self.probability_dtype, self.threshold, self.engine)
        tta_transforms(self.tta)  # InputError naming the value
        check_output_grid(self.output_grid)
        object.__setattr__(self, "max_pixels", check_max_pixels(self.max_pixels))
        chunk = self.chunk_size
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk <= 0:
            raise TileSizeError(f"chunk size {chunk!r} is not a positive whole number of pixels.")


def _check_choices(precision: InferencePrecision, probability_dtype: ProbabilityDtype,
                   threshold: float | None, engine: Engine) -> None:
    """Raise InputError for a setting no scene could run with."""
    if precision not in choices(InferencePrecision):
        raise InputError(
            f"precision {precision!r} is not supported; use one of "
            f"{', '.join(choices(InferencePrecision))}."
        )
    if probability_dtype not in choices(ProbabilityDtype):
        raise InputError(
            f"probability dtype {probability_dtype!r} is not supported; use one of "
            f"{', '.join(choices(ProbabilityDtype))}."
        )
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise InputError(f"threshold {threshold} is outside 0-1; give a probability such as 0.5.")
    if engine not in choices(Engine):
        raise InputError(
            f"engine {engine!r} is not one of {', '.join(choices(Engine))}; pick one."
        )


def check_max_pixels(max_pixels: int | None) -> int | None:
    """``max_pixels`` as a positive int, or None for no ceiling (None or 0)."""
    if max_pixels is None:
        return None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, float)) or not (
        max_pixels >= 0 and float(max_pixels) == int(max_pixels)
    ):
        raise InputError(
            f"max_pixels {max_pixels!r} is not a whole number of pixels >= 0; give e.g. "
            f"{option('max_pixels', int(DEFAULT_MAX_PIXELS))}, or 0 for no ceiling."
        )
    return int(max_pixels) or None


def check_output_grid(output_grid: OutputGrid) -> None:
    """Raise InputError unless ``output_grid`` is ``scene`` or ``model``."""
    if output_grid not in choices(OutputGrid):
        raise InputError(
            f"output grid {output_grid!r} is not one of {', '.join(choices(OutputGrid))}; use "
            "scene (the raster on the scene's own grid) or model (on the grid the model read)."
        )
