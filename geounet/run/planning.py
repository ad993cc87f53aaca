"""Plan a prediction run cheaply: check the settings, scene and model card, lay the grid.

:func:`plan_prediction` finds every user mistake before any pixel is read or the model runs
(ARCHITECTURE data flow step 1) and records what identifies the run for ``resume`` (scene and
model fingerprints, sizes, the fit of the scene to the model). Re-exported by
:mod:`geounet.run.pipeline`, which runs the plan.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geounet.config import TTA, Engine, InferencePrecision, ResampleMode, Resampling
from geounet.errors import GeoreferenceError, InputError, RunTooLargeError, option, with_settings
from geounet.raster import is_url
from geounet.run.options import PredictOptions

if TYPE_CHECKING:
    from geounet.engine.tiling import TileGrid
    from geounet.model import ModelCard
    from geounet.raster import SceneInfo


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunnerSpec:
    """How a worker builds (once) its model runner: plain values, cheap to pickle."""

    model: str | None
    device: str = "auto"
    precision: InferencePrecision = "auto"
    bands: tuple[int, ...] | None = None
    engine: Engine = "auto"
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
    source: SceneInfo | None = None
    """The scene as opened, before any warp (``info`` is the grid the model reads)."""


def _check_execution(engine: Engine, device: str, precision: InferencePrecision,
                     scene_pixels: int = 0) -> str:
    """Raise now, not in a task, when this machine cannot run ``device`` / ``engine`` /
    ``precision`` (no CUDA, a package missing, int8 on torch); return what will run on a scene
    of ``scene_pixels`` and why (the workers decide the same from the same scene)."""
    from geounet.engine.runner import resolve_execution

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the emulated-bf16 warning comes again from the worker
        choice = resolve_execution(engine, precision, device, scene_pixels)
    return (f"engine {choice.engine}, precision {choice.precision} on {choice.device.type} "
            f"({choice.reason})")


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
    from geounet.model.checkpoint import file_sha256

    return file_sha256(path)


def to_plain(value: Any) -> Any:
    """A dataclass as the plain JSON types its run record is stored in (None stays None)."""
    import json

    return None if value is None else json.loads(json.dumps(dataclasses.asdict(value)))


def plan_prediction(
    scene: str | os.PathLike[str],
    options: PredictOptions | None = None,
    *,
    check_device: bool = True,
    **settings: Any,
) -> Plan:
    """Validate a prediction run cheaply (no model forward) and plan its grid.

    ``options`` (:class:`~geounet.run.options.PredictOptions`, its fields also accepted as
    keywords, ``settings``) say what to compute; ``batch_size`` and ``output_grid`` are not
    used by planning. ``check_device=False`` skips checking that this machine has the device
    (for a remote scheduler whose workers have GPUs this machine lacks). ``resample``/``resampling`` and
    ``rescale`` fit the scene to the model card (:mod:`geounet.raster.fitting`): the planned scene
    may be a warped view at the card's pixel size, and its values may be mapped into the
    card's range (percentile and bit-depth rescales read a sample of windows, nothing else
    reads pixels). A STAC item (``scene`` ending ``.json``, or a STAC API item URL) is read as
    the stack of the bands ``assets`` names (:func:`geounet.raster.stac.open_item`; a coarser
    asset is resampled onto the finest one's grid with ``resampling``). ``max_pixels`` caps
    the pixels of the model grid (the scene as the model reads it, after any warp), checked
    before any pixel is read; 0 or None: no cap. ``tta`` is checked here and travels in the
    runner spec. The run logs the plan (:func:`describe_plan`) once its warm-up has measured
    the ETA (:mod:`geounet.run.eta`).

    Raises
    ------
    SceneError, GeoreferenceError, CheckpointError, IncompatibleSceneError, TileSizeError,
    DeviceError, InputError, RunTooLargeError
    """
    from geounet.engine.runner import default_model_path
    from geounet.engine.tiling import plan_tiles

    o = with_settings(PredictOptions, options, settings, "plan_prediction")
    # user mistakes first, before torch is imported (device checks and the card need it)
    _check_int8(o.engine, o.device, o.precision)
    source = _open_placed_scene(scene, o.allow_no_crs, o.assets, o.resampling)
    if check_device:
        _check_execution(o.engine, o.device, o.precision)
    model_path = Path(o.model) if o.model is not None else default_model_path()
    card, bands = _load_card(model_path, o.bands)
    info = _fit_scene(source, card, o.resample, o.resampling, o.rescale, o.max_pixels)
    card.check_scene(info.count, info.read_dtype, info.pixel_size)
    grid = plan_tiles(
        card.architecture, info.height, info.width, chunk_size=o.chunk_size,
        tile_size=o.tile_size,
    )
    tile_size = grid.tile_size
    chunk_size = grid.chunk_size  # valid padding: rounded to whole tile cores (tiling.plan_tiles)
    model_print = _model_fingerprint(model_path)
    runner = RunnerSpec(str(model_path.absolute()), o.device, o.precision, bands, o.engine,
                        model_print["sha256"], o.tta)
    run = {
        "scene": _scene_fingerprint(scene, source),
        "model": model_print,
        "bands": list(card.bands),
        "chunk_size": chunk_size,
        "tile_size": tile_size,
        "precision": o.precision,
        "engine": o.engine,
        "tta": o.tta,
        "probability_dtype": o.probability_dtype,
        "threshold": o.threshold,
        # as JSON gives them back, so a resumed run compares equal to its stored record
        "warp": to_plain(info.warp),
        "rescale": to_plain(info.rescale),
    }
    plan = Plan(info, card, grid, runner, chunk_size, tile_size, run, source)
    if check_device:
        log.info("%s", _check_execution(o.engine, o.device, o.precision,
                                        info.height * info.width))
    return plan


def describe_plan(plan: Plan, eta: str | None = None) -> str:
    """One line saying what ``plan`` will compute: input and model grid, chunks, tiles, model
    pixels (times the test-time augmentation's transforms), and ``eta`` when given (the
    warm-up's estimate, :meth:`geounet.run.eta.RunClock.describe`).
    """
    from geounet.engine.runner import tta_transforms

    info, grid = plan.info, plan.grid
    source = plan.source if plan.source is not None else info
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
    transforms = len(tta_transforms(plan.runner.tta))
    if transforms > 1:
        pixels *= transforms
        counted = f" ({transforms} per pixel: tta {plan.runner.tta})"
    else:
        counted = ""
    return (
        f"plan: {os.path.basename(str(source.path))} {size(source)} -> {model_grid}; "
        f"{rows * cols:,} chunk(s) of {grid.chunk_size} px ({rows} x {cols}), about "
        f"{tile_rows * tile_cols:,} tile(s) of {grid.tile_size} px; "
        f"{pixels:,} model pixels{counted} ({pixels / 1e6:,.1f} MP)"
        + (f"; {eta}" if eta else "")
    )


def _check_model_pixels(info: SceneInfo, max_pixels: int | None) -> None:
    """Raise RunTooLargeError when the model grid of ``info`` has more than ``max_pixels``."""
    pixels = info.height * info.width
    if max_pixels is not None and pixels > max_pixels:
        grid = f"{info.width:,} x {info.height:,} px"
        if info.warp is not None and info.warp.regrid:
            grid += f", the scene resampled to {info.pixel_size:.3g} m"
        raise RunTooLargeError(
            f"this run would compute {pixels:,} model pixels ({pixels / 1e9:.3g} gigapixels: "
            f"{grid}), more than the limit of {max_pixels:,}; check the scene and model "
            "resolutions, split the scene, or raise the limit with "
            f"{option('max_pixels', 2 * pixels)} (0 = no limit)."
        )


def _check_int8(engine: Engine, device: str, precision: InferencePrecision) -> None:
    """Raise (before torch is imported) when int8 cannot run with ``engine`` here: with
    torch, on CUDA, or without onnxruntime/openvino."""
    if precision == "int8":
        from geounet.engine.backends import resolve_engine

        resolve_engine(engine, "cuda" if str(device).startswith("cuda") else "cpu",
                       precision="int8")


def require_crs(info: SceneInfo, scene: str | os.PathLike[str], command: str) -> None:
    """Raise GeoreferenceError when ``info`` has no CRS: ``command`` (segment, batch) writes
    polygons, which need one (``allow_no_crs`` lets only a raster through)."""
    if info.crs_wkt is None:
        raise GeoreferenceError(
            f"scene {str(scene)!r} has no CRS, and {command} writes polygons, which need one; "
            "assign a CRS to the scene (e.g. gdal_edit.py -a_srs EPSG:32633), or run "
            "`geounet predict --allow-no-crs` on it alone for a prediction raster in pixel "
            "coordinates."
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
                "georeference it (e.g. gdal_edit.py -a_srs EPSG:XXXX) or pass "
                f"{option('allow_no_crs', True)} to write outputs in pixel coordinates."
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
