"""Many scenes in one job: one cluster, chunks of all scenes interleaved, one result table.

:func:`run_batch` plans scenes lazily (scene k+1 is planned when the last chunk of scene k is
submitted, never one graph of every scene up front) and keeps at most ``window`` tasks in
flight over all scenes with ``distributed.as_completed``, so workers stay busy across scene
boundaries and client memory does not grow with the number of scenes. When the last chunk of
a scene is written its *finish* task (finalize the store, vectorize, publish the raster,
upload to object storage) runs on the cluster too. A scene that fails (missing, corrupt, wrong
bands, no CRS, a failing chunk) is recorded in the table and the others go on.

Outputs under ``out_dir`` for a scene ``NAME.tif``: ``NAME.gpkg`` (local) or
``NAME_<layer>.parquet`` (GeoParquet, the default for ``s3://``), optionally ``NAME.zarr`` or
``NAME.tif``, and the done record ``_geounet_batch/NAME.json`` (written last); the table as
``batch.csv`` and ``batch.json``. See ``docs/batch.md``.

This module is the run: :func:`run_batch` and its client-side job (:class:`_BatchJob`: lazy
planning, the in-flight window, a scene's failure or completion). The inputs are
:mod:`geounet.batch.inputs`, the finish task and a scene's outputs :mod:`geounet.batch.finish`,
the result table and done records :mod:`geounet.batch.table`; their public names are
importable from here too (``FinishTask``/``finish_scene`` included).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geounet import objectstore
from geounet.batch.finish import FinishTask, check_outputs_free, finish_scene
from geounet.batch.inputs import (  # noqa: F401 - re-exported
    MANIFEST_SUFFIXES,
    check_assets,
    check_names,
    resolve_scenes,
    scene_name,
    scene_options,
)
from geounet.batch.options import BatchOptions
from geounet.batch.table import (  # noqa: F401 - re-exported
    DONE_DIR,
    TABLE_NAMES,
    BatchResult,
    SceneResult,
    SceneStatus,
    done_record_url,
    skip_finished,
    write_result_tables,
)
from geounet.config import VectorFormat
from geounet.distributed.cluster import SchedulerLike
from geounet.errors import (
    GeounetError,
    OutputExistsError,
    UnknownOptionError,
    UnsupportedFormatError,
    option,
    with_settings,
)
from geounet.raster import is_url
from geounet.run.eta import JobProgress, ProgressCallback, chunk_tiles, task_slots, warmup_order
from geounet.run.options import PredictOptions
from geounet.run.planning import describe_plan, require_crs, runs_here

if TYPE_CHECKING:
    from geounet.output import StoreSpec
    from geounet.run.planning import Plan

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# the job
# --------------------------------------------------------------------------------------


@dataclass
class _Scene:
    """A planned scene while its chunks run (client side)."""

    index: int
    scene: str
    name: str
    plan: Plan
    store: StoreSpec
    store_path: Path
    started: float
    chunks: int
    resumed: int
    todo: int
    done_ids: set[str] = field(default_factory=set)
    finished: int = 0
    seams: int = 0
    failed: bool = False
    futures: set[Any] = field(default_factory=set)


def _default_work_dir(out_dir: str) -> str:
    digest = hashlib.sha1(out_dir.encode()).hexdigest()[:12]
    return os.path.join(tempfile.gettempdir(), f"geounet-batch-{digest}")


@contextlib.contextmanager
def _cluster(client: SchedulerLike, workers: int | None, device: str) -> Iterator[Any]:
    """A ``distributed.Client`` for the whole job; ``threads``/``synchronous`` run in-process."""
    from geounet.distributed.cluster import in_process_client, scheduler

    if isinstance(client, str) and client in ("threads", "synchronous"):
        with in_process_client((workers or 1) if client == "threads" else 1) as made:
            yield made
        return
    with scheduler(client, workers=workers, device=device) as made:
        if isinstance(made, str):  # one local worker runs in this process: futures need a client
            with in_process_client(1) as local:
                yield local
            return
        yield made


def run_batch(
    scenes: Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    options: PredictOptions | None = None,
    *,
    batch: BatchOptions | None = None,
    manifests: Iterable[str | os.PathLike[str]] = (),
    resume: bool = False,
    overwrite: bool = False,
    client: SchedulerLike = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    **settings: Any,
) -> BatchResult:
    """Segment many scenes in one job on one cluster; return (and write) the result table.

    Parameters
    ----------
    scenes : paths, globs, URLs (``s3://``) or manifests; see :func:`resolve_scenes`.
    out_dir : local folder (created if missing) or ``s3://bucket/prefix``.
    options : what each scene computes (:class:`geounet.PredictOptions`, one setting for every
        scene), as for :func:`geounet.predict`. ``assets`` names the bands of every STAC item
        among the scenes (rasters ignore it); ``max_pixels`` is per scene: a scene over it (or
        more than 4x off the model's pixel size with ``resample="auto"``) fails in planning,
        before any of its pixels is read, and the other scenes run.
    batch : the outputs and the in-flight window (:class:`geounet.BatchOptions`: ``raster``,
        ``vector_format``, ``vectorize``, ``window``, ``work_dir``, ``write_tables``).
    manifests : more manifest files (``.txt`` or ``.csv`` with a ``path`` column).
    resume : skip scenes whose outputs and done record exist (same settings), and finish
        interrupted scenes from their completed chunks.
    overwrite : recompute scenes finished by an earlier run and replace their outputs.
    client : a ``distributed.Client``, a scheduler address, ``"threads"``/``"synchronous"``
        (in-process), or None for one local cluster for the whole job.
    workers : worker processes of the local cluster (threads for ``"threads"``).
    progress : ``callback(chunks_done, chunks_total, pixels_computed, eta_seconds)`` over all
        scenes' chunks (:data:`geounet.run.eta.ProgressCallback`); the total and the ETA count
        planned scenes' chunks plus an estimate for scenes not planned yet. The job's first
        chunk runs alone as the warm-up that measures the ETA (:class:`geounet.run.eta.JobProgress`).
    **settings : fields of :class:`geounet.PredictOptions` or of :class:`geounet.BatchOptions`
        as keywords, a shorthand (``run_batch(scenes, out, raster="cog", tta="flips")``); with
        ``options`` / ``batch`` they replace their fields.

    Returns
    -------
    BatchResult
        Failed scenes are rows with ``status == "failed"``; nothing is raised for them.

    Raises
    ------
    InputError, OutputExistsError, UnsupportedFormatError
        For job-wide mistakes found before any work (no scenes, clashing names, bad format,
        an earlier batch's outputs without ``resume``/``overwrite``).

    Examples
    --------
    >>> result = run_batch(["scenes/*.tif"], "out", raster="cog")  # doctest: +SKIP
    >>> print(result.format_table())  # doctest: +SKIP
    """
    start = time.perf_counter()
    opts, batch = _options(options, batch, settings)
    out_dir = os.fspath(out_dir)
    remote = objectstore.is_s3(out_dir)
    if not remote:
        out_dir = os.path.abspath(out_dir)
    fmt = _vector_format(out_dir, remote, batch.vector_format)
    if opts.model is not None and not is_url(opts.model):
        opts = dataclasses.replace(opts, model=os.path.abspath(opts.model))
    scene_list = resolve_scenes(scenes, manifests)
    names = check_names(scene_list)
    check_assets(scene_list, opts.assets)
    work = _make_dirs(out_dir, remote, batch.work_dir)
    finished_before = _finished_before(out_dir, resume, overwrite)
    if any(objectstore.is_s3(s) for s in scene_list):
        objectstore.configure_environment()  # GDAL reads s3:// scenes with the same endpoint
    job = _BatchJob(list(zip(scene_list, names)), out_dir, work, fmt, opts, batch,
                    check_device=runs_here(client), resume=resume, overwrite=overwrite,
                    finished_before=finished_before, progress=progress)
    with _cluster(client, workers, opts.device) as on:
        job.run(on, batch.window)

    rows = job.rows
    result = BatchResult(tuple(rows[i] for i in sorted(rows)), out_dir,
                         time.perf_counter() - start)
    if batch.write_tables:
        result = write_result_tables(result)
    return result


def _options(options: PredictOptions | None, batch: BatchOptions | None,
             settings: dict[str, Any]) -> tuple[PredictOptions, BatchOptions]:
    """The job's options: ``settings`` split between the two objects by field name."""
    batch_fields = {f.name for f in dataclasses.fields(BatchOptions)}
    predict_settings = {k: v for k, v in settings.items() if k not in batch_fields}
    batch_settings = {k: v for k, v in settings.items() if k in batch_fields}
    try:
        opts = with_settings(PredictOptions, options, predict_settings, "run_batch")
    except UnknownOptionError as exc:
        raise UnknownOptionError(
            f"{exc.raw_message} (or of geounet.BatchOptions: {', '.join(sorted(batch_fields))})"
        ) from None
    return opts, with_settings(BatchOptions, batch, batch_settings, "run_batch")


def _vector_format(out_dir: str, remote: bool, vector_format: VectorFormat | None
                   ) -> VectorFormat:
    """The vector format to write; GeoPackage cannot go to object storage."""
    fmt: VectorFormat = vector_format or ("parquet" if remote else "gpkg")
    if remote and fmt == "gpkg":
        raise UnsupportedFormatError(
            f"GeoPackage cannot be written to object storage ({out_dir!r}): SQLite needs a local "
            f"file; use {option('vector_format', 'parquet', flag='--format')} (GeoParquet) for "
            "s3://, or a "
            "local --out-dir for GeoPackage."
        )
    return fmt


def _make_dirs(out_dir: str, remote: bool, work_dir: str | os.PathLike[str] | None) -> str:
    """Create the output folder (local) or the work folder (``s3://``); return where stores go."""
    if remote:
        objectstore.configure_environment()
        work = os.path.abspath(os.fspath(work_dir)) if work_dir else _default_work_dir(out_dir)
        Path(work).mkdir(parents=True, exist_ok=True)
    else:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        work = out_dir
    return work


def _finished_before(out_dir: str, resume: bool, overwrite: bool) -> list[str]:
    """Done records of an earlier batch in ``out_dir``; refused without resume or overwrite."""
    finished_before = objectstore.listing(objectstore.join(out_dir, DONE_DIR))
    if finished_before and not (resume or overwrite):
        example = sorted(finished_before)[0]
        raise OutputExistsError(
            f"{out_dir!r} holds {len(finished_before)} finished scene(s) of an earlier batch "
            f"(e.g. {DONE_DIR}/{example}); pass {option('resume', True)} to skip them, "
            f"{option('overwrite', True)} to recompute them, or choose another output folder."
        )
    return finished_before


class _BatchJob:
    """The client side of a batch: plans scenes lazily, keeps the window of tasks in flight,
    fails or finishes each scene, and collects the rows (index -> :class:`SceneResult`)."""

    def __init__(self, scenes: list[tuple[str, str]], out_dir: str, work: str,
                 fmt: VectorFormat, options: PredictOptions, batch: BatchOptions, *,
                 check_device: bool, resume: bool, overwrite: bool, finished_before: Any,
                 progress: ProgressCallback | None):
        self.scenes = scenes
        self.out_dir = out_dir
        self.work = work
        self.fmt = fmt
        self.options = options
        self.raster = batch.raster
        self.vectorize = batch.vectorize
        self.check_device = check_device
        self.resume = resume
        self.overwrite = overwrite
        self.finished_before = finished_before
        self.status = JobProgress(progress, len(scenes))
        self.token = uuid.uuid4().hex[:8]
        self.rows: dict[int, SceneResult] = {}
        self.inflight: dict[Any, tuple[_Scene, str]] = {}
        self.on: Any = None
        self.window = 0
        self.pending: Any = None
        self.source: Iterator[tuple[_Scene, Any]] = iter(())

    # -- the loop ------------------------------------------------------------------------

    def run(self, on: Any, window: int | None) -> None:
        """Run every scene on the client ``on`` with at most ``window`` tasks in flight."""
        from geounet.distributed.cluster import completion_queue

        self.on = on
        self.status.clock.slots = task_slots(on)
        if window is None:
            threads = sum(on.nthreads().values()) if hasattr(on, "nthreads") else 1
            window = max(4, 2 * threads)
        self.window = window
        self.pending = completion_queue()
        self.source = self._tasks()
        try:
            self._fill()
            for future in self.pending:
                self._settle(future)
                self._fill()
        except BaseException:
            if self.inflight:
                on.cancel(list(self.inflight))
            log.warning("batch interrupted; completed chunks are kept: rerun the same command "
                        "with --resume to finish it")
            raise

    def _fill(self) -> None:
        """Submit tasks until ``window`` are in flight or no scene has any left."""
        from geounet.distributed.cluster import DEFAULT_RETRY
        from geounet.run.pipeline import run_chunk_task

        while len(self.inflight) < (1 if self.status.warming else self.window):
            item = next(self.source, None)
            if item is None:
                return
            job, task = item
            if task is None:
                self._after_chunks(job)
                continue
            key = f"geounet-chunk-{job.index}-{task.chunk.y0}-{task.chunk.x0}-{self.token}"
            future = self.on.submit(run_chunk_task, task, key=key, pure=False,
                                    retries=DEFAULT_RETRY.task_retries)
            self._track(future, job, "chunk")

    def _after_chunks(self, job: _Scene) -> None:
        """Every chunk of the scene ran its tiles: blend the seams left between its chunks
        (same padding: one task per chunk with seams), else submit its finish."""
        from geounet.distributed.cluster import DEFAULT_RETRY
        from geounet.run.pipeline import run_seams_task, seam_tasks

        seams = seam_tasks(job.plan.grid, job.store, self.options.threshold)
        if not seams:
            self._submit_finish(job)
            return
        job.seams = len(seams)
        for task in seams:
            future = self.on.submit(
                run_seams_task, task, pure=False, retries=DEFAULT_RETRY.task_retries,
                key=f"geounet-seams-{job.index}-{task.chunk.y0}-{task.chunk.x0}-{self.token}")
            self._track(future, job, "seams")

    def _submit_finish(self, job: _Scene) -> None:
        """Submit the scene's finish task (its chunks are all in the store)."""
        from geounet.run.store import scene_grid

        task = FinishTask(str(job.store_path), job.name, self.out_dir, self.work, self.fmt,
                          self.raster, self.vectorize, self.overwrite or self.resume,
                          scene_grid(job.plan, self.options.output_grid))
        future = self.on.submit(finish_scene, task,
                                key=f"geounet-finish-{job.index}-{self.token}", pure=False)
        self._track(future, job, "finish")

    def _track(self, future: Any, job: _Scene, kind: str) -> None:
        """Count ``future`` in flight for ``job`` and wait for it."""
        self.inflight[future] = (job, kind)
        job.futures.add(future)
        self.pending.add(future)

    def _settle(self, future: Any) -> None:
        """Take one finished task: its scene fails, counts a chunk, or is done."""
        from geounet.distributed.cluster import TaskFailure

        job, kind = self.inflight.pop(future)
        job.futures.discard(future)
        if job.failed:
            return
        try:
            value = future.result()
        except Exception as exc:  # noqa: BLE001 - the scene fails, the batch goes on
            self._scene_failed(job, exc, kind)
            return
        if isinstance(value, TaskFailure):  # a user error: not retried
            self._scene_failed(job, value.error, kind)
        elif kind == "chunk":
            self._chunk_done(job, value)
        elif kind == "seams":
            job.seams -= 1
            if job.seams == 0:
                self._submit_finish(job)
        else:
            self._scene_done(job, value)

    # -- scenes --------------------------------------------------------------------------

    def _tasks(self) -> Iterator[tuple[_Scene, Any]]:
        """(scene, chunk task or None for 'finish now'), planning each scene lazily."""
        from geounet import output
        from geounet.distributed.cluster import ship_model
        from geounet.run.pipeline import ChunkTask

        for index, (scene, name) in enumerate(self.scenes):
            job = self._plan(index, scene, name)
            self.status.report()
            if job is None:
                continue
            if job.plan.runner.model is not None:  # to every worker, once per model per job
                ship_model(self.on, job.plan.runner.model, job.plan.runner.model_sha256)
            todo = [c for c in warmup_order(job.plan.grid, job.plan.grid.chunks())
                    if output.chunk_id(c.y0, c.x0) not in job.done_ids]
            job.done_ids = set()
            if not todo:
                yield job, None
            for chunk in todo:
                if job.failed:
                    break
                yield job, ChunkTask(job.plan.info, chunk, job.plan.grid, job.plan.runner,
                                     job.store, self.options.batch_size,
                                     self.options.threshold)

    def _plan(self, index: int, scene: str, name: str) -> _Scene | None:
        """Plan one scene and open its store; None (and a row) if it is skipped or failed."""
        from geounet.run.planning import plan_prediction

        started = time.perf_counter()
        try:
            plan = plan_prediction(scene, scene_options(scene, self.options),
                                   check_device=self.check_device)
        except Exception as exc:  # noqa: BLE001 - any one scene's failure is its row
            self.status.scene_planned()
            self._fail(index, scene, name, exc, started)
            return None
        megapixels = plan.info.height * plan.info.width / 1e6
        try:
            opened = self._open_store(index, scene, name, plan)
        except Exception as exc:  # noqa: BLE001
            self.status.scene_planned()
            self._fail(index, scene, name, exc, started, megapixels)
            return None
        if opened is None:
            return None
        store_path, spec, done = opened
        from geounet import output
        # chunks that ran their tiles before an interruption; only their seams remain
        ran = set(done) | output.seam_data_chunks(store_path)
        chunks = len(plan.grid.chunks())
        tiles = sum(chunk_tiles(plan.grid, c) for c in plan.grid.chunks()
                    if output.chunk_id(c.y0, c.x0) not in ran)
        # resumed chunks are done, not computed pixels
        self.status.scene_planned(chunks, len(ran), tiles)
        self.status.log_plan(lambda eta: describe_plan(plan, eta), tiles, chunks - len(ran))
        return _Scene(index, scene, name, plan, spec, store_path, started, chunks, len(ran),
                      chunks - len(ran), ran)

    def _open_store(self, index: int, scene: str, name: str, plan: Plan
                    ) -> tuple[Path, StoreSpec, dict[str, Any]] | None:
        """The scene's store and its completed chunks; None if an earlier run finished it."""
        from geounet import output
        from geounet.run.store import check_partial_store, prepare_store

        require_crs(plan.info, scene, "batch")
        record_url = done_record_url(self.out_dir, name)
        if self.resume and name + ".json" in self.finished_before:
            skipped = skip_finished(record_url, scene, name, plan.run)
            if skipped is not None:  # its chunks count as done on the progress bar
                self.rows[index] = skipped
                self.status.scene_planned(skipped.chunks, skipped.chunks)
                return None
        if not (self.overwrite or self.resume):  # resume replaces outputs of an unfinished finish
            check_outputs_free(self.out_dir, name, self.fmt, self.raster, plan)
        store_path = output.temporary_path(Path(self.work) / f"{name}.zarr")
        # an interrupted run's chunks are never discarded silently (name --resume)
        check_partial_store(store_path, resume=self.resume, overwrite=self.overwrite)
        spec, done = prepare_store(plan, store_path,
                                   probability_dtype=self.options.probability_dtype,
                                   resume=self.resume)
        return store_path, spec, done

    def _chunk_done(self, job: _Scene, record: dict[str, Any]) -> None:
        """Count a written chunk; submit the scene's finish after its last one."""
        job.finished += 1
        self.status.chunk_done(record)
        if job.finished == job.todo:
            self._after_chunks(job)

    def _scene_done(self, job: _Scene, value: dict[str, Any]) -> None:
        """Record a finished scene's row and write its done record (last)."""
        row = SceneResult(
            job.scene, job.name, "done",
            job.plan.info.height * job.plan.info.width / 1e6,
            time.perf_counter() - job.started, dict(value["objects"]), None,
            job.chunks, job.finished, job.resumed, tuple(value["outputs"]))
        objectstore.write_text(
            done_record_url(self.out_dir, job.name),
            json.dumps({"run": job.plan.run, "result": row.to_dict()}))
        self.rows[job.index] = row

    def _scene_failed(self, job: _Scene, exc: BaseException, kind: str) -> None:
        """Fail a scene mid-run: cancel its other tasks, keep its chunks if it can resume."""
        from geounet import output
        from geounet.errors import TransientError

        job.failed = True
        others = [f for f in job.futures if f in self.inflight]
        if others:
            self.on.cancel(others)
        note = ""
        user_error = isinstance(exc, GeounetError) and not isinstance(exc, TransientError)
        if user_error or kind == "finish":
            output.remove_path(job.store_path)  # a bad input: nothing to resume
        else:
            note = (f" (its {job.finished + job.resumed} completed chunk(s) are kept; rerun "
                    "with --resume to finish the scene)")
        self._fail(job.index, job.scene, job.name, exc, job.started,
                   job.plan.info.height * job.plan.info.width / 1e6, note, chunks=job.chunks,
                   chunks_computed=job.finished, chunks_resumed=job.resumed)

    def _fail(self, index: int, scene: str, name: str, exc: BaseException, started: float,
              megapixels: float = 0.0, note: str = "", **counts: int) -> None:
        """Record a failed scene's row (the library's message) and log it."""
        message = str(exc) if isinstance(exc, GeounetError) else f"{type(exc).__name__}: {exc}"
        message += note
        log.warning("scene %s failed: %s", scene, message)
        self.rows[index] = SceneResult(scene, name, "failed", megapixels,
                                       time.perf_counter() - started, {}, message, **counts)
