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
"""

from __future__ import annotations

import contextlib
import csv
import glob
import hashlib
import io
import json
import logging
import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Literal, Sequence

from geounet import objectstore
from geounet.cluster import SchedulerLike
from geounet.config import (
    BatchRaster,
    Engine,
    Precision,
    ProbabilityDtype,
    ResampleMode,
    Resampling,
    VectorFormat,
    choices,
)
from geounet.errors import GeounetError, InputError, OutputExistsError, UnsupportedFormatError
from geounet.pipeline import ProgressCallback

if TYPE_CHECKING:
    from geounet.pipeline import Plan
    from geounet.output import StoreSpec

log = logging.getLogger(__name__)

SceneStatus = Literal["done", "skipped", "failed"]
"""``done``: computed in this run; ``skipped``: finished by an earlier run (``resume``);
``failed``: see the error column."""

DONE_DIR = "_geounet_batch"
"""Folder (or prefix) under the output directory holding one done record per finished scene."""
TABLE_NAMES = ("batch.csv", "batch.json")
MANIFEST_SUFFIXES = (".txt", ".csv")
_GLOB_CHARS = "*?["


# --------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------


def _is_manifest(item: str) -> bool:
    return item.lower().endswith(MANIFEST_SUFFIXES)


def _read_manifest(path: str) -> list[str]:
    """Entries of a manifest: one path/URL per line (.txt), or a ``path`` column (.csv).

    Relative entries are taken from the manifest's own folder.
    """
    text = objectstore.read_text(path)
    if text is None:
        raise InputError(
            f"manifest {path!r} does not exist; give a .txt file with one scene path or URL per "
            "line, or a .csv file with a 'path' column."
        )
    if path.lower().endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
        columns = {name.strip().lower(): name for name in (reader.fieldnames or [])}
        if "path" not in columns:
            raise InputError(
                f"manifest {path!r} has no 'path' column (columns: {reader.fieldnames}); add a "
                "header row naming the column of scene paths or URLs 'path'."
            )
        entries = [(row.get(columns["path"]) or "").strip() for row in reader]
    else:
        entries = [line.strip() for line in text.splitlines()]
    entries = [e for e in entries if e and not e.startswith("#")]
    base = path.rsplit("/", 1)[0] if objectstore.is_url(path) else os.path.dirname(
        os.path.abspath(path))
    return [e if objectstore.is_url(e) or os.path.isabs(e) else objectstore.join(base, e)
            for e in entries]


def _expand(item: str) -> list[str]:
    if not any(ch in item for ch in _GLOB_CHARS):
        return [item if objectstore.is_url(item) else os.path.abspath(item)]
    if objectstore.is_s3(item):
        fs = objectstore.filesystem()
        matches = [f"s3://{key}" for key in fs.glob(item[len("s3://"):])]
    elif objectstore.is_url(item):
        return [item]
    else:
        matches = [os.path.abspath(p) for p in glob.glob(os.path.expanduser(item),
                                                         recursive=True)]
    if not matches:
        raise InputError(
            f"pattern {item!r} matches no scene; check the folder and the pattern (quote it so "
            "the shell does not expand it, e.g. 'scenes/*.tif')."
        )
    return sorted(matches)


def resolve_scenes(
    scenes: Iterable[str | os.PathLike[str]] = (),
    manifests: Iterable[str | os.PathLike[str]] = (),
) -> list[str]:
    """Turn paths, globs, URLs and manifests into absolute paths or URLs, in order, once each.

    Parameters
    ----------
    scenes : scene paths, glob patterns (``scenes/**/*.tif``, ``s3://bucket/*.tif``), URLs
        (``s3://``, ``https://``, ``/vsi...``), or manifests (an item ending ``.txt`` or
        ``.csv``).
    manifests : manifest files: ``.txt`` with one path or URL per line (blank lines and
        ``#`` comments skipped), or ``.csv`` with a ``path`` column. Relative entries are
        taken from the manifest's folder.

    Raises
    ------
    InputError
        No scene given, a glob matching nothing, a manifest missing or without a path column.

    Examples
    --------
    >>> resolve_scenes(["s3://bucket/a.tif"])
    ['s3://bucket/a.tif']
    """
    resolved: list[str] = []
    items = [(os.fspath(m), True) for m in manifests] + [(os.fspath(s), False) for s in scenes]
    for item, is_manifest in items:
        if is_manifest or _is_manifest(item):
            manifest = item if objectstore.is_url(item) else os.path.abspath(item)
            for entry in _read_manifest(manifest):
                resolved.extend(_expand(entry))
        else:
            resolved.extend(_expand(item))
    unique = list(dict.fromkeys(resolved))
    if not unique:
        raise InputError(
            "no scenes given; pass scene paths, globs, URLs, or a manifest (.txt with one path "
            "per line, .csv with a 'path' column)."
        )
    return unique


def scene_name(scene: str) -> str:
    """The output name of a scene: its file name without suffix (``a/b/x.tif`` -> ``x``)."""
    return Path(scene.rstrip("/").rsplit("/", 1)[-1]).stem


def _check_names(scenes: Sequence[str]) -> list[str]:
    seen: dict[str, str] = {}
    for scene in scenes:
        name = scene_name(scene)
        if name in seen:
            raise InputError(
                f"scenes {seen[name]!r} and {scene!r} would both write outputs named {name!r}; "
                "give each scene a distinct file name (or run them in separate --out-dir)."
            )
        if name in (Path(t).stem for t in TABLE_NAMES) or name == DONE_DIR:
            raise InputError(
                f"scene {scene!r} is named like the batch table ({name!r}); rename the scene."
            )
        seen[name] = scene
    return list(seen)


# --------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneResult:
    """One row of the batch table.

    Attributes
    ----------
    scene : path or URL as resolved.
    name : output name (file name without suffix).
    status : ``done``, ``skipped`` (finished by an earlier run) or ``failed``.
    megapixels : scene size (0 if it could not be opened).
    seconds : wall time from planning to the last output (scenes overlap in time).
    objects : layer -> features written.
    error : why the scene failed (the library's message), else None.
    chunks, chunks_computed, chunks_resumed : chunks in the scene, computed in this run,
        and taken from an interrupted run's store.
    outputs : every output written for the scene.
    """

    scene: str
    name: str
    status: SceneStatus
    megapixels: float = 0.0
    seconds: float = 0.0
    objects: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    chunks: int = 0
    chunks_computed: int = 0
    chunks_resumed: int = 0
    outputs: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The row as plain JSON values."""
        return {
            "scene": self.scene, "name": self.name, "status": self.status,
            "megapixels": round(self.megapixels, 6), "seconds": round(self.seconds, 3),
            "objects": dict(self.objects), "error": self.error, "chunks": self.chunks,
            "chunks_computed": self.chunks_computed, "chunks_resumed": self.chunks_resumed,
            "outputs": list(self.outputs),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SceneResult:
        """Inverse of :meth:`to_dict`."""
        return cls(
            scene=data["scene"], name=data["name"], status=data["status"],
            megapixels=float(data.get("megapixels", 0.0)), seconds=float(data.get("seconds", 0)),
            objects={k: int(v) for k, v in dict(data.get("objects") or {}).items()},
            error=data.get("error"), chunks=int(data.get("chunks", 0)),
            chunks_computed=int(data.get("chunks_computed", 0)),
            chunks_resumed=int(data.get("chunks_resumed", 0)),
            outputs=tuple(data.get("outputs") or ()),
        )


@dataclass(frozen=True)
class BatchResult:
    """What :func:`run_batch` did: one :class:`SceneResult` per scene, in input order.

    Attributes
    ----------
    scenes : the rows.
    out_dir : the output folder or prefix.
    seconds : wall time of the whole job.
    tables : the written ``batch.csv`` and ``batch.json``.
    """

    scenes: tuple[SceneResult, ...]
    out_dir: str
    seconds: float
    tables: tuple[str, ...] = ()

    @property
    def failed(self) -> list[SceneResult]:
        """Rows of scenes that failed."""
        return [row for row in self.scenes if row.status == "failed"]

    @property
    def ok(self) -> bool:
        """True if no scene failed."""
        return not self.failed

    @property
    def layers(self) -> list[str]:
        """Every layer name in the object counts, in first-seen order."""
        return list(dict.fromkeys(k for row in self.scenes for k in row.objects))

    def rows(self) -> list[dict[str, Any]]:
        """Flat rows: scene, status, megapixels, seconds, ``objects_<layer>`` ..., error."""
        layers = self.layers
        out = []
        for row in self.scenes:
            flat: dict[str, Any] = {"scene": row.scene, "status": row.status,
                                    "megapixels": round(row.megapixels, 3),
                                    "seconds": round(row.seconds, 2)}
            for layer in layers:
                flat[f"objects_{layer}"] = row.objects.get(layer, "")
            flat.update({"chunks": row.chunks, "chunks_computed": row.chunks_computed,
                         "chunks_resumed": row.chunks_resumed, "error": row.error or ""})
            out.append(flat)
        return out

    def to_csv(self) -> str:
        """The table as CSV text."""
        rows = self.rows()
        handle = io.StringIO()
        fields = list(rows[0]) if rows else ["scene", "status", "megapixels", "seconds", "error"]
        writer = csv.DictWriter(handle, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return handle.getvalue()

    def to_json(self) -> str:
        """The table as JSON text (rows with nested object counts and outputs)."""
        return json.dumps({"out_dir": self.out_dir, "seconds": round(self.seconds, 3),
                           "scenes": [row.to_dict() for row in self.scenes]}, indent=1)

    def format_table(self, max_error: int = 90) -> str:
        """A plain-text table for the terminal (long paths and errors shortened)."""
        layers = self.layers
        head = ["scene", "status", "MP", "seconds", *layers, "error"]
        body = []
        for row in self.scenes:
            error = row.error or ""
            if len(error) > max_error:
                error = error[: max_error - 3] + "..."
            body.append([row.name, row.status, f"{row.megapixels:.2f}", f"{row.seconds:.1f}",
                         *(str(row.objects.get(layer, "")) for layer in layers), error])
        widths = [max(len(str(r[i])) for r in [head, *body]) for i in range(len(head))]
        lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip()
                 for r in [head, *body]]
        done = sum(r.status == "done" for r in self.scenes)
        skipped = sum(r.status == "skipped" for r in self.scenes)
        lines.append(f"{len(self.scenes)} scene(s): {done} done, {skipped} skipped, "
                     f"{len(self.failed)} failed in {self.seconds:.1f} s")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------
# the finish task (runs on a worker)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FinishTask:
    """Turn a scene's complete store into its final outputs: plain values, cheap to pickle."""

    store: str
    name: str
    out_dir: str
    work_dir: str
    vector_format: VectorFormat
    raster: BatchRaster
    vectorize_options: dict[str, Any]
    overwrite: bool


def finish_scene(task: FinishTask) -> dict[str, Any]:
    """Finalize the store, vectorize it, publish the raster (local or ``s3://``); return
    ``{"objects": {layer: count}, "outputs": [...]}``. The store is removed at the end."""
    from geounet import output
    from geounet.vectorization import vectorize

    store = Path(task.store)
    remote = objectstore.is_s3(task.out_dir)
    local_dir = Path(task.work_dir if remote else task.out_dir)
    outputs: list[str] = []
    try:
        output.finalize_store(store)
        vec = local_dir / f"{task.name}.{task.vector_format}"
        result = vectorize(store, vec, overwrite=task.overwrite or remote,
                           **task.vectorize_options)
        for path in dict.fromkeys(result.paths.values()):
            if remote:
                target = objectstore.join(task.out_dir, path.name)
                try:
                    objectstore.upload(path, target)
                finally:
                    output.remove_path(path)
                outputs.append(target)
            else:
                outputs.append(str(path))
        if task.raster != "none":
            suffix = ".zarr" if task.raster == "zarr" else ".tif"
            target = objectstore.join(task.out_dir, task.name + suffix)
            if task.raster == "zarr" and remote:
                objectstore.upload(store, target)
            elif task.raster == "zarr":
                output.replace_path(store, target)
            elif remote:
                cog = local_dir / f".{task.name}.geounet-upload.tif"
                sidecar = Path(f"{cog}.aux.xml")  # the class band's categories (GDAL PAM)
                try:
                    output.write_cog(store, cog, overwrite=True)
                    if sidecar.is_file():
                        objectstore.upload(sidecar, f"{target}.aux.xml")
                    objectstore.upload(cog, target)
                finally:
                    output.remove_path(cog)
                    output.remove_path(sidecar)
            else:
                output.write_cog(store, target, overwrite=task.overwrite)
            outputs.append(target)
    finally:
        output.remove_path(store)
    return {"objects": dict(result.counts), "outputs": outputs}


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
    failed: bool = False
    futures: set[Any] = field(default_factory=set)


def _done_record_url(out_dir: str, name: str) -> str:
    return objectstore.join(out_dir, DONE_DIR, f"{name}.json")


def _default_work_dir(out_dir: str) -> str:
    digest = hashlib.sha1(out_dir.encode()).hexdigest()[:12]
    return os.path.join(tempfile.gettempdir(), f"geounet-batch-{digest}")


@contextlib.contextmanager
def _cluster(client: SchedulerLike, workers: int | None, device: str) -> Iterator[Any]:
    """A ``distributed.Client`` for the whole job; ``threads``/``synchronous`` run in-process."""
    from geounet.cluster import in_process_client, scheduler

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
    *,
    manifests: Iterable[str | os.PathLike[str]] = (),
    model: str | os.PathLike[str] | None = None,
    bands: tuple[int, ...] | None = None,
    chunk_size: int = 2048,
    tile_size: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    precision: Precision = "auto",
    engine: Engine = "torch",
    probability_dtype: ProbabilityDtype = "uint8",
    threshold: float | None = None,
    allow_no_crs: bool = False,
    resample: ResampleMode = "auto",
    resampling: Resampling = "auto",
    rescale: str | tuple[float, float] | None = None,
    raster: BatchRaster = "none",
    vector_format: VectorFormat | None = None,
    vectorize_options: dict[str, Any] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    client: SchedulerLike = None,
    workers: int | None = None,
    window: int | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
    write_tables: bool = True,
) -> BatchResult:
    """Segment many scenes in one job on one cluster; return (and write) the result table.

    Parameters
    ----------
    scenes : paths, globs, URLs (``s3://``) or manifests; see :func:`resolve_scenes`.
    out_dir : local folder (created if missing) or ``s3://bucket/prefix``.
    manifests : more manifest files (``.txt`` or ``.csv`` with a ``path`` column).
    model, bands, chunk_size, tile_size, batch_size, device, precision, probability_dtype,
        threshold, allow_no_crs, resample, resampling, rescale, engine : as for
        :func:`geounet.predict` (one setting for every scene).
    raster : also keep each scene's prediction raster: ``none``, ``zarr`` or ``cog``.
    vector_format : ``gpkg`` (default locally), ``parquet`` (GeoParquet; default and
        recommended for ``s3://``) or ``fgb``. GeoPackage cannot be written to ``s3://``.
    vectorize_options : keywords of :func:`geounet.vectorize` (min_area, simplify, ...).
    resume : skip scenes whose outputs and done record exist (same settings), and finish
        interrupted scenes from their completed chunks.
    overwrite : recompute scenes finished by an earlier run and replace their outputs.
    client : a ``distributed.Client``, a scheduler address, ``"threads"``/``"synchronous"``
        (in-process), or None for one local cluster for the whole job.
    workers : worker processes of the local cluster (threads for ``"threads"``).
    window : most tasks in flight over all scenes; default twice the cluster's threads, at
        least 4. It bounds client memory and keeps workers busy across scene boundaries.
    work_dir : where stores are built when ``out_dir`` is ``s3://`` (must be reachable by the
        workers, e.g. a shared file system for a remote cluster; keep it for ``resume``);
        default a folder in the system temp dir named after ``out_dir``. For a local
        ``out_dir`` stores are built in ``out_dir`` under hidden temporary names.
    progress : ``callback(chunks_done, chunks_total, pixels_done)`` over all scenes' chunks;
        the total counts planned scenes' chunks plus an estimate for scenes not planned yet.
    write_tables : write ``batch.csv`` and ``batch.json`` into ``out_dir``.

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
    from geounet import output
    from geounet.pipeline import runs_here

    start = time.perf_counter()
    out_dir = os.fspath(out_dir)
    remote = objectstore.is_s3(out_dir)
    if not remote:
        out_dir = os.path.abspath(out_dir)
    if raster not in choices(BatchRaster):
        raise InputError(
            f"raster {raster!r} is not a choice; use one of {', '.join(choices(BatchRaster))}."
        )
    fmt: VectorFormat = vector_format or ("parquet" if remote else "gpkg")
    if fmt not in choices(VectorFormat):
        raise UnsupportedFormatError(
            f"vector format {fmt!r} is not supported; use one of {', '.join(choices(VectorFormat))}."
        )
    if remote and fmt == "gpkg":
        raise UnsupportedFormatError(
            f"GeoPackage cannot be written to object storage ({out_dir!r}): SQLite needs a local "
            "file; use vector_format='parquet' (--format parquet, GeoParquet) for s3://, or a "
            "local --out-dir for GeoPackage."
        )
    if window is not None and window < 1:
        raise InputError(f"window {window} is not positive; give 1 or more tasks in flight.")
    if model is not None and not objectstore.is_url(model):
        model = os.path.abspath(model)
    scene_list = resolve_scenes(scenes, manifests)
    names = _check_names(scene_list)
    if remote:
        objectstore.configure_environment()
        work = os.path.abspath(os.fspath(work_dir)) if work_dir else _default_work_dir(out_dir)
        Path(work).mkdir(parents=True, exist_ok=True)
    else:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        work = out_dir
    finished_before = objectstore.listing(objectstore.join(out_dir, DONE_DIR))
    if finished_before and not (resume or overwrite):
        example = sorted(finished_before)[0]
        raise OutputExistsError(
            f"{out_dir!r} holds {len(finished_before)} finished scene(s) of an earlier batch "
            f"(e.g. {DONE_DIR}/{example}); pass resume=True (--resume) to skip them, "
            "overwrite=True (--overwrite) to recompute them, or choose another output folder."
        )
    if any(objectstore.is_s3(s) for s in scene_list):
        objectstore.configure_environment()  # GDAL reads s3:// scenes with the same endpoint

    plan_options = dict(model=model, bands=bands, chunk_size=chunk_size, tile_size=tile_size,
                        device=device, precision=precision,
                        probability_dtype=probability_dtype, threshold=threshold,
                        allow_no_crs=allow_no_crs, check_device=runs_here(client),
                        resample=resample, resampling=resampling, rescale=rescale,
                        engine=engine)
    options = dict(vectorize_options or {})
    _check_vectorize_options(options)
    token = uuid.uuid4().hex[:8]
    rows: dict[int, SceneResult] = {}
    totals = {"known": 0, "planned": 0, "done": 0, "pixels": 0}

    def fail(index: int, scene: str, name: str, exc: BaseException, started: float,
             megapixels: float = 0.0, note: str = "", **counts: int) -> None:
        message = str(exc) if isinstance(exc, GeounetError) else f"{type(exc).__name__}: {exc}"
        message += note
        log.warning("scene %s failed: %s", scene, message)
        rows[index] = SceneResult(scene, name, "failed", megapixels,
                                  time.perf_counter() - started, {}, message, **counts)

    def report() -> None:
        if progress is None:
            return
        unplanned = len(scene_list) - totals["planned"]
        mean = totals["known"] / max(1, totals["planned"])
        progress(totals["done"], totals["known"] + round(mean * unplanned), totals["pixels"])

    def planned(index: int, scene: str, name: str) -> _Scene | None:
        """Plan one scene and open its store; None (and a row) if it is skipped or failed."""
        from geounet.pipeline import _check_partial_store, plan_prediction, prepare_store

        started = time.perf_counter()
        try:
            plan = plan_prediction(scene, **plan_options)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - any one scene's failure is its row
            fail(index, scene, name, exc, started)
            return None
        megapixels = plan.info.height * plan.info.width / 1e6
        try:
            if plan.info.crs_wkt is None:
                from geounet.errors import GeoreferenceError

                raise GeoreferenceError(
                    f"scene {scene!r} has no CRS, and batch writes polygons, which need one; "
                    "assign a CRS (e.g. gdal_edit.py -a_srs EPSG:32633) or run `geounet "
                    "predict --allow-no-crs` on it alone for a raster in pixel coordinates."
                )
            record_url = _done_record_url(out_dir, name)
            if resume and name + ".json" in finished_before:
                skipped = _skip_finished(record_url, scene, name, plan.run)
                if skipped is not None:  # its chunks count as done on the progress bar
                    rows[index] = skipped
                    totals["known"] += skipped.chunks
                    totals["done"] += skipped.chunks
                    totals["pixels"] += plan.info.height * plan.info.width
                    return None
            if not (overwrite or resume):  # resume replaces outputs of an unfinished finish
                _check_outputs_free(out_dir, name, fmt, raster, plan)
            store_path = output.temporary_path(Path(work) / f"{name}.zarr")
            # an interrupted run's chunks are never discarded silently (name --resume)
            _check_partial_store(store_path, resume=resume, overwrite=overwrite)
            spec, done = prepare_store(plan, store_path, probability_dtype=probability_dtype,
                                       resume=resume)
        except Exception as exc:  # noqa: BLE001
            fail(index, scene, name, exc, started, megapixels)
            return None
        chunks = len(plan.grid.chunks())
        totals["known"] += chunks
        totals["done"] += len(done)
        totals["pixels"] += sum(int(r.get("pixels", 0)) for r in done.values())
        return _Scene(index, scene, name, plan, spec, store_path, started, chunks, len(done),
                      chunks - len(done), set(done))

    def tasks() -> Iterator[tuple[_Scene, Any]]:
        """(scene, chunk task or None for 'finish now'), planning each scene lazily."""
        from geounet.pipeline import ChunkTask

        for index, (scene, name) in enumerate(zip(scene_list, names)):
            job = planned(index, scene, name)
            totals["planned"] += 1
            report()
            if job is None:
                continue
            if job.plan.runner.model is not None:  # to every worker, once per model per job
                ship_model(connected[0], job.plan.runner.model, job.plan.runner.model_sha256)
            todo = [c for c in job.plan.grid.chunks()
                    if output.chunk_id(c.y0, c.x0) not in job.done_ids]
            job.done_ids = set()
            if not todo:
                yield job, None
            for chunk in todo:
                if job.failed:
                    break
                yield job, ChunkTask(job.plan.info, chunk, job.plan.grid, job.plan.runner,
                                     job.store, batch_size, threshold)

    from geounet.cluster import DEFAULT_RETRY, TaskFailure, completion_queue, ship_model
    from geounet.pipeline import run_chunk_task

    connected: list[Any] = []  # the job's client, set once the cluster is up

    with _cluster(client, workers, device) as on:
        connected.append(on)
        if window is None:
            threads = sum(on.nthreads().values()) if hasattr(on, "nthreads") else 1
            window = max(4, 2 * threads)
        pending = completion_queue()
        inflight: dict[Any, tuple[_Scene, str]] = {}
        source = tasks()

        def submit_finish(job: _Scene) -> None:
            task = FinishTask(str(job.store_path), job.name, out_dir, work, fmt, raster,
                              options, overwrite or resume)
            future = on.submit(finish_scene, task, key=f"geounet-finish-{job.index}-{token}",
                               pure=False)
            inflight[future] = (job, "finish")
            job.futures.add(future)
            pending.add(future)

        def fill() -> None:
            while len(inflight) < window:
                item = next(source, None)
                if item is None:
                    return
                job, task = item
                if task is None:
                    submit_finish(job)
                    continue
                key = f"geounet-chunk-{job.index}-{task.chunk.y0}-{task.chunk.x0}-{token}"
                future = on.submit(run_chunk_task, task, key=key, pure=False,
                                   retries=DEFAULT_RETRY.task_retries)
                inflight[future] = (job, "chunk")
                job.futures.add(future)
                pending.add(future)

        def scene_failed(job: _Scene, exc: BaseException, kind: str) -> None:
            job.failed = True
            others = [f for f in job.futures if f in inflight]
            if others:
                on.cancel(others)
            note = ""
            from geounet.errors import TransientError

            user_error = isinstance(exc, GeounetError) and not isinstance(exc, TransientError)
            if user_error or kind == "finish":
                output.remove_path(job.store_path)  # a bad input: nothing to resume
            else:
                note = (f" (its {job.finished + job.resumed} completed chunk(s) are kept; rerun "
                        "with --resume to finish the scene)")
            fail(job.index, job.scene, job.name, exc, job.started,
                 job.plan.info.height * job.plan.info.width / 1e6, note, chunks=job.chunks,
                 chunks_computed=job.finished, chunks_resumed=job.resumed)

        try:
            fill()
            for future in pending:
                job, kind = inflight.pop(future)
                job.futures.discard(future)
                if job.failed:
                    fill()
                    continue
                try:
                    value = future.result()
                except Exception as exc:  # noqa: BLE001 - the scene fails, the batch goes on
                    scene_failed(job, exc, kind)
                    fill()
                    continue
                if isinstance(value, TaskFailure):  # a user error: not retried
                    scene_failed(job, value.error, kind)
                    fill()
                    continue
                if kind == "chunk":
                    job.finished += 1
                    totals["done"] += 1
                    totals["pixels"] += int(value["pixels"])
                    report()
                    if job.finished == job.todo:
                        submit_finish(job)
                else:
                    row = SceneResult(
                        job.scene, job.name, "done",
                        job.plan.info.height * job.plan.info.width / 1e6,
                        time.perf_counter() - job.started, dict(value["objects"]), None,
                        job.chunks, job.finished, job.resumed, tuple(value["outputs"]))
                    objectstore.write_text(
                        _done_record_url(out_dir, job.name),
                        json.dumps({"run": job.plan.run, "result": row.to_dict()}))
                    rows[job.index] = row
                fill()
        except BaseException:
            if inflight:
                on.cancel(list(inflight))
            log.warning("batch interrupted; completed chunks are kept: rerun the same command "
                        "with --resume to finish it")
            raise

    result = BatchResult(tuple(rows[i] for i in sorted(rows)), out_dir,
                         time.perf_counter() - start)
    if write_tables:
        paths = []
        for name, text in zip(TABLE_NAMES, (result.to_csv(), result.to_json())):
            url = objectstore.join(out_dir, name)
            objectstore.write_text(url, text)
            paths.append(url)
        result = BatchResult(result.scenes, out_dir, result.seconds, tuple(paths))
    return result


def _check_vectorize_options(options: dict[str, Any]) -> None:
    import inspect

    from geounet.vectorization import vectorize

    try:
        inspect.signature(vectorize).bind(None, "x.gpkg", overwrite=True, **options)
    except TypeError as exc:
        raise InputError(
            f"vectorize_options {options!r} do not fit geounet.vectorize ({exc}); use its "
            "keywords, e.g. min_area, simplify, regularize, fill_holes, centerlines."
        ) from None


def _skip_finished(record_url: str, scene: str, name: str,
                   run: dict[str, Any]) -> SceneResult | None:
    """The row of a scene an earlier run finished with the same settings, or None to redo it.

    Raises
    ------
    InputError
        The scene was finished with other settings (scene file, model, sizes changed).
    """
    text = objectstore.read_text(record_url)
    try:
        record = json.loads(text) if text else None
    except ValueError:
        record = None
    if not record:
        return None
    stored = record.get("run") or {}
    changed = sorted(k for k in set(stored) | set(run) if stored.get(k) != run.get(k))
    if changed:
        raise InputError(
            f"scene {scene!r} was finished by an earlier batch with other settings "
            f"({', '.join(f'{k}: {stored.get(k)!r} -> {run.get(k)!r}' for k in changed)}); "
            "rerun with --overwrite to recompute it, or with the same settings."
        )
    previous = SceneResult.from_dict(record["result"])
    if not all(objectstore.exists(url) for url in previous.outputs):
        log.info("outputs of %s are missing; computing it again", name)
        return None
    return SceneResult(scene, name, "skipped", previous.megapixels, 0.0, previous.objects,
                       None, previous.chunks, 0, previous.chunks, previous.outputs)


def _check_outputs_free(out_dir: str, name: str, fmt: VectorFormat, raster: BatchRaster,
                        plan: Plan) -> None:
    """Raise OutputExistsError if a scene's final outputs exist (without overwrite)."""
    from geounet.vectorization import CENTERLINE_LAYER

    layers = [c for c in plan.card.classes if c != "background"]
    if fmt == "gpkg":
        targets = [f"{name}.gpkg"]
    else:
        targets = [f"{name}_{layer}.{fmt}" for layer in [*layers, CENTERLINE_LAYER]]
    if raster != "none":
        targets.append(name + (".zarr" if raster == "zarr" else ".tif"))
    for target in targets:
        url = objectstore.join(out_dir, target)
        if objectstore.exists(url):
            raise OutputExistsError(
                f"output {url!r} already exists; pass --overwrite to replace it, --resume to "
                "skip finished scenes, or choose another --out-dir."
            )
