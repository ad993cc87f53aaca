"""The client side of a batch: :class:`BatchJob` plans scenes lazily, keeps the window of
tasks in flight over all scenes, fails or finishes each scene, and collects the result rows.

Scene k+1 is planned when the last chunk of scene k is submitted (never one graph of every
scene up front), and at most ``window`` tasks are in flight over all scenes
(``distributed.as_completed``), so workers stay busy across scene boundaries and client memory
does not grow with the number of scenes. Run by :func:`geounet.batch.job.run_batch`.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geounet import objectstore
from geounet.batch.finish import FinishTask, check_outputs_free, finish_scene
from geounet.batch.inputs import scene_options
from geounet.batch.options import BatchOptions
from geounet.batch.table import SceneResult, done_record_url, skip_finished
from geounet.config import VectorFormat
from geounet.errors import GeounetError
from geounet.run.eta import JobProgress, ProgressCallback, chunk_tiles, task_slots, warmup_order
from geounet.run.options import PredictOptions
from geounet.run.planning import describe_plan, require_crs

if TYPE_CHECKING:
    from geounet.engine.tiling import ChunkWindow
    from geounet.output import StoreSpec
    from geounet.run.planning import Plan
    from geounet.run.store import ResumePoint

log = logging.getLogger(__name__)


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
    todo_chunks: tuple[ChunkWindow, ...]
    """The chunks whose tiles still run (:class:`geounet.run.store.ResumePoint`), until submitted."""
    finished: int = 0
    seams: int = 0
    failed: bool = False
    futures: set[Any] = field(default_factory=set)


class BatchJob:
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
        from geounet.run.tasks import run_chunk_task

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
        from geounet.run.tasks import run_seams_task, seam_tasks

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
        from geounet.distributed.cluster import ship_model
        from geounet.run.tasks import ChunkTask

        for index, (scene, name) in enumerate(self.scenes):
            job = self._plan(index, scene, name)
            self.status.report()
            if job is None:
                continue
            if job.plan.runner.model is not None:  # to every worker, once per model per job
                ship_model(self.on, job.plan.runner.model, job.plan.runner.model_sha256)
            todo = warmup_order(job.plan.grid, job.todo_chunks)
            job.todo_chunks = ()
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
        store_path, spec, point = opened
        tiles = sum(chunk_tiles(plan.grid, c) for c in point.todo)
        # resumed chunks are done, not computed pixels
        self.status.scene_planned(point.chunks, point.resumed, tiles)
        self.status.log_plan(lambda eta: describe_plan(plan, eta), tiles, len(point.todo))
        return _Scene(index, scene, name, plan, spec, store_path, started, point.chunks,
                      point.resumed, point.todo)

    def _open_store(self, index: int, scene: str, name: str, plan: Plan
                    ) -> tuple[Path, StoreSpec, ResumePoint] | None:
        """The scene's store and its completed chunks; None if an earlier run finished it."""
        from geounet import output
        from geounet.run.store import check_partial_store, prepare_store, resume_point

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
        point = resume_point(plan, store_path, resume=self.resume)
        spec = prepare_store(plan, store_path, point,
                             probability_dtype=self.options.probability_dtype)
        return store_path, spec, point

    def _chunk_done(self, job: _Scene, record: dict[str, Any]) -> None:
        """Count a written chunk; submit the scene's finish after its last one."""
        job.finished += 1
        self.status.chunk_done(record)
        if job.finished == job.chunks - job.resumed:
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
