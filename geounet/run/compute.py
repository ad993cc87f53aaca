"""Filling a run's store: the chunk tasks of a plan run in rounds on a scheduler.

:func:`compute_store` creates (or resumes) the store, reaches the scheduler, ships the model,
runs the warm-up chunk that measures the ETA, then every other chunk's
:func:`geounet.run.tasks.run_chunk_task` and, for same padding, the seam round
(:func:`geounet.run.tasks.run_seams_task`). A failure keeps the store for ``resume``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from geounet.distributed.cluster import RetryPolicy
from geounet.distributed.schedulers import Scheduler
from geounet.output import StoreSpec
from geounet.run import tasks as run_tasks
from geounet.run.eta import (
    WARMUP_TRIES,
    ProgressCallback,
    RunProgress,
    chunk_tiles,
    task_slots,
    warmup_order,
)
from geounet.run.options import PredictOptions
from geounet.run.planning import Plan, describe_plan
from geounet.run.store import client_path, keep_for_resume, prepare_store, resume_point
from geounet.run.tasks import ChunkTask

log = logging.getLogger(__name__)


def compute_store(
    plan: Plan,
    store_path: Path,
    options: PredictOptions,
    *,
    resume: bool,
    where: Scheduler,
    progress: ProgressCallback | None,
) -> tuple[int, int, int]:
    """Fill (or finish) the store at ``store_path``; return (chunks, skipped, resumed).

    Every task gets absolute paths (resolved here, on the client) and the model's content
    hash; the model's bytes are shipped to the workers. The plan line is logged once the
    warm-up chunk has measured the ETA (:mod:`geounet.run.eta`). A failure keeps the store
    and its completed chunks for ``resume``.
    """
    from geounet.distributed import cluster
    store_path = Path(client_path(store_path))
    info = dataclasses.replace(plan.info, path=client_path(plan.info.path))
    point = resume_point(plan, store_path, resume=resume)
    todo, resumed = list(point.todo), point.resumed
    log.info("%d chunk(s): %d to compute, %d already done", point.chunks, len(todo), resumed)
    with contextlib.ExitStack() as stack:
        # reach the scheduler (or start the local cluster) before anything is written
        on = stack.enter_context(
            cluster.scheduler(where, device=plan.runner.device, tasks=len(todo))
        ) if not point.finished else None
        runner = plan.runner
        if on is not None and runner.model is not None and todo:
            runner = dataclasses.replace(runner, model_sha256=cluster.ship_model(
                on, runner.model, runner.model_sha256))
        if point.resuming:
            log.info("resuming the interrupted run in %s", store_path)
        spec = prepare_store(plan, store_path, point, probability_dtype=options.probability_dtype)
        tracker = RunProgress(progress, point.chunks, resumed,
                              sum(chunk_tiles(plan.grid, c) for c in todo),
                              task_slots(on))
        tracker.report()
        if on is None:
            log.info("%s", describe_plan(plan, tracker.plan_eta()))
            return point.chunks, _skipped(store_path), resumed
        policy = cluster.DEFAULT_RETRY
        tasks = [ChunkTask(info, chunk, plan.grid, runner, spec, options.batch_size,
                           options.threshold, policy)
                 for chunk in warmup_order(plan.grid, todo)]
        try:
            _run_rounds(plan, tasks, on, tracker, spec, options.threshold, policy)
        except Exception as exc:  # noqa: BLE001 - an interruption (Ctrl-C) keeps it too
            annotated = keep_for_resume(exc, store_path)
            if annotated is exc:
                raise
            raise annotated from exc
    return point.chunks, _skipped(store_path), resumed


def _skipped(store_path: Path) -> int:
    """Chunks of the store that were all nodata."""
    from geounet import output
    return sum(1 for record in output.done_chunks(store_path).values() if record.get("skipped"))


def _run_rounds(plan: Plan, tasks: list[ChunkTask], on: Any, tracker: RunProgress,
                spec: StoreSpec, threshold: float | None, policy: RetryPolicy) -> None:
    """Round 1: the warm-up chunk(s) alone (:data:`geounet.run.eta.WARMUP_TRIES` at most,
    until one runs the model), the plan line with the ETA, then every other chunk runs its own
    tiles; round 2 (same padding): the chunks with seams blend them from their neighbours'
    kept tile outputs."""
    from geounet.distributed import cluster
    token = uuid.uuid4().hex[:12]

    def run(batch: list[ChunkTask], on_result: Callable[[dict[str, Any]], None]) -> None:
        cluster.run_tasks(run_tasks.run_chunk_task, batch, on,
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
    seams = run_tasks.seam_tasks(plan.grid, spec, threshold, policy)
    if seams:
        cluster.run_tasks(run_tasks.run_seams_task, seams, on, retries=policy.task_retries,
                          keys=[f"geounet-seams-{t.chunk.y0}-{t.chunk.x0}-{token}"
                                for t in seams])
