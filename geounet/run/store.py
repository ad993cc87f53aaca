"""A run's prediction store: created or resumed, kept for ``--resume`` on failure, published.

The store is built under a hidden temporary name (:func:`prepare_store` creates it, or reopens
an interrupted run's store with the same settings); it is never discarded silently
(:func:`check_partial_store`); a failure while computing or after prediction keeps it and
names the ``--resume`` command (:func:`keep_for_resume`, :func:`prediction_kept`); a finished
store is moved into place, uploaded or streamed into a COG (:func:`publish_raster`).
ARCHITECTURE invariant 7. The one home of the resume rule (:func:`resume_point`) and of
publishing: used by :mod:`geounet.run` (``predict``, ``segment``) and by every batch scene
(:mod:`geounet.batch.running`, :mod:`geounet.batch.finish`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geounet.config import OutputGrid, ProbabilityDtype, RasterFormat
from geounet.errors import (
    GeounetError,
    OutputExistsError,
    PredictionKeptError,
    option,
    render_options,
)
from geounet.output import StoreSpec
from geounet.raster import is_url
from geounet.run.options import check_output_grid
from geounet.run.planning import to_plain

if TYPE_CHECKING:
    from geounet.engine.tiling import ChunkWindow
    from geounet.run.planning import Plan

log = logging.getLogger(__name__)


def _store_attrs(plan: Plan) -> dict[str, Any]:
    from geounet._version import __version__

    return {
        "model_card": plan.card.to_dict(),
        "tile_size": plan.tile_size,
        "version": __version__,
        "scene": os.path.basename(plan.info.path),
        # how the scene was fitted to the model: the grid of a warped view (the store's own
        # grid then), the value map; None for a scene read as it is
        "scene_warp": to_plain(plan.info.warp),
        "scene_rescale": to_plain(plan.info.rescale),
    }


def client_path(path: str | os.PathLike[str]) -> str:
    """A path every worker can open: local paths made absolute on the client (workers run in
    other directories, on other machines sharing the file system); URLs and GDAL ``/vsi``
    paths unchanged."""
    text = os.fspath(path)
    if is_url(text):
        return text
    return os.path.abspath(text)


def keep_for_resume(exc: BaseException, store_path: Path) -> BaseException:
    """The error a failed run raises: ``exc`` with where its completed chunks are kept and how
    to resume (the CLI adds the exact command from ``exc.resume_store``)."""
    from geounet import output
    done = len(output.done_chunks(store_path))
    hint = (f" The {done} chunk(s) completed are kept in {str(store_path)!r}; fix the cause "
            f"and run the same command again with {option('resume', True)} to compute only the "
            "missing chunks.")
    log.warning("run failed; %d completed chunk(s) kept in %s for --resume", done, store_path)
    annotated: BaseException = exc
    if isinstance(exc, GeounetError):
        import copy

        annotated = copy.copy(exc)  # same class and attributes, the hint added to the message
        annotated.args = (f"{exc.raw_message}{hint}",)
    annotated.resume_store = str(store_path)  # type: ignore[attr-defined]
    return annotated


@dataclass(frozen=True)
class SceneGrid:
    """The scene's own grid, on which a resampled run's raster output is written
    (``output_grid="scene"``), and the run's threshold to classify it there: plain values."""

    crs_wkt: str | None
    transform: tuple[float, ...]
    height: int
    width: int
    threshold: float | None = None


def scene_grid(plan: Plan, output_grid: OutputGrid) -> SceneGrid | None:
    """Where ``plan``'s raster output goes: the scene's grid for ``"scene"`` when the model
    read a resampled view of it, else None (the store's own grid, the model's).

    Raises
    ------
    InputError
        ``output_grid`` is not ``scene`` or ``model``.
    """
    check_output_grid(output_grid)
    info, source = plan.info, plan.source
    if output_grid == "model" or source is None or info.warp is None or not info.warp.regrid:
        return None
    if (source.height, source.width, tuple(source.transform)) == (
            info.height, info.width, tuple(info.transform)):
        return None
    return SceneGrid(source.crs_wkt, tuple(float(v) for v in source.transform[:6]),
                     int(source.height), int(source.width), plan.run.get("threshold"))


def regridded_store(store: Path, grid: SceneGrid, anchor: Path) -> Path:
    """``store`` written onto ``grid`` as a new store under a hidden temporary name beside
    ``anchor`` (:func:`geounet.output.regrid_store`); the caller removes it."""
    from geounet import output
    from geounet.engine.inference import classify

    target = output.temporary_path(anchor, ".scene-grid.zarr")
    output.remove_path(target)
    log.info("writing %s on the scene's grid (%d x %d px)", anchor, grid.width, grid.height)
    return output.regrid_store(
        store, target, crs_wkt=grid.crs_wkt, transform=grid.transform, height=grid.height,
        width=grid.width, classify=lambda probs, valid: classify(probs, grid.threshold, valid))


def publish_raster(store: Path, out: str | os.PathLike[str], fmt: RasterFormat, *,
                   overwrite: bool, grid: SceneGrid | None = None,
                   staging: Path | None = None) -> None:
    """Publish a finished store as the raster ``out``: the one rule of every run (``predict``,
    ``segment``, a batch scene's finish task). ARCHITECTURE invariant 7.

    ``fmt="zarr"``: the store is finalized and moved into place (a local ``out``) or uploaded
    (an ``s3://`` URL; its metadata last, so it appears only complete). ``fmt="cog"``: the store
    is streamed into a COG at ``out`` (for a URL: built beside ``staging`` under a hidden name,
    then uploaded with its ``.aux.xml`` sidecar, the class band's categories) and left in
    place, still resumable. With ``grid`` the raster is first written onto that grid
    (:func:`regridded_store`, beside ``out`` or ``staging``) and the store is left in place,
    still resumable, either way. ``staging`` is the local folder a URL's raster is built in.
    """
    from geounet import objectstore, output

    remote = objectstore.is_s3(out)
    if remote and staging is None:
        raise ValueError(f"publishing {os.fspath(out)!r} needs a local staging folder")
    local = Path(staging) / _basename(out) if remote and staging else Path(out)
    if grid is not None:
        regridded = regridded_store(store, grid, local)
        try:
            publish_raster(regridded, out, fmt, overwrite=overwrite, staging=staging)
        finally:
            output.remove_path(regridded)
        return
    if fmt == "zarr":
        output.finalize_store(store)
        if remote:
            objectstore.upload(store, os.fspath(out))
        else:
            output.replace_path(store, out)
    elif remote:
        cog = local.with_name(f".{local.stem}.geounet-upload.tif")
        sidecar = Path(f"{cog}.aux.xml")  # the class band's categories (GDAL PAM)
        try:
            output.write_cog(store, cog, overwrite=True)
            if sidecar.is_file():
                objectstore.upload(sidecar, f"{os.fspath(out)}.aux.xml")
            objectstore.upload(cog, os.fspath(out))
        finally:
            output.remove_path(cog)
            output.remove_path(sidecar)
    else:
        output.write_cog(store, out, overwrite=overwrite)


def _basename(path: str | os.PathLike[str]) -> str:
    """The last name of a local path or an ``s3://`` URL."""
    return os.fspath(path).rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ResumePoint:
    """Where a run of a plan into its store starts: the one resume rule of every run
    (``predict`` / ``segment`` and each batch scene). ARCHITECTURE invariants 3 and 15.

    Attributes
    ----------
    resuming : the store is an interrupted run's with the same settings (and resume was asked);
        False for a new store.
    done : chunk ids marked done (tiles and seams).
    todo : the chunks whose tiles must still run (not done, nor with only their seams left
        under same padding), in grid order.
    chunks : chunks in the scene.
    """

    resuming: bool
    done: frozenset[str]
    todo: tuple[ChunkWindow, ...]
    chunks: int

    @property
    def resumed(self) -> int:
        """Chunks that run no tile again (done, or only their seams left)."""
        return self.chunks - len(self.todo)

    @property
    def finished(self) -> bool:
        """Every chunk is marked done: nothing runs (neither tiles nor seams)."""
        return len(self.done) == self.chunks


def resume_point(plan: Plan, store_path: Path, *, resume: bool) -> ResumePoint:
    """What the store at ``store_path`` already holds for ``plan``: nothing unless ``resume``
    and an interrupted run with the same settings left it. Reads only; :func:`prepare_store`
    then opens or creates the store.

    Raises
    ------
    InputError
        ``resume`` with a store started by other settings (scene, model, sizes, dtype).
    """
    from geounet import output

    resuming = bool(resume and output.check_resumable(store_path, plan.run))
    chunks = plan.grid.chunks()
    done = frozenset(output.done_chunks(store_path)) if resuming else frozenset()
    ran = done | output.seam_data_chunks(store_path) if resuming else done  # tiles ran
    todo = tuple(c for c in chunks if output.chunk_id(c.y0, c.x0) not in ran)
    return ResumePoint(resuming, done, todo, len(chunks))


def prepare_store(
    plan: Plan,
    store_path: Path,
    point: ResumePoint,
    *,
    probability_dtype: ProbabilityDtype,
) -> StoreSpec:
    """Open an interrupted run's store (``point.resuming``) or create a new one; a partial
    store of an earlier run is discarded unless resumed (:func:`check_partial_store` refused
    that before, without ``overwrite``). Used by :mod:`geounet.run.compute` and
    :mod:`geounet.batch.running` after :func:`resume_point`.
    """
    from geounet import output
    if point.resuming:
        return StoreSpec(str(store_path), probability_dtype)
    if store_path.exists():
        log.info("discarding the partial store of an earlier run: %s", store_path)
        output.remove_path(store_path)
    info = plan.info
    return output.create_store(
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


def check_partial_store(store_path: Path, *, resume: bool, overwrite: bool) -> None:
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
        f"chunk(s) done); pass {option('resume', True)} to finish it with the same settings, "
        f"or {option('overwrite', True)} to discard it and start over."
    )


RESUME_HINT = f"rerun the same command with {option('resume', True)} to finish the job"
"""The fix after a failure past prediction (:func:`geounet.errors.option` marks: render it
with :func:`geounet.errors.render_options` outside an error message)."""


@contextlib.contextmanager
def prediction_kept(store_path: Path, step: str) -> Iterator[None]:
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
                  step, store_path, render_options(RESUME_HINT))
        exc.geounet_kept_store = str(store_path)  # type: ignore[attr-defined]
        raise
    except Exception as exc:
        cause = exc.raw_message if isinstance(exc, GeounetError) else str(exc)
        raise PredictionKeptError(
            f"{step} failed ({cause}); the finished prediction is kept in {str(store_path)!r}: "
            f"fix the cause, then {RESUME_HINT} without predicting again.",
            store=str(store_path),
        ) from exc
