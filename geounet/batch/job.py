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

This module is the entry point: :func:`run_batch` and the job-wide checks, before any work.
The client-side job (lazy planning, the in-flight window, a scene's failure or completion) is
:class:`geounet.batch.running.BatchJob`; the inputs are :mod:`geounet.batch.inputs`, the finish
task and a scene's outputs :mod:`geounet.batch.finish`, the result table and done records
:mod:`geounet.batch.table` (the inputs' and the table's public names are importable from here
too). What to compute is a :class:`geounet.PredictOptions`, what to write a
:class:`geounet.batch.options.BatchOptions`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from geounet import objectstore
from geounet.batch.inputs import (  # noqa: F401 - re-exported
    MANIFEST_SUFFIXES,
    check_assets,
    check_names,
    resolve_scenes,
    scene_name,
    scene_options,
)
from geounet.batch.options import BatchOptions
from geounet.batch.running import BatchJob
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
from geounet.distributed.cluster import job_client
from geounet.distributed.schedulers import SchedulerLike, choose_scheduler
from geounet.errors import (
    OutputExistsError,
    UnknownOptionError,
    UnsupportedFormatError,
    option,
    with_settings,
)
from geounet.raster import is_url
from geounet.run.eta import ProgressCallback
from geounet.run.options import PredictOptions

log = logging.getLogger(__name__)


def _default_work_dir(out_dir: str) -> str:
    digest = hashlib.sha1(out_dir.encode()).hexdigest()[:12]
    return os.path.join(tempfile.gettempdir(), f"geounet-batch-{digest}")


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
        (in-process), a variant of :data:`geounet.distributed.schedulers.Scheduler`, or None
        for one local cluster for the whole job (or ``DASK_SCHEDULER_ADDRESS``).
    progress : ``callback(chunks_done, chunks_total, pixels_computed, eta_seconds)`` over all
        scenes' chunks (:data:`geounet.run.eta.ProgressCallback`); the total and the ETA count
        planned scenes' chunks plus an estimate for scenes not planned yet. The job's first
        chunk runs alone as the warm-up that measures the ETA (:class:`geounet.run.eta.JobProgress`).
    **settings : fields of :class:`geounet.PredictOptions` or of :class:`geounet.BatchOptions`
        as keywords, a shorthand (``run_batch(scenes, out, raster="cog", tta="flips")``); with
        ``options`` / ``batch`` they replace their fields. ``workers=N`` sizes ``client``:
        worker processes of the local cluster, threads for ``"threads"``
        (:func:`geounet.distributed.schedulers.choose_scheduler`).

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
    where = choose_scheduler(client, settings.pop("workers", None))
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
    job = BatchJob(list(zip(scene_list, names)), out_dir, work, fmt, opts, batch,
                    check_device=where.runs_here, resume=resume, overwrite=overwrite,
                    finished_before=finished_before, progress=progress)
    with job_client(where, device=opts.device) as on:
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
