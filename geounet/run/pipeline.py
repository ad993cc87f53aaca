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
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geounet.distributed.cluster import DEFAULT_RETRY, RetryPolicy, SchedulerLike
from geounet.errors import GeounetError, InputError, TransientError, with_settings
from geounet.output import StoreSpec
from geounet.run.eta import (
    WARMUP_TRIES,
    ProgressCallback,
    RunProgress,
    chunk_tiles,
    task_slots,
    warmup_order,
)
from geounet.run.options import PredictOptions
from geounet.run.planning import (  # re-exported: the plan is part of this module's face
    Plan,
    RunnerSpec,
    describe_plan,
    plan_prediction,
    require_crs,
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
    scene_grid,
)

if TYPE_CHECKING:
    from geounet.engine.tiling import ChunkWindow, TileGrid
    from geounet.raster import SceneInfo
    from geounet.vectorization import VectorizeOptions

log = logging.getLogger(__name__)



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
                        spec.bands, engine=spec.engine, calibration=task.info)
    computing = time.perf_counter()
    result = compute_chunk(task.info, chunk, grid, runner,
                           batch_size=_batch_size(runner, task.batch_size), tta=spec.tta)
    compute_seconds = time.perf_counter() - computing
    valid = int(result.valid.sum()) if result is not None else 0
    if valid:
        mask = classify(result.probabilities, task.threshold, result.valid)
        output.write_chunk(task.store, chunk.y0, chunk.x0, result.probabilities, mask,
                           result.valid)
    record = {"pixels": int(chunk.height * chunk.width), "valid": valid, "skipped": not valid,
              "seconds": time.perf_counter() - start, "compute_seconds": compute_seconds,
              "tiles": result.tiles if result is not None else 0,
              "planned_tiles": chunk_tiles(grid, chunk)}
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
    options: PredictOptions,
    *,
    resume: bool,
    client: SchedulerLike,
    workers: int | None,
    progress: ProgressCallback | None,
) -> tuple[int, int, int]:
    """Fill (or finish) the store at ``store_path``; return (chunks, skipped, resumed).

    Every task gets absolute paths (resolved here, on the client) and the model's content
    hash; the model's bytes are shipped to the workers. The plan line is logged once the
    warm-up chunk has measured the ETA (:mod:`geounet.run.eta`). A failure keeps the store
    and its completed chunks for ``resume``.
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
        spec, _ = prepare_store(plan, store_path, probability_dtype=options.probability_dtype,
                                resume=resuming)
        tracker = RunProgress(progress, len(chunks), resumed,
                              sum(chunk_tiles(plan.grid, c) for c in todo),
                              task_slots(on, workers))
        tracker.report()
        if on is None:
            log.info("%s", describe_plan(plan, tracker.plan_eta()))
            return len(chunks), _skipped(store_path), resumed
        policy = cluster.DEFAULT_RETRY
        tasks = [ChunkTask(info, chunk, plan.grid, runner, spec, options.batch_size,
                           options.threshold, policy)
                 for chunk in warmup_order(plan.grid, todo)]
        try:
            _run_rounds(plan, tasks, on, workers, tracker, spec, options.threshold, policy)
        except Exception as exc:  # noqa: BLE001 - an interruption (Ctrl-C) keeps it too
            annotated = keep_for_resume(exc, store_path)
            if annotated is exc:
                raise
            raise annotated from exc
    return len(chunks), _skipped(store_path), resumed


def _skipped(store_path: Path) -> int:
    """Chunks of the store that were all nodata."""
    from geounet import output
    return sum(1 for record in output.done_chunks(store_path).values() if record.get("skipped"))


def _run_rounds(plan: Plan, tasks: list[ChunkTask], on: Any, workers: int | None,
                tracker: RunProgress, spec: StoreSpec, threshold: float | None,
                policy: RetryPolicy) -> None:
    """Round 1: the warm-up chunk(s) alone (:data:`geounet.run.eta.WARMUP_TRIES` at most,
    until one runs the model), the plan line with the ETA, then every other chunk runs its own
    tiles; round 2 (same padding): the chunks with seams blend them from their neighbours'
    kept tile outputs."""
    from geounet.distributed import cluster
    token = uuid.uuid4().hex[:12]

    def run(batch: list[ChunkTask], on_result: Callable[[dict[str, Any]], None]) -> None:
        cluster.run_tasks(run_chunk_task, batch, on, workers=workers,
                          keys=[f"geounet-chunk-{t.chunk.y0}-{t.chunk.x0}-{token}"
                                for t in batch],
                          on_result=on_result, retries=policy.task_retries)

    measured: list[bool] = []
    while tasks and not any(measured) and len(measured) < WARMUP_TRIES:
        run(tasks[:1], lambda record: (measured.append(tracker.clock.measure(record)),
                                       tracker.chunk_done(record)))
        tasks = tasks[1:]
    log.info("%s", describe_plan(plan, tracker.plan_eta()))
    tracker.clock.begin()
    run(tasks, tracker.chunk_done)
    seams = seam_tasks(plan.grid, spec, threshold, policy)
    if seams:
        cluster.run_tasks(run_seams_task, seams, on, workers=workers,
                          retries=policy.task_retries,
                          keys=[f"geounet-seams-{t.chunk.y0}-{t.chunk.x0}-{token}"
                                for t in seams])


def predict(
    scene: str | os.PathLike[str],
    out: str | os.PathLike[str],
    options: PredictOptions | None = None,
    *,
    overwrite: bool = False,
    resume: bool = False,
    client: SchedulerLike = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    **settings: Any,
) -> PredictResult:
    """Run the U-Net over a scene, chunk by chunk, into a Zarr store or a Cloud-Optimized GeoTIFF.

    Parameters
    ----------
    scene : GeoTIFF / COG / VRT / any GDAL path, or a STAC item (read as its ``assets``).
    out : ``*.zarr`` (Zarr v3 store) or ``*.tif`` (COG, made from a temporary store).
    options : what to compute (:class:`geounet.PredictOptions`: model, bands, chunk and tile
        size, device, precision, engine, tta, resampling, ...); default ``PredictOptions()``.
    overwrite : replace an existing output.
    resume : finish an interrupted run with the same settings from its completed chunks.
    client : a ``distributed.Client``, a scheduler address, ``"threads"`` or ``"synchronous"``;
        default: in this process on Dask's threaded scheduler (or ``DASK_SCHEDULER_ADDRESS``).
    workers : worker processes of a local cluster (threads for ``"threads"``).
    progress : ``callback(chunks_done, chunks_total, pixels_computed, eta_seconds)``
        (:data:`geounet.run.eta.ProgressCallback`; a callback of the first three is accepted).
    **settings : fields of :class:`geounet.PredictOptions` as keywords, a shorthand
        (``predict(scene, out, tta="d4")``); with ``options`` they replace its fields. An
        unknown name raises :class:`geounet.errors.UnknownOptionError`.

    Returns
    -------
    PredictResult

    Examples
    --------
    >>> import geounet
    >>> result = geounet.predict("scene.tif", "pred.zarr", model="model.pt")  # doctest: +SKIP
    >>> options = geounet.PredictOptions(model="model.pt", tta="flips")
    >>> result = geounet.predict("scene.tif", "pred.tif", options)  # doctest: +SKIP
    >>> result.megapixels_per_second  # doctest: +SKIP
    """
    from geounet import output
    start = time.perf_counter()
    o = with_settings(PredictOptions, options, settings, "predict")
    fmt = output.check_output(out, overwrite=overwrite)
    store_path = output.temporary_path(out, "" if fmt == "zarr" else ".zarr")
    check_partial_store(store_path, resume=resume, overwrite=overwrite)
    plan = plan_prediction(scene, o, check_device=runs_here(client))
    grid = scene_grid(plan, o.output_grid)
    out = Path(out)
    counts = _compute_store(plan, store_path, o, resume=resume, client=client, workers=workers,
                            progress=progress)
    with prediction_kept(store_path, "writing " + str(out)):
        publish_raster(store_path, out, fmt, overwrite=overwrite, grid=grid)
    output.remove_path(store_path)
    result = _result(out, plan, counts, start)
    log.debug("predict: %s", result.summary())
    return result


def segment(
    scene: str | os.PathLike[str],
    out_gpkg: str | os.PathLike[str],
    options: PredictOptions | None = None,
    *,
    raster_out: str | os.PathLike[str] | None = None,
    vectorize: VectorizeOptions | None = None,
    overwrite: bool = False,
    resume: bool = False,
    client: SchedulerLike = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    **settings: Any,
) -> PredictResult:
    """Segment a scene end to end: predict into a Zarr store, then vectorize to a GeoPackage.

    Parameters
    ----------
    scene : the scene.
    out_gpkg : GeoPackage to write (one layer per class).
    options, overwrite, resume, client, workers, progress, **settings : as for :func:`predict`.
    raster_out : also keep the prediction raster here (``.zarr`` or ``.tif``); default: the
        prediction goes to a temporary store that is deleted at the end.
    vectorize : how the polygons are made (:class:`geounet.VectorizeOptions`); default
        ``VectorizeOptions()``.

    Examples
    --------
    >>> geounet.segment("scene.tif", "objects.gpkg", model="model.pt")  # doctest: +SKIP
    >>> geounet.segment("scene.tif", "objects.gpkg",
    ...                 vectorize=geounet.VectorizeOptions(regularize=True))  # doctest: +SKIP
    """
    from geounet import output
    from geounet.vectorization import VectorizeOptions
    from geounet.vectorization import vectorize as run_vectorize

    start = time.perf_counter()
    o = with_settings(PredictOptions, options, settings, "segment")
    vector = with_settings(VectorizeOptions, vectorize, {}, "segment")
    out_gpkg = Path(out_gpkg)
    if out_gpkg.suffix.lower() != ".gpkg":
        raise InputError(
            f"output {str(out_gpkg)!r} is not a GeoPackage; name it with the .gpkg suffix."
        )
    fmt = output.output_format(raster_out) if raster_out is not None else None
    anchor = Path(raster_out) if raster_out is not None else out_gpkg
    store_path = output.temporary_path(anchor, ".zarr" if fmt != "zarr" else "")
    # vectors the interrupted run already finished (it stopped later, writing the COG)
    vectors_done = resume and output.recorded_output(store_path, out_gpkg)
    if not vectors_done:
        output.check_new_path(out_gpkg, overwrite=overwrite)
    if raster_out is not None:
        output.check_output(raster_out, overwrite=overwrite)
    check_partial_store(store_path, resume=resume, overwrite=overwrite)
    plan = plan_prediction(scene, o, check_device=runs_here(client))
    grid = scene_grid(plan, o.output_grid)
    require_crs(plan.info, scene, "segment")  # allow_no_crs let predict through
    counts = _compute_store(plan, store_path, o, resume=resume, client=client, workers=workers,
                            progress=progress)
    # The store stays resumable (completion markers kept) until every output is written: a
    # failure or Ctrl-C while vectorizing or writing the COG keeps it for --resume.
    if vectors_done:
        log.info("%s was finished by the interrupted run; not vectorizing again", out_gpkg)
    else:
        with prediction_kept(store_path, "vectorizing into " + str(out_gpkg)):
            run_vectorize(store_path, out_gpkg, vector, overwrite=overwrite)
        output.record_output(store_path, out_gpkg)  # a resume after a COG failure keeps it
    extra: tuple[Path, ...] = ()
    if raster_out is not None:
        raster_out = Path(raster_out)
        with prediction_kept(store_path, "writing " + str(raster_out)):
            publish_raster(store_path, raster_out, fmt, overwrite=overwrite, grid=grid)
        extra = (raster_out,)
    output.remove_path(store_path)
    result = _result(out_gpkg, plan, counts, start, extra)
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
