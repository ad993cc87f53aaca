"""Closed sets of choices (``Literal`` aliases) and small frozen configs shared by library and CLI.

Each closed set is written once here; the CLI derives its ``click.Choice`` from it with
:func:`choices`.
"""

from __future__ import annotations

from typing import Literal, get_args

Padding = Literal["valid", "same"]
"""U-Net convolution padding: ``valid`` (exact overlap-tile, the seed design) or ``same``."""

Precision = Literal["auto", "fp32", "bf16", "fp16"]
"""Compute precision of the model forward pass; ``auto`` picks the fastest correct one."""

InferencePrecision = Literal["auto", "fp32", "bf16", "fp16", "int8"]
"""Precision of prediction: those of :data:`Precision`, plus ``int8`` (post-training static
quantization calibrated on the scene; the ONNX Runtime and OpenVINO engines, docs/engine.md).
Training has no int8."""

ProbabilityDtype = Literal["uint8", "float32"]
"""How class probabilities are stored: uint8 (0-255, default) or float32."""

DType = Literal["uint8", "uint16"]
"""Pixel data types geounet scenes use."""

BlendWindow = Literal["hann", "spline", "uniform"]
"""Tapered weight windows for blending overlapping same-padding tiles."""

Engine = Literal["torch", "onnxruntime", "openvino", "auto"]
"""Inference runtime of the forward pass (:mod:`geounet.engine.backends`); ``auto`` picks by the CPU's
instruction sets and the installed packages (docs/engine.md)."""

TTA = Literal["none", "flips", "d4"]
"""Test-time augmentation of each tile: ``none``; ``flips`` (4 transforms: identity, left-right,
up-down, both); ``d4`` (8: the four quarter turns, each also mirrored). The softmax
probabilities are averaged over the transforms, each undone (docs/predict.md)."""

ArchitectureName = Literal["unet", "resnet-unet"]
"""Network architectures a model card can name (:data:`geounet.model.registry.ARCHITECTURES`):
the 2015 U-Net, or a U-Net decoder over a ResNet encoder (pretrained weights from a file)."""

Encoder = Literal["resnet18", "resnet34"]
"""ResNet encoders of the ``resnet-unet`` architecture (torchvision's parameter names)."""


def choices(alias: object) -> tuple[str, ...]:
    """Return the values of a ``Literal`` alias, e.g. ``choices(Padding) == ("valid", "same")``."""
    return tuple(str(value) for value in get_args(alias))


LossType = Literal["ce", "bce"]
"""Pixel loss of training (plus soft Dice): ``ce`` softmax cross-entropy over the classes, or
``bce`` one-vs-rest sigmoid binary cross-entropy per class."""

VectorFormat = Literal["gpkg", "parquet", "fgb"]
"""Vector output formats, picked by the output suffix: GeoPackage (every layer in one file),
GeoParquet and FlatGeobuf (one file per layer)."""

RasterFormat = Literal["zarr", "cog"]
"""Prediction raster formats: a Zarr v3 store (``.zarr``) or a Cloud-Optimized GeoTIFF
(``.tif`` / ``.tiff``); :func:`geounet.output.output_format` names the one a path asks for."""

BatchRaster = Literal["none", RasterFormat]
"""Which prediction raster ``geounet batch`` keeps per scene: none, or a
:data:`RasterFormat` (a Zarr store or a COG)."""

OutputGrid = Literal["scene", "model"]
"""The grid of a resampled run's raster output (Zarr/COG): the scene's own (the default: it
overlays the input pixel for pixel) or the model's, on which the model computed it
(docs/predict.md). Polygons are traced on the model's grid either way, in the scene's CRS."""

LRSchedule = Literal["one-cycle", "cosine", "plateau"]
"""Learning-rate schedule of training: ``one-cycle`` (cosine warm-up from lr/25 to lr, then
cosine annealing to lr/1e4), ``cosine`` (linear warm-up from 0, cosine annealing to 0) or
``plateau`` (constant lr, halved when the monitored score stalls; the pre-0.x behaviour)."""

Monitor = Literal["iou", "loss"]
"""What picks the best checkpoint and drives early stopping: the validation mean foreground
IoU (``iou``) or the validation loss (``loss``)."""

ResampleMode = Literal["error", "auto", "always"]
"""When a scene is read through a warp at the model's pixel size: ``error`` never (refuse a
scene more than 2x off), ``auto`` when it is more than 1.25x off (the default), ``always``
whenever the pixel sizes differ."""

Resampling = Literal["auto", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "nearest"]
"""GDAL resampling for warping imagery; ``auto`` (the default) is bilinear when the scene is
finer than the model (GDAL then averages over each target pixel's footprint) and lanczos when
it is coarser (sharper edges when enlarging: see docs/predict.md for the measured IoU)."""

PERCENTILE_LEVELS = (1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 98.0, 99.0)
"""The per-band percentiles of the training data a model card records (training
``compute_stats``), the knots of ``--rescale match`` (:mod:`geounet.raster.fitting`)."""

MATCH_LEVELS = (2.0, 25.0, 50.0, 75.0, 98.0)
"""The percentiles ``--rescale match`` maps by default (``match:L1,L2,...`` picks others of
:data:`PERCENTILE_LEVELS`): five knots undo a sensor's offset, gain and gamma better than two
(a linear map) and, on scenes whose content differs from the training data's, better than all
eleven, which force the scene's histogram onto the training data's (benchmarks/RESULTS.md,
"--rescale match")."""

RESCALE_ADVICE = (
    "measured on sensor-like 11- and 12-bit copies of uint8 scenes (benchmarks/RESULTS.md): "
    "match for a sensor's own counts (dark offset, gains, no display gamma; building IoU "
    "0.75 against percentile 0.67 and bits 0.46, the uint8 original 0.94), bits when the "
    "values are the training product's only stored in more bits (exact, 0.94)"
)
"""Which ``--rescale`` mode to pick, as measured (``benchmarks/bench_rescale.py``, table in
``benchmarks/RESULTS.md``): named in the errors that ask for a mode."""

NODATA_CLASS = 255
"""Class-mask value where the scene has no valid data (Zarr ``mask``, COG band 1, label masks,
training targets): the one definition every module imports."""

DEFAULT_CLASSES: tuple[str, ...] = ("background", "buildings", "roads")
"""Class names, index = class value, when a prediction or label set names none (the built-in
model's classes)."""

AUTO_RESAMPLE_MAX_FACTOR = 4.0
"""``resample="auto"`` resamples a scene at most this factor finer or coarser than the model.

Why 4: a scene 4x coarser than the model already shows each of its pixels as a 4 x 4 block of
model pixels (16x the pixels of the file, all interpolated), and a scene 4x finer loses 15 of
16 pixels; beyond that the model sees imagery unlike its training data (a 0.5 m building model
on 30 m Landsat: each building is a fraction of one pixel) and the pixel count grows with the
square of the factor (60x: 3,600x the file's pixels). Within it lie the usual mismatches of
very-high-resolution imagery (0.3 m Pleiades Neo / WorldView against a 0.5 m model: 1.7x;
1.2 m against 0.5 m: 2.4x; a 30 cm chip with a 7.5 cm model: 4x), and the resampled runs
that are tested to match native scores (2.5x either way, tests/test_real_scenes.py).
"""

