"""Options shared by several commands, defined once, with validating callbacks.

Option names match the library keywords (``--tile-size`` is ``tile_size``). Add new shared
options at the end of this file.
"""

from __future__ import annotations

from typing import Any

import click

from geounet.config import (
    TTA,
    BatchRaster,
    Engine,
    InferencePrecision,
    OutputGrid,
    ProbabilityDtype,
    ResampleMode,
    Resampling,
    VectorFormat,
    choices,
)


def _positive(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None and value <= 0:
        raise click.BadParameter(f"{value} is not positive; give a whole number > 0.", param=param)
    return value


def _bands(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        bands = tuple(int(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a comma-separated list of band numbers; use e.g. 1,2,3.",
            param=param,
        ) from None
    if any(band < 1 for band in bands):
        raise click.BadParameter(
            f"{value!r} has a band below 1; bands are 1-based (the first band is 1).", param=param
        )
    return bands


def _device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    value = value.strip().lower()
    if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
        return value
    raise click.BadParameter(
        f"{value!r} is not a device; use auto, cpu, cuda or cuda:N (e.g. cuda:0).", param=param
    )


overwrite = click.option(
    "--overwrite", is_flag=True, default=False, help="Replace an existing output."
)
seed = click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")


def out(help: str, *, dir_okay: bool) -> Any:
    """``--out``/``-o`` (required): the output of a one-scene command (``predict``, ``segment``)."""
    return click.option("--out", "-o", required=True, type=click.Path(dir_okay=dir_okay),
                        help=help)


model = click.option(
    "--model",
    "model",
    type=click.Path(dir_okay=False),
    default=None,
    help="Checkpoint (.pt) with model card. Default: the built-in demo model.",
)
bands = click.option(
    "--bands",
    callback=_bands,
    default=None,
    help="1-based band indices to feed the model, e.g. 1,2,3. Default: the model card's bands.",
)
chunk_size = click.option(
    "--chunk-size",
    type=int,
    default=2048,
    show_default=True,
    callback=_positive,
    help="Chunk side in pixels: the unit of scheduling, I/O and output writing.",
)
tile_size = click.option(
    "--tile-size",
    type=int,
    default=None,
    callback=_positive,
    help="Model input tile side in pixels. Default: chosen for the model.",
)
batch_size = click.option(
    "--batch-size",
    type=int,
    default=None,
    callback=_positive,
    help="Tiles per model call. Default: 1 on CPU, more on CUDA.",
)
device = click.option(
    "--device",
    default="auto",
    show_default=True,
    callback=_device,
    help="auto, cpu, cuda or cuda:N.",
)
precision = click.option(
    "--precision",
    type=click.Choice(choices(InferencePrecision)),
    default="auto",
    show_default=True,
    help="Model compute precision. int8: quantized after calibration on crops of the scene "
    "(onnxruntime/openvino engines). auto: int8 on a CPU with VNNI/AMX when the engine runs it, "
    "else bf16 where the CPU or GPU has it, else fp32 (docs/engine.md).",
)
engine = click.option(
    "--engine",
    type=click.Choice(choices(Engine)),
    default="auto",
    show_default=True,
    help="Inference runtime: torch, onnxruntime, openvino (optional extras), or auto (the "
    "fastest installed one for this CPU, by docs/engine.md's table; falls back to torch, "
    "logged, if it fails to open).",
)
tta = click.option(
    "--tta",
    type=click.Choice(choices(TTA)),
    default="none",
    show_default=True,
    help="Test-time augmentation of every tile: none, flips (4 transforms: 4x the model work) "
    "or d4 (flips and quarter turns: 8x); probabilities averaged. See docs/predict.md.",
)
probability_dtype = click.option(
    "--probability-dtype",
    type=click.Choice(choices(ProbabilityDtype)),
    default="uint8",
    show_default=True,
    help="Storage of class probabilities: uint8 (0-255) or float32.",
)
threshold = click.option(
    "--threshold",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Probability a class needs to win a pixel (0-1). Default: argmax.",
)

# ---- appended by the pipeline part (predict / segment) -----------------------------------


def _address(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if param.name == "scheduler_address" and value in ("threads", "synchronous"):
        return value  # the deprecated alias also named the in-process schedulers
    if "://" in value or ":" in value:
        return value
    raise click.BadParameter(
        f"{value!r} is not a scheduler address; use e.g. tcp://host:8786 "
        "(and --in-process to run in this process).",
        param=param,
    )


workers = click.option(
    "--workers",
    type=int,
    default=None,
    callback=_positive,
    help="Run on a local cluster of N worker processes. Default: predict and segment run in "
    "this process on one thread per core (at most 4; 1 on CUDA); batch starts one worker "
    "process per core.",
)
scheduler_address = click.option(
    "--scheduler-address",
    callback=_address,
    default=None,
    hidden=True,
    help="Deprecated: use --scheduler ADDRESS, or --in-process for 'threads'.",
)
scheduler = click.option(
    "--scheduler",
    callback=_address,
    default=None,
    metavar="ADDRESS",
    help="Run on a running dask.distributed scheduler (tcp://host:8786) instead of this "
    "machine. Default: $DASK_SCHEDULER_ADDRESS if set.",
)
in_process = click.option(
    "--in-process",
    is_flag=True,
    default=False,
    help="Run in this process with Dask's threaded scheduler (--workers threads); debugging.",
)


def pop_client(kwargs: dict[str, Any]) -> Any:
    """Take the scheduler options (``--scheduler``, ``--in-process``, ``--workers``) out of a
    command's keyword arguments: the library's ``client``, a
    :data:`geounet.distributed.schedulers.Scheduler` chosen by the library's one rule
    (:func:`~geounet.distributed.schedulers.choose_scheduler`, which refuses ``--workers``
    with an address)."""
    from geounet.distributed.schedulers import choose_scheduler

    return choose_scheduler(_pop_address(kwargs), kwargs.pop("workers", None))


def _pop_address(kwargs: dict[str, Any]) -> Any:
    """``--scheduler``, ``--in-process`` and the deprecated ``--scheduler-address`` as the
    library's ``client``: an address, ``"threads"``, or None."""
    address = kwargs.pop("scheduler", None)
    legacy = kwargs.pop("scheduler_address", None)
    in_process = kwargs.pop("in_process", False)
    if legacy is not None:
        import logging

        logging.getLogger("geounet").info("--scheduler-address is deprecated; use --scheduler "
                                          "ADDRESS, or --in-process for an in-process run.")
        if legacy in ("threads", "synchronous"):
            in_process = in_process or legacy
        elif address is None:
            address = legacy
    if address is not None and in_process:
        raise click.UsageError(
            f"--scheduler {address} and --in-process both choose where the run happens; "
            "give one of them."
        )
    if in_process:
        return in_process if isinstance(in_process, str) else "threads"
    return address
resume = click.option(
    "--resume",
    is_flag=True,
    default=False,
    help="Finish an interrupted run with the same settings, computing only missing chunks "
    "(or none, when it stopped after predicting).",
)
allow_no_crs = click.option(
    "--allow-no-crs",
    is_flag=True,
    default=False,
    help="Accept a scene without CRS; outputs are then in pixel coordinates.",
)

# ---- fitting a scene to the model (predict / segment / batch) ----------------------------


def _rescale(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    from geounet.errors import InputError
    from geounet.raster.fitting import parse_rescale

    try:
        parse_rescale(value)
    except InputError as exc:
        raise click.BadParameter(str(exc), param=param) from None
    return value


resample = click.option(
    "--resample",
    type=click.Choice(choices(ResampleMode)),
    default="auto",
    show_default=True,
    help="Read the scene warped to the model's pixel size: auto when it is more than 1.25x "
    "off (refusing a scene more than 4x off), always when it differs at all (any factor), "
    "error to refuse a scene more than 2x off.",
)
resampling = click.option(
    "--resampling",
    type=click.Choice(choices(Resampling)),
    default="auto",
    show_default=True,
    help="GDAL resampling used by --resample; auto: bilinear for a finer scene, lanczos for a "
    "coarser one.",
)
rescale = click.option(
    "--rescale",
    callback=_rescale,
    default=None,
    metavar="match[:LEVELS]|percentile[:LOW,HIGH]|bits[:N]|MIN,MAX",
    help="Map the scene's values into the model's range (needed when its data type differs "
    "from the model's): match (the scene's per-band percentiles onto the training data's, "
    "from the model card; match:2,98 for a linear map), percentile (per-band 2nd..98th "
    "percentiles of a sample stretched to the full range; percentile:LOW,HIGH), bits "
    "(0..2**N-1, N from the file or its maximum, e.g. 11-bit data) or MIN,MAX. See "
    "docs/predict.md for which to pick.",
)

def _max_pixels(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    from geounet.run.options import DEFAULT_MAX_PIXELS

    if value is None:
        return DEFAULT_MAX_PIXELS
    text = value.strip().lower()
    scale = {"k": 1e3, "m": 1e6, "g": 1e9}.get(text[-1:], 1.0)
    try:
        number = float(text[:-1] if scale != 1.0 else text) * scale
    except ValueError:
        number = -1.0
    if not (number >= 0 and number == int(number)):  # also rejects nan
        raise click.BadParameter(
            f"{value!r} is not a pixel count; give a whole number such as 4000000000, 4e9 or "
            "4G, or 0 for no limit.", param=param)
    return int(number) or None


max_pixels = click.option(
    "--max-pixels",
    callback=_max_pixels,
    default=None,
    metavar="N",
    help="Refuse, before reading any pixel, a run whose model grid (the scene after any "
    "resampling) has more than N pixels (e.g. 4e9 or 4G; 0 = no limit). Default: 4G "
    "(1,000 km^2 at 0.5 m).",
)

output_grid = click.option(
    "--output-grid", type=click.Choice(choices(OutputGrid)), default="scene", show_default=True,
    help="Grid of a resampled run's raster output: scene (the scene's own) or model (the one "
    "the model read). Polygons are traced on the model's grid either way.")

# ---- prediction options (shared by `predict` and `segment`) ------------------------------


def prediction_options(func: Any) -> Any:
    """The options ``predict`` and ``segment`` share, in help order.

    They arrive as keyword arguments named like :func:`geounet.predict`'s keywords, except
    ``scheduler``, ``in_process`` and ``scheduler_address`` (the library's ``client``: take
    them out with :func:`pop_client`).
    """
    for decorator in reversed(
        [model, bands, assets, chunk_size, tile_size, batch_size, device, precision, engine, tta,
         probability_dtype, threshold, resample, resampling, rescale, max_pixels, output_grid,
         workers,
         scheduler,
         in_process,
         scheduler_address, resume, allow_no_crs, overwrite]
    ):
        func = decorator(func)
    return func


# ---- batch options (`geounet batch`) -----------------------------------------------------

batch_raster = click.option(
    "--raster",
    type=click.Choice(choices(BatchRaster)),
    default="none",
    show_default=True,
    help="Also keep each scene's prediction raster: a Zarr store or a COG.",
)
vector_format = click.option(
    "--format",
    "vector_format",
    type=click.Choice(choices(VectorFormat)),
    default=None,
    help="Vector format: gpkg (default for a local --out-dir) or parquet (GeoParquet, default "
    "and required for s3://); fgb also works.",
)

# --- training datasets (train, chips) ---------------------------------------------------------

def _int_list(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        values = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a comma-separated list of whole numbers, one mask value per "
            "class in class order; use e.g. 0,255.", param=param) from None
    return values


def _name_list(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    names = tuple(v.strip() for v in value.split(","))
    if not all(names):
        raise click.BadParameter(f"{value!r} has an empty class name; use e.g. "
                                 "background,buildings.", param=param)
    return names


line_width = click.option(
    "--line-width", type=click.FloatRange(0.0, min_open=True), default=None,
    help="Metres; buffer width of line labels without a 'width' attribute.")
split_block = click.option(
    "--split-block", type=int, default=4, show_default=True, callback=_positive,
    help="Chips per block side; whole blocks go to train or val, and training chips that "
         "touch a validation chip are left out (no leakage).")


mask_pattern = click.option(
    "--mask-pattern", default=None,
    help="Mask path from the image's, relative to its folder, e.g. '{stem}.mask.tif' or "
         "'../gt/{stem}.tif'. Default: detected.")
mask_values = click.option(
    "--mask-values", callback=_int_list, default=None,
    help="Mask value of each class in class order, e.g. 0,255. Default: 0/1 and 0/255 are "
         "binary, else class indices (255 nodata).")
classes = click.option(
    "--classes", callback=_name_list, default=None,
    help="Class names, e.g. background,buildings (background is added when missing). "
         "Default: chips.json, else detected (binary masks: background,buildings).")
labels_file = click.option(
    "--labels", "labels", type=click.Path(exists=True, dir_okay=False), default=None,
    help="One vector labels file (GeoJSON/GPKG) for all chips, burnt onto each chip's grid.")


def dataset_options(func: Any) -> Any:
    """How a training dataset is read (``DatasetConfig`` fields)."""
    for option in reversed((mask_pattern, mask_values, classes, labels_file, line_width,
                            split_block)):
        func = option(func)
    return func


def _assets(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    names = None if value is None else tuple(v.strip() for v in value.split(","))
    if names is not None and not all(names):
        raise click.BadParameter(f"{value!r} has an empty asset name; use e.g. red,green,blue "
                                 "(asset keys or eo:bands common names).", param=param)
    return names


assets = click.option("--assets", callback=_assets, default=None, metavar="NAME,NAME,...",
                      help="For a STAC item (item.json or its URL): the assets read as bands "
                      "in the model's order (asset keys or eo:bands common names).")


# ---- the options objects, built once from a command's keyword arguments ------------------


def pop_predict_options(kwargs: dict[str, Any]) -> Any:
    """Take the :class:`geounet.PredictOptions` fields out of a command's keyword arguments
    and build the options object (its values checked there, its errors naming the flags)."""
    import dataclasses

    from geounet.run.options import PredictOptions

    names = [f.name for f in dataclasses.fields(PredictOptions)]
    return PredictOptions(**{name: kwargs.pop(name) for name in names if name in kwargs})
