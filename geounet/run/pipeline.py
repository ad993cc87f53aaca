"""One scene end to end: :func:`predict` (scene -> Zarr store or COG) and :func:`segment`
(scene -> GeoPackage polygons, optionally the raster too).

Each checks its outputs, plans the run (:func:`geounet.run.planning.plan_prediction`), fills
the store with chunk tasks (:func:`geounet.run.compute.compute_store`, the tasks in
:mod:`geounet.run.tasks`), then publishes (:mod:`geounet.run.store`) and vectorizes. What to
compute is one :class:`geounet.run.options.PredictOptions`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geounet.distributed.schedulers import SchedulerLike, choose_scheduler
from geounet.environment import release_freed_memory
from geounet.errors import InputError, with_settings
from geounet.run.compute import compute_store
from geounet.run.eta import ProgressCallback
from geounet.run.options import PredictOptions
from geounet.run.planning import Plan, plan_prediction, require_crs
from geounet.run.store import check_partial_store, prediction_kept, publish_raster, scene_grid

if TYPE_CHECKING:
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


def predict(
    scene: str | os.PathLike[str],
    out: str | os.PathLike[str],
    options: PredictOptions | None = None,
    *,
    overwrite: bool = False,
    resume: bool = False,
    client: SchedulerLike = None,
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
    client : where the chunk tasks run: a ``distributed.Client``, a scheduler address,
        ``"threads"`` or ``"synchronous"`` (in this process), or a variant of
        :data:`geounet.distributed.schedulers.Scheduler` (e.g. ``LocalProcesses(workers=4)``);
        default: in this process on Dask's threaded scheduler (or ``DASK_SCHEDULER_ADDRESS``).
    progress : ``callback(chunks_done, chunks_total, pixels_computed, eta_seconds)``
        (:data:`geounet.run.eta.ProgressCallback`; a callback of the first three is accepted).
    **settings : fields of :class:`geounet.PredictOptions` as keywords, a shorthand
        (``predict(scene, out, tta="d4")``); with ``options`` they replace its fields. An
        unknown name raises :class:`geounet.errors.UnknownOptionError`. ``workers=N`` sizes
        ``client``: worker processes of a local cluster (``LocalProcesses(N)``), threads
        for ``"threads"`` (:func:`geounet.distributed.schedulers.choose_scheduler`).

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
    where = choose_scheduler(client, settings.pop("workers", None))
    o = with_settings(PredictOptions, options, settings, "predict")
    fmt = output.check_output(out, overwrite=overwrite)
    store_path = output.temporary_path(out, "" if fmt == "zarr" else ".zarr")
    check_partial_store(store_path, resume=resume, overwrite=overwrite)
    plan = plan_prediction(scene, o, check_device=where.runs_here)
    grid = scene_grid(plan, o.output_grid)
    out = Path(out)
    counts = compute_store(plan, store_path, o, resume=resume, where=where, progress=progress)
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
    progress: ProgressCallback | None = None,
    **settings: Any,
) -> PredictResult:
    """Segment a scene end to end: predict into a Zarr store, then vectorize to a GeoPackage.

    Parameters
    ----------
    scene : the scene.
    out_gpkg : GeoPackage to write (one layer per class).
    options, overwrite, resume, client, progress, **settings : as for :func:`predict`
        (``workers=N`` too).
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
    where = choose_scheduler(client, settings.pop("workers", None))
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
    plan = plan_prediction(scene, o, check_device=where.runs_here)
    grid = scene_grid(plan, o.output_grid)
    require_crs(plan.info, scene, "segment")  # allow_no_crs let predict through
    counts = compute_store(plan, store_path, o, resume=resume, where=where, progress=progress)
    release_freed_memory()  # the chunk threads' arenas: not carried into vectorizing
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
