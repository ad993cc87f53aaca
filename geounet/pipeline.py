"""The one orchestrator: validate, plan chunks, run one Dask task per chunk, write Zarr/COG, vectorize.

Each task carries only the scene description, its chunk window, the tile grid, the store path
and the runner spec (model path, device, precision); it predicts its chunk on the worker,
writes its region of the Zarr store there, leaves a completion marker and returns a few
numbers. No pixel array passes through the scheduler, so memory is bounded by chunk size,
batch size and worker count, never by scene size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import logging
import os
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from geounet.cluster import DEFAULT_RETRY, RetryPolicy, SchedulerLike
from geounet.config import Engine, Precision, ProbabilityDtype, ResampleMode, Resampling, choices
from geounet.errors import (
    GeoreferenceError,
    GeounetError,
    InputError,
    OutputExistsError,
    PredictionKeptError,
    TileSizeError,
    TransientError,
)
from geounet.output import StoreSpec

if TYPE_CHECKING:
    from geounet.model import ModelCard
    from geounet.raster import SceneInfo
    from geounet.tiling import ChunkWindow, TileGrid

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, int], None]
"""``progress(chunks_done, chunks_total, pixels_done)``, called as chunks finish."""


@dataclass(frozen=True)
class PredictResult:
    """What a prediction run did.

    Attributes
    ----------
    out : the output written (``.zarr`` store or ``.tif`` COG).
    pixels : scene pixels covered (height x width).
    chunks : chunks in the scene.
    chunks_skipped : chunks that were entirely nodata (model not called).
    chunks_resumed : chunks already complete in an interrupted run's store (``resume=True``).
    seconds : wall time of the whole call.
    extra_outputs : other files written (e.g. the raster of :func:`segment`).
    """

    out: Path
    pixels: int
    chunks: int
    chunks_skipped: int
    chunks_resumed: int
    seconds: float
    extra_outputs: tuple[Path, ...] = ()

    @property
    def megapixels_per_second(self) -> float:
        """Scene megapixels per second of wall time."""
        return self.pixels / 1e6 / self.seconds if self.seconds > 0 else float("inf")

    @property
    def outputs(self) -> tuple[Path, ...]:
        """Every path written."""
        return (self.out, *self.extra_outputs)

    def summary(self) -> str:
        """One line for logs and the CLI."""
        return (
            f"{self.pixels / 1e6:.2f} MP in {self.chunks} chunks ({self.chunks_skipped} nodata "
            f"skipped, {self.chunks_resumed} resumed) in {self.seconds:.1f} s "
            f"({self.megapixels_per_second:.2f} MP/s) -> {', '.join(map(str, self.outputs))}"
        )


@dataclass(frozen=True)
class RunnerSpec:
    """How a worker builds (once) its model runner: plain values, cheap to pickle."""

    model: str | None
    device: str = "auto"
    precision: Precision = "auto"
    bands: tuple[int, ...] | None = None
    engine: Engine = "torch"
    model_sha256: str | None = None
    """The checkpoint's content hash: workers load the copy shipped under it (geounet.worker)."""


@dataclass(frozen=True)
class ChunkTask:
    """Everything one chunk task needs; paths and windows only, never pixels."""

    info: SceneInfo
    chunk: ChunkWindow
    grid: TileGrid
    runner: RunnerSpec
    store: StoreSpec
    batch_size: int | None = None
    threshold: float | None = None
    retry: RetryPolicy = DEFAULT_RETRY


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


# --------------------------------------------------------------------------------------
# the task (runs on a worker)
# --------------------------------------------------------------------------------------


def _batch_size(runner: Any, batch_size: int | None) -> int:
    if batch_size is not None:
        return batch_size
    device = getattr(runner, "device", None)
    return 1 if getattr(device, "type", "cpu") == "cpu" else 8


def run_chunk(task: ChunkTask) -> dict[str, Any]:
    """Predict one chunk, write its region of the store and mark it done; return small stats.

    Runs on a worker. The model runner is built once per worker process and reused
    (``get_runner`` caches it, keyed by the shipped checkpoint's content hash). Transient
    errors (:class:`TransientError`, other ``OSError``) are retried in the task with backoff
    (``task.retry``), then raised as :class:`TransientError` (for Dask to rerun the task); a
    user error (any other :class:`GeounetError`) is raised at once.
    """
    policy = task.retry
    attempt = 1
    while True:
        try:
            return _run_chunk_once(task)
        except TransientError as exc:
            error: BaseException = exc
        except GeounetError:
            raise
        except OSError as exc:  # zarr/fsspec writes, network file systems
            error = exc
        if attempt >= policy.attempts:
            if isinstance(error, TransientError):
                raise error
            raise TransientError(
                f"chunk at row {task.chunk.y0}, column {task.chunk.x0} failed {attempt} times "
                f"({type(error).__name__}: {error})"
            ) from error
        log.warning("chunk at row %d, column %d: %s; retry %d of %d in %.1f s", task.chunk.y0,
                    task.chunk.x0, error, attempt, policy.attempts - 1, policy.delay(attempt))
        time.sleep(policy.delay(attempt))
        attempt += 1


def run_chunk_task(task: ChunkTask) -> Any:
    """:func:`run_chunk` as a Dask task submitted with ``retries=``: a user error is returned
    as a :class:`geounet.cluster.TaskFailure` (raised by :func:`geounet.cluster.run_tasks`),
    so Dask reruns only transient failures."""
    from geounet.cluster import TaskFailure

    try:
        return run_chunk(task)
    except TransientError:
        raise
    except GeounetError as exc:
        return TaskFailure(exc)


def _run_chunk_once(task: ChunkTask) -> dict[str, Any]:
    from geounet import output
    from geounet.inference import classify, get_runner, predict_chunk
    from geounet.worker import model_path

    start = time.perf_counter()
    chunk = task.chunk
    spec = task.runner
    runner = get_runner(model_path(spec.model, spec.model_sha256), spec.device, spec.precision,
                        spec.bands, engine=spec.engine)
    result = predict_chunk(task.info, chunk, task.grid, runner,
                           batch_size=_batch_size(runner, task.batch_size))
    pixels = int(chunk.height * chunk.width)
    if result is None:
        record = {"pixels": pixels, "valid": 0, "skipped": True}
    else:
        probabilities, valid = result
        mask = classify(probabilities, task.threshold, valid)
        output.write_chunk(task.store, chunk.y0, chunk.x0, probabilities, mask, valid)
        record = {"pixels": pixels, "valid": int(valid.sum()), "skipped": False}
    record["seconds"] = time.perf_counter() - start
    output.mark_done(task.store, chunk.y0, chunk.x0, record)
    return record


# --------------------------------------------------------------------------------------
# validation and planning (cheap, before any heavy work)
# --------------------------------------------------------------------------------------


def runs_here(client: SchedulerLike) -> bool:
    """Whether tasks run on this machine (local cluster or in-process), not a remote scheduler
    (given, or set in ``DASK_SCHEDULER_ADDRESS``)."""
    from geounet.cluster import configured_address, is_in_process

    if client is None:
        return configured_address() is None
    return is_in_process(client)


def _check_device(device: str, precision: Precision) -> None:
    """Raise DeviceError now, not in a task, when this machine cannot run ``device``/``precision``."""
    from geounet.inference import resolve_device, resolve_precision

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the emulated-bf16 warning comes again from the worker
        resolve_precision(precision, resolve_device(device))


def _check_engine(engine: Engine, device: str, precision: Precision) -> None:
    """Raise now, not in a task, when this machine cannot run ``engine`` (package missing)."""
    from geounet.engines import resolve_engine
    from geounet.inference import resolve_device, resolve_precision

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
    if "://" in text or text.startswith("/vsi"):
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
    from geounet.worker import file_sha256

    return file_sha256(path)


def _plain(value: Any) -> Any:
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
) -> Plan:
    """Validate a prediction run cheaply (no model forward) and plan its grid.

    ``check_device=False`` skips checking that this machine has the device (for a remote
    scheduler whose workers have GPUs this machine lacks). ``resample``/``resampling`` and
    ``rescale`` fit the scene to the model card (:mod:`geounet.fitting`): the planned scene
    may be a warped view at the card's pixel size, and its values may be mapped into the
    card's range (percentile and bit-depth rescales read a sample of windows, nothing else
    reads pixels).

    Raises
    ------
    SceneError, GeoreferenceError, CheckpointError, IncompatibleSceneError, TileSizeError,
    DeviceError, InputError
    """
    from geounet.inference import default_model_path
    from geounet.model import load_checkpoint
    from geounet.raster import open_scene
    from geounet.tiling import plan_tiles

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
            stacklevel=3,
        )
    model_path = Path(model) if model is not None else default_model_path()
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
    from geounet.fitting import plan_resample, plan_rescale

    if max(card.bands) <= info.count:  # else check_scene names the band problem
        info = plan_resample(info, card.pixel_size, resample, resampling=resampling)
        info = dataclasses.replace(info, rescale=plan_rescale(info, card, rescale))
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
                        model_print["sha256"])
    run = {
        "scene": _fingerprint(scene),
        "model": model_print,
        "bands": list(card.bands),
        "chunk_size": chunk_size,
        "tile_size": tile_size,
        "precision": precision,
        "engine": engine,
        "probability_dtype": probability_dtype,
        "threshold": threshold,
        # as JSON gives them back, so a resumed run compares equal to its stored record
        "warp": _plain(info.warp),
        "rescale": _plain(info.rescale),
    }
    return Plan(info, card, grid, runner, chunk_size, tile_size, run)


# --------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------


def _store_attrs(plan: Plan) -> dict[str, Any]:
    from geounet._version import __version__

    return {
        "model_card": plan.card.to_dict(),
        "tile_size": plan.tile_size,
        "version": __version__,
        "scene": os.path.basename(plan.info.path),
        # how the scene was fitted to the model: the grid of a warped view (the store's own
        # grid then), the value map; None for a scene read as it is
        "scene_warp": _plain(plan.info.warp),
        "scene_rescale": _plain(plan.info.rescale),
    }


def client_path(path: str | os.PathLike[str]) -> str:
    """A path every worker can open: local paths made absolute on the client (workers run in
    other directories, on other machines sharing the file system); URLs and GDAL ``/vsi``
    paths unchanged."""
    text = os.fspath(path)
    if "://" in text or text.startswith("/vsi"):
        return text
    return os.path.abspath(text)


def _keep_for_resume(exc: BaseException, store_path: Path) -> BaseException:
    """The error a failed run raises: ``exc`` with where its completed chunks are kept and how
    to resume (the CLI adds the exact command from ``exc.resume_store``)."""
    from geounet import output

    done = len(output.done_chunks(store_path))
    hint = (f" The {done} chunk(s) completed are kept in {str(store_path)!r}; fix the cause "
            "and run the same command again with --resume (resume=True) to compute only the "
            "missing chunks.")
    log.warning("run failed; %d completed chunk(s) kept in %s for --resume", done, store_path)
    if isinstance(exc, GeounetError):
        try:
            annotated: BaseException = type(exc)(f"{exc}{hint}")
        except Exception:  # noqa: BLE001 - an error class with another signature
            annotated = exc
    else:
        annotated = exc
    annotated.resume_store = str(store_path)  # type: ignore[attr-defined]
    return annotated


def _compute_store(
    plan: Plan,
    store_path: Path,
    *,
    probability_dtype: ProbabilityDtype,
    threshold: float | None,
    batch_size: int | None,
    resume: bool,
    client: SchedulerLike,
    workers: int | None,
    progress: ProgressCallback | None,
) -> tuple[int, int, int]:
    """Fill (or finish) the store at ``store_path``; return (chunks, skipped, resumed).

    Every task gets absolute paths (resolved here, on the client) and the model's content
    hash; the model's bytes are shipped to the workers. A failure keeps the store and its
    completed chunks for ``resume``.
    """
    from geounet import cluster, output

    client = cluster.resolve(client, workers)
    store_path = Path(client_path(store_path))
    info = dataclasses.replace(plan.info, path=client_path(plan.info.path))
    resuming = resume and output.check_resumable(store_path, plan.run)
    chunks = plan.grid.chunks()
    done = output.done_chunks(store_path) if resuming else {}
    todo = [c for c in chunks if output.chunk_id(c.y0, c.x0) not in done]
    resumed = len(chunks) - len(todo)
    skipped = sum(1 for record in done.values() if record.get("skipped"))
    state = {"done": resumed, "pixels": sum(int(r.get("pixels", 0)) for r in done.values())}
    log.info("%d chunk(s): %d to compute, %d already done", len(chunks), len(todo), resumed)
    with contextlib.ExitStack() as stack:
        # reach the scheduler (or start the local cluster) before anything is written
        on = stack.enter_context(
            cluster.scheduler(client, workers=workers, device=plan.runner.device,
                              tasks=len(todo))
        ) if todo else None
        runner = plan.runner
        if on is not None and runner.model is not None:
            runner = dataclasses.replace(runner, model_sha256=cluster.ship_model(
                on, runner.model, runner.model_sha256))
        if resuming:
            log.info("resuming the interrupted run in %s", store_path)
        spec, _ = prepare_store(plan, store_path, probability_dtype=probability_dtype,
                                resume=resuming)
        if progress is not None:
            progress(state["done"], len(chunks), state["pixels"])

        def on_result(record: dict[str, Any]) -> None:
            state["done"] += 1
            state["pixels"] += int(record["pixels"])
            if progress is not None:
                progress(state["done"], len(chunks), state["pixels"])

        policy = cluster.DEFAULT_RETRY
        tasks = [ChunkTask(info, chunk, plan.grid, runner, spec, batch_size, threshold, policy)
                 for chunk in todo]
        token = uuid.uuid4().hex[:12]
        keys = [f"geounet-chunk-{chunk.y0}-{chunk.x0}-{token}" for chunk in todo]
        if on is not None:
            try:
                records = cluster.run_tasks(run_chunk_task, tasks, on, keys=keys,
                                            workers=workers, on_result=on_result,
                                            retries=policy.task_retries)
            except Exception as exc:  # noqa: BLE001 - an interruption (Ctrl-C) keeps it too
                annotated = _keep_for_resume(exc, store_path)
                if annotated is exc:
                    raise
                raise annotated from exc
            skipped += sum(1 for record in records if record.get("skipped"))
    return len(chunks), skipped, resumed


def predict(
    scene: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] | None = None,
    bands: tuple[int, ...] | None = None,
    chunk_size: int = 2048,
    tile_size: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    precision: Precision = "auto",
    probability_dtype: ProbabilityDtype = "uint8",
    threshold: float | None = None,
    overwrite: bool = False,
    resume: bool = False,
    allow_no_crs: bool = False,
    client: SchedulerLike = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    resample: ResampleMode = "auto",
    resampling: Resampling = "auto",
    rescale: str | tuple[float, float] | None = None,
    engine: Engine = "torch",
) -> PredictResult:
    """Run the U-Net over a scene, chunk by chunk, into a Zarr store or a Cloud-Optimized GeoTIFF.

    Parameters
    ----------
    scene : GeoTIFF / COG / VRT / any GDAL path.
    out : ``*.zarr`` (Zarr v3 store) or ``*.tif`` (COG, made from a temporary store).
    model : geounet checkpoint (``.pt``); default: the built-in model.
    bands : 1-based scene bands fed to the model; default: the model card's.
    chunk_size : chunk core side (a multiple of ``2**depth``): the unit of scheduling, I/O and
        output writing, and the Zarr chunk side.
    tile_size : model input side; default: about 1024 px tile cores for valid-padding models,
        512 px tiles for same-padding ones (:func:`geounet.tiling.default_tile_size`).
    batch_size : tiles per model call; default 1 on CPU, 8 on CUDA.
    device, precision : where and how the model runs (``auto`` picks the fastest correct one).
    probability_dtype : ``uint8`` (``round(p * 255)``) or ``float32``.
    threshold : probability a class needs to win a pixel; default argmax.
    overwrite : replace an existing output.
    resume : finish an interrupted run with the same settings from its completed chunks.
    allow_no_crs : accept a scene without CRS (outputs in pixel coordinates, with a warning).
    client : a ``distributed.Client``, a scheduler address, ``"threads"`` or ``"synchronous"``;
        default: a local cluster of worker processes on this machine.
    workers : worker processes of the local cluster (threads for ``"threads"``).
    progress : ``callback(chunks_done, chunks_total, pixels_done)``.
    resample : ``auto`` (default): a scene more than 1.25x off the model's pixel size is read
        through a GDAL WarpedVRT at the model's pixel size; ``always``: whenever they differ;
        ``error``: never (a scene more than 2x off is refused). The outputs are then on the
        warped grid (same CRS, the model's pixel size).
    resampling : GDAL resampling of that warp; ``auto`` (default): bilinear when the scene is
        finer than the model, lanczos when it is coarser.
    rescale : map the scene's values into the model's range: ``"percentile"``,
        ``"percentile:LOW,HIGH"``, ``"bits"``, ``"bits:N"``, ``"MIN,MAX"`` or ``(min, max)``;
        required when the scene's data type differs from the model's.
    engine : ``torch`` (default), ``onnxruntime``, ``openvino`` or ``auto`` (a rule on the
        CPU and the installed packages) (:mod:`geounet.engines`; exported on the worker,
        cached next to the checkpoint).

    Returns
    -------
    PredictResult

    Examples
    --------
    >>> import geounet
    >>> result = geounet.predict("scene.tif", "pred.zarr", model="model.pt")  # doctest: +SKIP
    >>> result.megapixels_per_second  # doctest: +SKIP
    """
    from geounet import output

    start = time.perf_counter()
    fmt = output.check_output(out, overwrite=overwrite)
    store_path = output.temporary_path(out, "" if fmt == "zarr" else ".zarr")
    _check_partial_store(store_path, resume=resume, overwrite=overwrite)
    plan = plan_prediction(
        scene, model=model, bands=bands, chunk_size=chunk_size, tile_size=tile_size,
        device=device, precision=precision, probability_dtype=probability_dtype,
        threshold=threshold, allow_no_crs=allow_no_crs, check_device=runs_here(client),
        resample=resample, resampling=resampling, rescale=rescale,
        engine=engine,
    )
    out = Path(out)
    chunks, skipped, resumed = _compute_store(
        plan, store_path, probability_dtype=probability_dtype, threshold=threshold,
        batch_size=batch_size, resume=resume, client=client, workers=workers, progress=progress,
    )
    with _prediction_kept(store_path, "writing " + str(out)):
        _publish_raster(store_path, out, fmt, overwrite=overwrite)
    output.remove_path(store_path)
    result = PredictResult(
        out=out,
        pixels=plan.info.height * plan.info.width,
        chunks=chunks,
        chunks_skipped=skipped,
        chunks_resumed=resumed,
        seconds=time.perf_counter() - start,
    )
    log.debug("predict: %s", result.summary())
    return result


def segment(
    scene: str | os.PathLike[str],
    out_gpkg: str | os.PathLike[str],
    *,
    raster_out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    vectorize_options: dict[str, Any] | None = None,
    **predict_options: Any,
) -> PredictResult:
    """Segment a scene end to end: predict into a Zarr store, then vectorize to a GeoPackage.

    Parameters
    ----------
    scene : the scene.
    out_gpkg : GeoPackage to write (one layer per class).
    raster_out : also keep the prediction raster here (``.zarr`` or ``.tif``); default: the
        prediction goes to a temporary store that is deleted at the end.
    overwrite : replace existing outputs.
    vectorize_options : keyword arguments for :func:`geounet.vectorization.vectorize`.
    **predict_options : keyword arguments of :func:`predict` (model, chunk_size, ...).

    Examples
    --------
    >>> geounet.segment("scene.tif", "objects.gpkg", model="model.pt")  # doctest: +SKIP
    """
    from geounet import output

    start = time.perf_counter()
    out_gpkg = Path(out_gpkg)
    if out_gpkg.suffix.lower() != ".gpkg":
        raise InputError(
            f"output {str(out_gpkg)!r} is not a GeoPackage; name it with the .gpkg suffix."
        )
    fmt = output.output_format(raster_out) if raster_out is not None else None
    anchor = Path(raster_out) if raster_out is not None else out_gpkg
    store_path = output.temporary_path(anchor, ".zarr" if fmt != "zarr" else "")
    # vectors the interrupted run already finished (it stopped later, writing the COG)
    vectors_done = bool(predict_options.get("resume")) and output.recorded_output(store_path,
                                                                                  out_gpkg)
    if not vectors_done:
        output.check_new_path(out_gpkg, overwrite=overwrite)
    if raster_out is not None:
        output.check_output(raster_out, overwrite=overwrite)
    from geounet.vectorization import vectorize

    allowed = {name for name, param in inspect.signature(predict).parameters.items()
               if param.kind is param.KEYWORD_ONLY} - {"overwrite"}
    unknown = sorted(set(predict_options) - allowed)
    if unknown:
        raise InputError(
            f"segment() got unknown option(s) {', '.join(unknown)}; give keywords of "
            f"geounet.predict ({', '.join(sorted(allowed))}) or put vectorize keywords in "
            "vectorize_options."
        )
    try:  # vectorize runs after the prediction: check its keywords before that work
        inspect.signature(vectorize).bind(None, out_gpkg, overwrite=overwrite,
                                          **(vectorize_options or {}))
    except TypeError as exc:
        raise InputError(
            f"vectorize_options {vectorize_options!r} do not fit geounet.vectorize ({exc}); "
            "use its keywords, e.g. min_area, simplify, regularize, fill_holes, centerlines."
        ) from None
    keep = {k: predict_options.pop(k) for k in ("resume", "client", "workers", "progress",
                                                "batch_size") if k in predict_options}
    probability_dtype = predict_options.get("probability_dtype", "uint8")
    threshold = predict_options.get("threshold")
    _check_partial_store(store_path, resume=keep.get("resume", False), overwrite=overwrite)
    plan = plan_prediction(scene, check_device=runs_here(keep.get("client")), **predict_options)
    if plan.info.crs_wkt is None:  # allow_no_crs let predict through; polygons need a CRS
        raise GeoreferenceError(
            f"scene {str(scene)!r} has no CRS, and segment writes GeoPackage polygons, which "
            "need one; assign a CRS to the scene (e.g. gdal_edit.py -a_srs EPSG:32633), or run "
            "`geounet predict --allow-no-crs` for a prediction raster in pixel coordinates."
        )
    chunks, skipped, resumed = _compute_store(
        plan, store_path, probability_dtype=probability_dtype, threshold=threshold,
        batch_size=keep.get("batch_size"), resume=keep.get("resume", False),
        client=keep.get("client"), workers=keep.get("workers"), progress=keep.get("progress"),
    )
    extra: tuple[Path, ...] = ()
    # The store stays resumable (completion markers kept) until every output is written: a
    # failure or Ctrl-C while vectorizing or writing the COG keeps it for --resume.
    if vectors_done:
        log.info("%s was finished by the interrupted run; not vectorizing again", out_gpkg)
    else:
        with _prediction_kept(store_path, "vectorizing into " + str(out_gpkg)):
            vectorize(store_path, out_gpkg, overwrite=overwrite, **(vectorize_options or {}))
        output.record_output(store_path, out_gpkg)  # a resume after a COG failure keeps it
    if raster_out is not None:
        raster_out = Path(raster_out)
        with _prediction_kept(store_path, "writing " + str(raster_out)):
            _publish_raster(store_path, raster_out, fmt, overwrite=overwrite)
        extra = (raster_out,)
    output.remove_path(store_path)
    result = PredictResult(
        out=out_gpkg,
        pixels=plan.info.height * plan.info.width,
        chunks=chunks,
        chunks_skipped=skipped,
        chunks_resumed=resumed,
        seconds=time.perf_counter() - start,
        extra_outputs=extra,
    )
    log.debug("segment: %s", result.summary())
    return result


def _publish_raster(store: Path, out: Path, fmt: Any, *, overwrite: bool) -> None:
    """Move a finished store into place as ``out`` (.zarr, finalized first), or stream it
    into a COG (.tif); the store is left in place, still resumable, for a COG."""
    from geounet import output

    if fmt == "zarr":
        output.finalize_store(store)
        output.replace_path(store, out)
    else:
        output.write_cog(store, out, overwrite=overwrite)


def prepare_store(
    plan: Plan,
    store_path: Path,
    *,
    probability_dtype: ProbabilityDtype,
    resume: bool,
) -> tuple[StoreSpec, dict[str, dict[str, Any]]]:
    """Open an interrupted run's store (``resume`` and same settings) or create a new one.

    Returns the store and the completion records of its finished chunks (empty for a new
    store). A partial store of an earlier run is discarded unless resumed. Used by
    :mod:`geounet.batch`, which submits the remaining chunks itself.

    Raises
    ------
    InputError
        ``resume`` with a store started by other settings (scene, model, sizes, dtype).
    """
    from geounet import output

    if resume and output.check_resumable(store_path, plan.run):
        return StoreSpec(str(store_path), probability_dtype), output.done_chunks(store_path)
    if store_path.exists():
        log.info("discarding the partial store of an earlier run: %s", store_path)
        output.remove_path(store_path)
    info = plan.info
    spec = output.create_store(
        store_path,
        height=info.height,
        width=info.width,
        classes=plan.card.classes,
        chunk_size=plan.chunk_size,
        crs_wkt=info.crs_wkt,
        transform=tuple(info.transform) if info.crs_wkt else None,
        probability_dtype=probability_dtype,
        attrs=_store_attrs(plan),
        run=plan.run,
    )
    return spec, {}


def _check_partial_store(store_path: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to silently discard an interrupted run's store: name ``--resume`` and
    ``--overwrite`` (which discards it; :func:`_compute_store` does that).

    Raises
    ------
    OutputExistsError
        When ``store_path`` exists and neither ``resume`` nor ``overwrite`` is set.
    """
    from geounet import output

    if resume or overwrite or not store_path.exists():
        return
    done = len(output.done_chunks(store_path))
    raise OutputExistsError(
        f"an interrupted run left a partial prediction in {str(store_path)!r} ({done} "
        "chunk(s) done); pass resume=True (--resume) to finish it with the same settings, or "
        "overwrite=True (--overwrite) to discard it and start over."
    )


RESUME_HINT = "rerun the same command with --resume (resume=True) to finish the job"


@contextlib.contextmanager
def _prediction_kept(store_path: Path, step: str) -> Iterator[None]:
    """Around a step after prediction: any failure or Ctrl-C keeps the finished prediction
    (its store stays under the resumable name) and says how to finish the job.

    A failure becomes :class:`PredictionKeptError` (``store`` names the kept store); a
    ``KeyboardInterrupt`` is logged with the same hint, tagged with ``geounet_kept_store`` and
    re-raised (the CLI prints the exact command to run).
    """
    try:
        yield
    except KeyboardInterrupt as exc:
        log.error("interrupted while %s; the finished prediction is kept in %s: %s",
                  step, store_path, RESUME_HINT)
        exc.geounet_kept_store = str(store_path)  # type: ignore[attr-defined]
        raise
    except Exception as exc:
        raise PredictionKeptError(
            f"{step} failed ({exc}); the finished prediction is kept in {str(store_path)!r}: "
            f"fix the cause, then {RESUME_HINT} without predicting again.",
            store=str(store_path),
        ) from exc
