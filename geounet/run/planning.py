"""Plan a prediction run cheaply: check the settings, scene and model card, lay the grid.

:func:`plan_prediction` finds every user mistake before any pixel is read or the model runs
(ARCHITECTURE data flow step 1) and records what identifies the run for ``resume`` (scene and
model fingerprints, sizes, the fit of the scene to the model). Re-exported by
:mod:`geounet.run.pipeline`, which runs the plan.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geounet.config import (
    TTA,
    Engine,
    Precision,
    ProbabilityDtype,
    ResampleMode,
    Resampling,
    choices,
)
from geounet.distributed.cluster import SchedulerLike
from geounet.errors import GeoreferenceError, InputError, RunTooLargeError, TileSizeError
from geounet.raster import is_url

if TYPE_CHECKING:
    from geounet.engine.tiling import TileGrid
    from geounet.model import ModelCard
    from geounet.raster import SceneInfo


DEFAULT_MAX_PIXELS = 4_000_000_000
"""Default ceiling on the model pixels one run (one scene of a batch) computes: 4 gigapixels.

4 Gpx is 1,000 km^2 at 0.5 m (about a 32 x 32 km city, or one large very-high-resolution
satellite scene on the model's grid), so a real scene passes; what exceeds it is almost always
a mistake (a coarse scene warped to a fine model, a wrong CRS) that would run for days: at the
0.2-0.6 MP/s measured on a 2-core CPU (benchmarks/RESULTS.md) 4 Gpx already takes 2-6 hours.
Raise it (``max_pixels``, ``--max-pixels``) or turn it off (0 or None) for larger jobs.
"""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunnerSpec:
    """How a worker builds (once) its model runner: plain values, cheap to pickle."""

    model: str | None
    device: str = "auto"
    precision: Precision = "auto"
    bands: tuple[int, ...] | None = None
    engine: Engine = "torch"
    model_sha256: str | None = None
    """The checkpoint's content hash: workers load the copy shipped under it (geounet.distributed.worker)."""
    tta: TTA = "none"
    """Test-time augmentation of every tile (:meth:`geounet.engine.runner.ModelRunner.forward`)."""


@dataclass(frozen=True)
class Plan:
    """A validated prediction run: scene, model card, grid and chunk tasks (nothing computed)."""

    info: SceneInfo
    card: ModelCard
    grid: TileGrid
    runner: RunnerSpec
    chunk_size: int
    tile_size: int
    run: dict[str, Any]


def runs_here(client: SchedulerLike) -> bool:
    """Whether tasks run on this machine (local cluster or in-process), not a remote scheduler
    (given, or set in ``DASK_SCHEDULER_ADDRESS``)."""
    from geounet.distributed.cluster import configured_address, is_in_process

    if client is None:
        return configured_address() is None
    return is_in_process(client)


def _check_device(device: str, precision: Precision) -> None:
    """Raise DeviceError now, not in a task, when this machine cannot run ``device``/``precision``."""
    from geounet.engine.runner import resolve_device, resolve_precision

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the emulated-bf16 warning comes again from the worker
        resolve_precision(precision, resolve_device(device))


def _check_engine(engine: Engine, device: str, precision: Precision) -> None:
    """Raise now, not in a task, when this machine cannot run ``engine`` (package missing)."""
    from geounet.engine.backends import resolve_engine
    from geounet.engine.runner import resolve_device, resolve_precision

    torch_device = resolve_device(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the emulated-bf16 warning comes again from the worker
        resolved = resolve_precision(precision, torch_device)
    resolve_engine(engine, torch_device.type, precision=resolved)


def _fingerprint(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """What identifies a scene between a run and its resume: size and mtime of a local file,
    size and ETag (or last-modified) of a URL."""
    if path is None:
        return {}
    text = os.fspath(path)
    if is_url(text):
        return {"path": text, **_remote_stamp(text)}
    try:
        stat = os.stat(path)
    except OSError:
        return {"path": text}
    return {"path": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _remote_stamp(url: str) -> dict[str, Any]:
    """Size and ETag / last-modified of a URL, as fsspec reports them ({} if it cannot)."""
    for prefix, scheme in (("/vsis3/", "s3://"), ("/vsigs/", "gs://"), ("/vsiaz/", "az://"),
                           ("/vsicurl/", "")):
        if url.startswith(prefix):
            url = scheme + url[len(prefix):]
    if "://" not in url:
        return {}
    try:
        import fsspec

        fs, target = fsspec.core.url_to_fs(url)
        meta = fs.info(target)
    except Exception:  # noqa: BLE001 - no fsspec backend or no access: size/ETag unknown
        return {}
    stamp = {}
    for key in ("size", "ETag", "etag", "LastModified", "last_modified", "mtime"):
        if meta.get(key) is not None:
            stamp[key.lower().replace("_", "")] = str(meta[key]).strip('"')
    return stamp


def _model_fingerprint(path: Path) -> dict[str, Any]:
    """Name and content hash of a checkpoint; hashed once per file version (size, mtime), not
    once per scene of a batch."""
    stat = path.stat()
    return {"name": path.name,
            "sha256": _file_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)}


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    from geounet.distributed.worker import file_sha256

    return file_sha256(path)


def to_plain(value: Any) -> Any:
    """A dataclass as the plain JSON types its run record is stored in (None stays None)."""
    import json

    return None if value is None else json.loads(json.dumps(dataclasses.asdict(value)))


def plan_prediction(
    scene: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] | None = None,
    bands: tuple[int, ...] | None = None,
    chunk_size: int = 2048,
    tile_size: int | None = None,
    device: str = "auto",
    precision: Precision = "auto",
    probability_dtype: ProbabilityDtype = "uint8",
    threshold: float | None = None,
    allow_no_crs: bool = False,
    check_device: bool = True,
    resample: ResampleMode = "auto",
    resampling: Resampling = "auto",
    rescale: str | tuple[float, float] | None = None,
    engine: Engine = "torch",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    tta: TTA = "none",
    assets: str | Sequence[str] | None = None,
) -> Plan:
    """Validate a prediction run cheaply (no model forward) and plan its grid.

    ``check_device=False`` skips checking that this machine has the device (for a remote
    scheduler whose workers have GPUs this machine lacks). ``resample``/``resampling`` and
    ``rescale`` fit the scene to the model card (:mod:`geounet.raster.fitting`): the planned scene
    may be a warped view at the card's pixel size, and its values may be mapped into the
    card's range (percentile and bit-depth rescales read a sample of windows, nothing else
    reads pixels). A STAC item (``scene`` ending ``.json``, or a STAC API item URL) is read as
    the stack of the bands ``assets`` names (:func:`geounet.raster.stac.open_item`; a coarser
    asset is resampled onto the finest one's grid with ``resampling``). ``max_pixels`` caps the pixels of the model grid (the scene as the model
    reads it, after any warp), checked before any pixel is read; 0 or None: no cap. The plan
    (input and model-grid size, chunks, tiles, model pixels) is logged at INFO before return. ``tta`` is checked here and travels in the runner spec.

    Raises
    ------
    SceneError, GeoreferenceError, CheckpointError, IncompatibleSceneError, TileSizeError,
    DeviceError, InputError, RunTooLargeError
    """
    from geounet.engine.runner import default_model_path, tta_transforms
    from geounet.engine.tiling import plan_tiles

    # user mistakes first, before torch is imported (device checks and the card need it)
    _check_settings(precision, probability_dtype, threshold, False, device, engine)
    tta_transforms(tta)  # InputError naming the value
    max_pixels = check_max_pixels(max_pixels)
    source = _open_placed_scene(scene, allow_no_crs, assets, resampling)
    if check_device:
        _check_device(device, precision)
        _check_engine(engine, device, precision)
    model_path = Path(model) if model is not None else default_model_path()
    card, bands = _load_card(model_path, bands)
    info = _fit_scene(source, card, resample, resampling, rescale, max_pixels)
    card.check_scene(info.count, info.read_dtype, info.pixel_size)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise TileSizeError(f"chunk size {chunk_size!r} is not a positive whole number of pixels.")
    grid = plan_tiles(
        card.architecture, info.height, info.width, chunk_size=chunk_size, tile_size=tile_size
    )
    tile_size = grid.tile_size
    chunk_size = grid.chunk_size  # valid padding: rounded to whole tile cores (tiling.plan_tiles)
    model_print = _model_fingerprint(model_path)
    runner = RunnerSpec(str(model_path.absolute()), device, precision, bands, engine,
                        model_print["sha256"], tta)
    run = {
        "scene": _scene_fingerprint(scene, source),
        "model": model_print,
        "bands": list(card.bands),
        "chunk_size": chunk_size,
        "tile_size": tile_size,
        "precision": precision,
        "engine": engine,
        "tta": tta,
        "probability_dtype": probability_dtype,
        "threshold": threshold,
        # as JSON gives them back, so a resumed run compares equal to its stored record
        "warp": to_plain(info.warp),
        "rescale": to_plain(info.rescale),
    }
    plan = Plan(info, card, grid, runner, chunk_size, tile_size, run)
    log.info("%s", describe_plan(plan, source))
    return plan


def describe_plan(plan: Plan, source: SceneInfo | None = None) -> str:
    """One line saying what ``plan`` will compute: input and model grid, chunks, tiles, pixels.

    ``source`` is the scene as opened (before any warp); default: the planned scene's own grid.
    """
    info, grid = plan.info, plan.grid
    source = source if source is not None else info
    rows, cols = grid.chunk_rows, grid.chunk_cols
    tile_rows = -(-info.height // grid.stride)
    tile_cols = -(-info.width // grid.stride)
    pixels = info.height * info.width

    def size(i: SceneInfo) -> str:
        at = f" at {i.pixel_size:.3g} m" if i.pixel_size else ""
        return f"{i.width:,} x {i.height:,} px{at}"

    if info.warp is not None and info.warp.regrid:
        model_grid = f"model grid {size(info)} (resampled, {info.warp.resampling})"
    else:
        model_grid = "model grid the same"
    return (
        f"plan: {os.path.basename(str(source.path))} {size(source)} -> {model_grid}; "
        f"{rows * cols:,} chunk(s) of {grid.chunk_size} px ({rows} x {cols}), about "
        f"{tile_rows * tile_cols:,} tile(s) of {grid.tile_size} px; "
        f"{pixels:,} model pixels ({pixels / 1e6:,.1f} MP)"
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
            f"{DEFAULT_MAX_PIXELS:.0e} (--max-pixels), or 0 for no ceiling."
        )
    return int(max_pixels) or None


def _check_model_pixels(info: SceneInfo, max_pixels: int | None) -> None:
    """Raise RunTooLargeError when the model grid of ``info`` has more than ``max_pixels``."""
    pixels = info.height * info.width
    if max_pixels is not None and pixels > max_pixels:
        grid = f"{info.width:,} x {info.height:,} px"
        if info.warp is not None and info.warp.regrid:
            grid += f", the scene resampled to {info.pixel_size:.3g} m"
        raise RunTooLargeError(
            f"this run would compute {pixels:,} model pixels ({pixels / 1e9:.3g} gigapixels: "
            f"{grid}), more than the limit of {max_pixels:,} (max_pixels); check the scene "
            "and model resolutions, split the scene, or raise the limit with --max-pixels N "
            "(max_pixels=N; 0 = no limit)."
        )


def _check_settings(precision: Precision, probability_dtype: ProbabilityDtype,
                    threshold: float | None, check_device: bool, device: str,
                    engine: Engine) -> None:
    """Raise InputError (or DeviceError) for a setting no scene could run with."""
    if precision not in choices(Precision):
        raise InputError(
            f"precision {precision!r} is not supported; use one of {', '.join(choices(Precision))}."
        )
    if probability_dtype not in choices(ProbabilityDtype):
        raise InputError(
            f"probability dtype {probability_dtype!r} is not supported; use one of "
            f"{', '.join(choices(ProbabilityDtype))}."
        )
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise InputError(f"threshold {threshold} is outside 0-1; give a probability such as 0.5.")
    if check_device:
        _check_device(device, precision)
        _check_engine(engine, device, precision)
    elif engine not in choices(Engine):
        raise InputError(
            f"engine {engine!r} is not one of {', '.join(choices(Engine))}; pick one."
        )


def _scene_fingerprint(scene: str | os.PathLike[str], info: SceneInfo) -> dict[str, Any]:
    """:func:`_fingerprint` of the scene; for a STAC item also of each asset file it reads."""
    fingerprint = _fingerprint(scene)
    if info.stack is not None:
        fingerprint["bands"] = list(info.stack.bands)
        fingerprint["assets"] = [_fingerprint(source) for source in info.stack.sources]
    return fingerprint


def _open_placed_scene(scene: str | os.PathLike[str], allow_no_crs: bool,
                       assets: str | Sequence[str] | None = None,
                       resampling: Resampling = "auto") -> SceneInfo:
    """Open the scene's metadata (a STAC item: the stack of ``assets``); refuse RPC-only
    scenes and, unless allowed, scenes without CRS."""
    from geounet.raster import open_scene
    from geounet.raster.stac import is_stac_item, open_item

    if is_stac_item(scene) or assets is not None:
        from geounet import objectstore

        objectstore.configure_environment()  # GDAL reads s3:// assets at s3fs's endpoint
        info = open_item(scene, assets, resampling=resampling, read_text=objectstore.read_text)
    else:
        info = open_scene(str(scene))
    if info.georef == "rpcs" and not allow_no_crs:
        raise GeoreferenceError(
            f"scene {str(scene)!r} is georeferenced by RPCs only (rational polynomial "
            "coefficients, no geotransform or CRS); geounet does not orthorectify: make an "
            "orthorectified copy with a DEM first, e.g. gdalwarp -rpc -to RPC_DEM=dem.tif "
            "-t_srs EPSG:XXXX scene.tif ortho.tif, and segment that."
        )
    if info.crs_wkt is None:
        if not allow_no_crs:
            raise GeoreferenceError(
                f"scene {str(scene)!r} has no CRS, so outputs could not be placed on the map; "
                "georeference it (e.g. gdal_edit.py -a_srs EPSG:XXXX) or pass allow_no_crs=True "
                "(--allow-no-crs) to write outputs in pixel coordinates."
            )
        warnings.warn(
            f"scene {str(scene)!r} has no CRS; outputs are written in pixel coordinates.",
            UserWarning,
            stacklevel=4,  # the caller of predict/segment, as when this was in plan_prediction
        )
    return info


def _load_card(model_path: Path, bands: tuple[int, ...] | None
               ) -> tuple[ModelCard, tuple[int, ...] | None]:
    """The checkpoint's card, with ``bands`` (checked against the model) in place of its own."""
    from geounet.model import load_checkpoint

    _, card = load_checkpoint(model_path)
    if bands is not None:
        bands = tuple(int(b) for b in bands)
        if len(bands) != card.architecture.in_channels:
            raise InputError(
                f"bands {list(bands)} give {len(bands)} band(s) but the model reads "
                f"{card.architecture.in_channels}; give exactly {card.architecture.in_channels} "
                f"1-based band indices (the card's default is {','.join(map(str, card.bands))})."
            )
        if any(b < 1 for b in bands):
            raise InputError(f"bands {list(bands)} has a band below 1; bands are 1-based.")
        card = dataclasses.replace(card, bands=bands)
    return card, bands


def _fit_scene(info: SceneInfo, card: ModelCard, resample: ResampleMode,
               resampling: Resampling, rescale: str | tuple[float, float] | None,
               max_pixels: int | None = None) -> SceneInfo:
    """The scene as the model reads it: warped to its pixel size, values mapped into its range.

    The pixel ceiling is checked on the model grid before the rescale samples any window."""
    from geounet.raster.fitting import plan_resample, plan_rescale

    if max(card.bands) <= info.count:  # else check_scene names the band problem
        info = plan_resample(info, card.pixel_size, resample, resampling=resampling)
        _check_model_pixels(info, max_pixels)
        info = dataclasses.replace(info, rescale=plan_rescale(info, card, rescale))
    else:
        _check_model_pixels(info, max_pixels)
    return info


def check_vectorize_options(options: dict[str, Any] | None) -> None:
    """Raise InputError now, before any prediction, when ``options`` do not fit vectorize."""
    from geounet.vectorization import vectorize

    try:
        inspect.signature(vectorize).bind(None, "x.gpkg", overwrite=True, **(options or {}))
    except TypeError as exc:
        raise InputError(
            f"vectorize_options {options!r} do not fit geounet.vectorize ({exc}); use its "
            "keywords, e.g. min_area, simplify, regularize, fill_holes, centerlines."
        ) from None
