"""The one orchestrator: validate, plan chunks, run one Dask task per chunk, write Zarr/COG, vectorize.

Each task carries only the scene description, its chunk window, the tile grid, the store path
and the runner spec (model path, device, precision); it predicts its chunk on the worker,
writes its region of the Zarr store there, leaves a completion marker and returns a few
numbers. No pixel array passes through the scheduler, so memory is bounded by chunk size,
batch size and worker count, never by scene size.

This module runs a plan: the chunk task (what a worker runs), filling the store, and
:func:`predict` / :func:`segment`. Planning lives in :mod:`geounet.run.planning`, the store's life
in a run (create or resume, keep for ``--resume``, publish) in :mod:`geounet.run.store`; their
public names are importable from here too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geounet.config import TTA, Engine, Precision, ProbabilityDtype, ResampleMode, Resampling
from geounet.distributed.cluster import DEFAULT_RETRY, RetryPolicy, SchedulerLike
from geounet.errors import GeoreferenceError, GeounetError, InputError, TransientError
from geounet.output import StoreSpec
from geounet.run.planning import (  # re-exported: the plan is part of this module's face
    DEFAULT_MAX_PIXELS,
    Plan,
    RunnerSpec,
    check_vectorize_options,
    plan_prediction,
    runs_here,
)
from geounet.run.store import (  # re-exported: the store's life in a run
    RESUME_HINT,  # noqa: F401 - re-exported
    check_partial_store,
    client_path,
    keep_for_resume,
    prediction_kept,
    prepare_store,
    publish_raster,
)

if TYPE_CHECKING:
    from geounet.engine.tiling import ChunkWindow, TileGrid
    from geounet.raster import SceneInfo

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, int], None]
"""``progress(chunks_done, chunks_total, pixels_computed)``, called as chunks finish: chunks
resumed from an earlier run count as done, their pixels are not in ``pixels_computed`` (so a
rate from it is this run's)."""


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


# --------------------------------------------------------------------------------------
# the task (runs on a worker)
# --------------------------------------------------------------------------------------


def _batch_size(runner: Any, batch_size: int | None) -> int:
    if batch_size is not None:
        return batch_size
    device = getattr(runner, "device", None)
    return 1 if getattr(device, "type", "cpu") == "cpu" else 8


@dataclass(frozen=True)
class SeamTask:
    """What finishing one chunk's seams needs (same padding): paths and windows only."""

    chunk: ChunkWindow
    grid: TileGrid
    store: StoreSpec
    threshold: float | None = None
    retry: RetryPolicy = DEFAULT_RETRY


def seam_tasks(grid: TileGrid, store: StoreSpec, threshold: float | None = None,
               retry: RetryPolicy = DEFAULT_RETRY) -> list[SeamTask]:
    """Round 2, once every chunk has run its tiles: a :class:`SeamTask` for each chunk not
    marked done (same padding: the chunks whose seams wait for their neighbours; none for
    valid padding, whose chunks are done after round 1)."""
    from geounet import output
    done = output.done_chunks(store.path)
    return [SeamTask(chunk, grid, store, threshold, retry) for chunk in grid.chunks()
            if output.chunk_id(chunk.y0, chunk.x0) not in done]


def run_chunk(task: ChunkTask) -> dict[str, Any]:
    """Predict one chunk, write its region of the store and mark it done; return small stats.

    Runs on a worker. The model runner is built once per worker process and reused
    (``get_runner`` caches it, keyed by the shipped checkpoint's content hash). Each tile of
    the grid is run by one chunk only: for a same-padding model the chunk also keeps its
    tiles' outputs near its seams in the store, and its seam pixels are finished by
    :func:`run_seams` once its neighbours have run (it is marked done then). Transient
    errors (:class:`TransientError`, other ``OSError``) are retried in the task with backoff
    (``task.retry``), then raised as :class:`TransientError` (for Dask to rerun the task); a
    user error (any other :class:`GeounetError`) is raised at once.
    """
    return _retrying(_run_chunk_once, task, task.chunk, task.retry)


def run_seams(task: SeamTask) -> dict[str, Any]:
    """Finish one chunk's seam pixels from the tile outputs it and its neighbours kept
    (:func:`geounet.engine.inference.blend_seams`), write them and mark the chunk done; retried like
    :func:`run_chunk`."""
    return _retrying(_run_seams_once, task, task.chunk, task.retry)


def _retrying(once: Callable[[Any], dict[str, Any]], task: Any, chunk: ChunkWindow,
              policy: RetryPolicy) -> dict[str, Any]:
    """``once(task)``, retried on transient errors as :func:`run_chunk` says."""
    attempt = 1
    while True:
        try:
            return once(task)
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
                f"chunk at row {chunk.y0}, column {chunk.x0} failed {attempt} times "
                f"({type(error).__name__}: {error})"
            ) from error
        log.warning("chunk at row %d, column %d: %s; retry %d of %d in %.1f s", chunk.y0,
                    chunk.x0, error, attempt, policy.attempts - 1, policy.delay(attempt))
        time.sleep(policy.delay(attempt))
        attempt += 1


def run_chunk_task(task: ChunkTask) -> Any:
    """:func:`run_chunk` as a Dask task submitted with ``retries=``: a user error is returned
    as a :class:`geounet.distributed.cluster.TaskFailure` (raised by :func:`geounet.distributed.cluster.run_tasks`),
    so Dask reruns only transient failures."""
    return _dask_task(run_chunk, task)


def run_seams_task(task: SeamTask) -> Any:
    """:func:`run_seams` as a Dask task, as :func:`run_chunk_task`."""
    return _dask_task(run_seams, task)


def _dask_task(run: Callable[[Any], dict[str, Any]], task: Any) -> Any:
    from geounet.distributed.cluster import TaskFailure

    try:
        return run(task)
    except TransientError:
        raise
    except GeounetError as exc:
        return TaskFailure(exc)


def _run_chunk_once(task: ChunkTask) -> dict[str, Any]:
    from geounet import output
    from geounet.distributed.worker import model_path
    from geounet.engine.blend import pack_pieces
    from geounet.engine.inference import classify, compute_chunk
    from geounet.engine.runner import get_runner

    start = time.perf_counter()
    chunk, grid = task.chunk, task.grid
    spec = task.runner
    runner = get_runner(model_path(spec.model, spec.model_sha256), spec.device, spec.precision,
                        spec.bands, engine=spec.engine)
    result = compute_chunk(task.info, chunk, grid, runner,
                           batch_size=_batch_size(runner, task.batch_size), tta=spec.tta)
    valid = int(result.valid.sum()) if result is not None else 0
    if valid:
        mask = classify(result.probabilities, task.threshold, result.valid)
        output.write_chunk(task.store, chunk.y0, chunk.x0, result.probabilities, mask,
                           result.valid)
    record = {"pixels": int(chunk.height * chunk.width), "valid": valid, "skipped": not valid,
              "seconds": time.perf_counter() - start}
    if grid.neighbours(chunk):  # the seam exchange: leave this chunk's pieces for the others
        pieces = result.pieces if result is not None else ()
        output.save_seam_data(task.store, chunk.y0, chunk.x0,
                              {**pack_pieces(pieces), "record": np.array(json.dumps(record))})
    if not (valid and grid.seam_rects(chunk)):
        output.mark_done(task.store, chunk.y0, chunk.x0, record)
    return record


def _run_seams_once(task: SeamTask) -> dict[str, Any]:
    from geounet import output
    from geounet.engine.blend import unpack_pieces
    from geounet.engine.inference import blend_seams, classify

    start = time.perf_counter()
    chunk, grid, store = task.chunk, task.grid, task.store
    own = output.load_seam_data(store.path, chunk.y0, chunk.x0)
    record = json.loads(str(own["record"]))
    pieces = unpack_pieces(own)
    for other in grid.neighbours(chunk):
        pieces += unpack_pieces(output.load_seam_data(store.path, other.y0, other.x0))
    for (y0, x0, _, _), probs, valid in blend_seams(grid, chunk, pieces):
        output.write_chunk(store, y0, x0, probs, classify(probs, task.threshold, valid), valid)
    record["seconds"] += time.perf_counter() - start
    output.mark_done(store, chunk.y0, chunk.x0, record)
    return record


# --------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------


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
    from geounet import output
    from geounet.distributed import cluster
    client = cluster.resolve(client, workers)
    store_path = Path(client_path(store_path))
    info = dataclasses.replace(plan.info, path=client_path(plan.info.path))
    resuming = resume and output.check_resumable(store_path, plan.run)
    chunks = plan.grid.chunks()
    done = output.done_chunks(store_path) if resuming else {}
    ran = output.seam_data_chunks(store_path) if resuming else set()
    unfinished = [c for c in chunks if output.chunk_id(c.y0, c.x0) not in done]
    todo = [c for c in unfinished if output.chunk_id(c.y0, c.x0) not in ran]
    resumed = len(chunks) - len(todo)
    state = {"done": resumed, "pixels": 0}  # pixels computed by this run (the rate's basis)
    log.info("%d chunk(s): %d to compute, %d already done", len(chunks), len(todo), resumed)
    with contextlib.ExitStack() as stack:
        # reach the scheduler (or start the local cluster) before anything is written
        on = stack.enter_context(
            cluster.scheduler(client, workers=workers, device=plan.runner.device,
                              tasks=len(todo))
        ) if unfinished else None
        runner = plan.runner
        if on is not None and runner.model is not None and todo:
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
        token = uuid.uuid4().hex[:12]
        if on is not None:
            try:
                # round 1: every chunk runs its own tiles; round 2 (same padding): the chunks
                # with seams blend them from their neighbours' kept tile outputs
                tasks = [ChunkTask(info, chunk, plan.grid, runner, spec, batch_size, threshold,
                                   policy) for chunk in todo]
                cluster.run_tasks(run_chunk_task, tasks, on, workers=workers,
                                  keys=[f"geounet-chunk-{c.y0}-{c.x0}-{token}" for c in todo],
                                  on_result=on_result, retries=policy.task_retries)
                seams = seam_tasks(plan.grid, spec, threshold, policy)
                if seams:
                    cluster.run_tasks(run_seams_task, seams, on, workers=workers,
                                      retries=policy.task_retries,
                                      keys=[f"geounet-seams-{t.chunk.y0}-{t.chunk.x0}-{token}"
                                            for t in seams])
            except Exception as exc:  # noqa: BLE001 - an interruption (Ctrl-C) keeps it too
                annotated = keep_for_resume(exc, store_path)
                if annotated is exc:
                    raise
                raise annotated from exc
    skipped = sum(1 for record in output.done_chunks(store_path).values()
                  if record.get("skipped"))
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
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    tta: TTA = "none",
    assets: str | Sequence[str] | None = None,
) -> PredictResult:
    """Run the U-Net over a scene, chunk by chunk, into a Zarr store or a Cloud-Optimized GeoTIFF.

    Parameters
    ----------
    scene : GeoTIFF / COG / VRT / any GDAL path, or a STAC item (read as its ``assets``).
    out : ``*.zarr`` (Zarr v3 store) or ``*.tif`` (COG, made from a temporary store).
    model : geounet checkpoint (``.pt``); default: the built-in model.
    bands : 1-based scene bands fed to the model; default: the model card's.
    chunk_size : chunk core side (a multiple of ``2**depth``): the unit of scheduling, I/O and
        output writing, and the Zarr chunk side.
    tile_size : model input side; default: about 1024 px tile cores, plus the halo
        (:func:`geounet.engine.tiling.default_tile_size`). The chunk side is rounded to whole tile
        cores, so each tile runs once.
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
    progress : ``callback(chunks_done, chunks_total, pixels_computed)``.
    resample : ``auto`` (default): a scene more than 1.25x off the model's pixel size is read
        through a GDAL WarpedVRT at the model's pixel size, a scene more than 4x off
        (:data:`geounet.config.AUTO_RESAMPLE_MAX_FACTOR`) is refused; ``always``: whenever they differ;
        ``error``: never (a scene more than 2x off is refused). The outputs are then on the
        warped grid (same CRS, the model's pixel size).
    resampling : GDAL resampling of that warp; ``auto`` (default): bilinear when the scene is
        finer than the model, lanczos when it is coarser.
    rescale : map the scene's values into the model's range: ``"percentile"``,
        ``"percentile:LOW,HIGH"``, ``"bits"``, ``"bits:N"``, ``"MIN,MAX"`` or ``(min, max)``;
        required when the scene's data type differs from the model's.
    engine : ``torch`` (default), ``onnxruntime``, ``openvino`` or ``auto`` (a rule on the
        CPU and the installed packages) (:mod:`geounet.engine.backends`; exported on the worker,
        cached next to the checkpoint).
    max_pixels : refuse (:class:`~geounet.errors.RunTooLargeError`, before any pixel is read)
        a run whose model grid (the scene after any resampling) has more pixels than this;
        default :data:`geounet.run.planning.DEFAULT_MAX_PIXELS` (4 gigapixels); 0 or None: no
        limit.
    tta : test-time augmentation: ``none`` (default), ``flips`` (each tile also run mirrored
        left-right, up-down and both: 4x the model work) or ``d4`` (also the quarter turns: 8x);
        the softmax probabilities are averaged over the transforms, each undone. Every tile
        gets the same transforms, so the output stays exact and chunk-invariant
        (docs/predict.md gives the measured cost and gain).
    assets : a STAC item's asset keys or ``eo:bands`` common names read as its bands, in the
        model's order (``"red,green,blue"``): :func:`geounet.raster.stac.open_item`.

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
    check_partial_store(store_path, resume=resume, overwrite=overwrite)
    plan = plan_prediction(
        scene, model=model, bands=bands, chunk_size=chunk_size, tile_size=tile_size,
        device=device, precision=precision, probability_dtype=probability_dtype,
        threshold=threshold, allow_no_crs=allow_no_crs, check_device=runs_here(client),
        resample=resample, resampling=resampling, rescale=rescale,
        engine=engine, max_pixels=max_pixels, tta=tta, assets=assets,
    )
    out = Path(out)
    chunks, skipped, resumed = _compute_store(
        plan, store_path, probability_dtype=probability_dtype, threshold=threshold,
        batch_size=batch_size, resume=resume, client=client, workers=workers, progress=progress,
    )
    with prediction_kept(store_path, "writing " + str(out)):
        publish_raster(store_path, out, fmt, overwrite=overwrite)
    output.remove_path(store_path)
    result = _result(out, plan, (chunks, skipped, resumed), start)
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
    # vectorize runs after the prediction: check its keywords before that work
    check_vectorize_options(vectorize_options)
    keep = {k: predict_options.pop(k) for k in ("resume", "client", "workers", "progress",
                                                "batch_size") if k in predict_options}
    probability_dtype = predict_options.get("probability_dtype", "uint8")
    threshold = predict_options.get("threshold")
    check_partial_store(store_path, resume=keep.get("resume", False), overwrite=overwrite)
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
        with prediction_kept(store_path, "vectorizing into " + str(out_gpkg)):
            vectorize(store_path, out_gpkg, overwrite=overwrite, **(vectorize_options or {}))
        output.record_output(store_path, out_gpkg)  # a resume after a COG failure keeps it
    if raster_out is not None:
        raster_out = Path(raster_out)
        with prediction_kept(store_path, "writing " + str(raster_out)):
            publish_raster(store_path, raster_out, fmt, overwrite=overwrite)
        extra = (raster_out,)
    output.remove_path(store_path)
    result = _result(out_gpkg, plan, (chunks, skipped, resumed), start, extra)
    log.debug("segment: %s", result.summary())
    return result


def _result(out: Path, plan: Plan, counts: tuple[int, int, int], start: float,
            extra: tuple[Path, ...] = ()) -> PredictResult:
    """The result of a run of ``plan`` that wrote ``out`` (and ``extra``), timed from ``start``."""
    chunks, skipped, resumed = counts
    return PredictResult(
        out=out,
        pixels=plan.info.height * plan.info.width,
        chunks=chunks,
        chunks_skipped=skipped,
        chunks_resumed=resumed,
        seconds=time.perf_counter() - start,
        extra_outputs=extra,
    )
