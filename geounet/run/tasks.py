"""The tasks a worker runs: predict one chunk (:class:`ChunkTask`) and, for same padding,
blend one chunk's seams (:class:`SeamTask`).

Each task carries only the scene description, its chunk window, the tile grid, the store path
and the runner spec (model path, device, precision); it predicts its chunk on the worker,
writes its region of the Zarr store there, leaves a completion marker and returns a few
numbers. No pixel array passes through the scheduler, so memory is bounded by chunk size,
batch size and worker count, never by scene size (ARCHITECTURE invariant 4). The tasks are
plain frozen dataclasses of this importable module: they are pickled to real Dask workers.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from geounet.distributed.cluster import DEFAULT_RETRY, RetryPolicy
from geounet.errors import GeounetError, TransientError
from geounet.output import StoreSpec
from geounet.run.eta import chunk_tiles
from geounet.run.planning import RunnerSpec

if TYPE_CHECKING:
    from geounet.engine.tiling import ChunkWindow, TileGrid
    from geounet.raster import SceneInfo

log = logging.getLogger(__name__)


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
