"""A batch scene's final outputs: the finish task that writes them, and the check they are new.

:func:`finish_scene` turns a scene's complete store into its final outputs (vectors, the
optional raster, uploads to object storage); it travels to a worker by reference, as
``FinishTask``, plain values. Re-exported by :mod:`geounet.batch.job`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geounet import objectstore
from geounet.config import BatchRaster, VectorFormat
from geounet.errors import OutputExistsError

RASTER_SUFFIXES = {"zarr": ".zarr", "cog": ".tif"}
"""A batch scene's raster name: ``NAME.zarr`` or ``NAME.tif``."""

if TYPE_CHECKING:
    from geounet.run.planning import Plan
    from geounet.run.store import SceneGrid
    from geounet.vectorization import VectorizeOptions


@dataclass(frozen=True)
class FinishTask:
    """Turn a scene's complete store into its final outputs: plain values, cheap to pickle."""

    store: str
    name: str
    out_dir: str
    work_dir: str
    vector_format: VectorFormat
    raster: BatchRaster
    vectorize: VectorizeOptions
    overwrite: bool
    grid: SceneGrid | None = None
    """The scene's own grid for the raster of a resampled scene (``output_grid="scene"``)."""


def finish_scene(task: FinishTask) -> dict[str, Any]:
    """Vectorize the store, publish the raster (local or ``s3://``) with the one publisher
    of every run (:func:`geounet.run.store.publish_raster`); return
    ``{"objects": {layer: count}, "outputs": [...]}``. The store is removed at the end."""
    from geounet import output
    from geounet.run.store import publish_raster
    from geounet.vectorization import vectorize

    store = Path(task.store)
    remote = objectstore.is_s3(task.out_dir)
    local_dir = Path(task.work_dir if remote else task.out_dir)
    outputs: list[str] = []
    try:
        vec = local_dir / f"{task.name}.{task.vector_format}"
        result = vectorize(store, vec, task.vectorize, overwrite=task.overwrite or remote)
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
            target = objectstore.join(task.out_dir, task.name + RASTER_SUFFIXES[task.raster])
            publish_raster(store, target, task.raster, overwrite=task.overwrite,
                           grid=task.grid, staging=local_dir)
            outputs.append(target)
    finally:
        output.remove_path(store)
    return {"objects": dict(result.counts), "outputs": outputs}


def check_outputs_free(out_dir: str, name: str, fmt: VectorFormat, raster: BatchRaster,
                        plan: Plan) -> None:
    """Raise OutputExistsError if a scene's final outputs exist (without overwrite)."""
    from geounet.vectorization import (
        CENTERLINE_LAYER,
        EDGES_LAYER,
        NODES_LAYER,
        layer_file_names,
    )

    layers = [c for c in plan.card.classes if c != "background"]
    files = layer_file_names(f"{name}.{fmt}", fmt,
                             [*layers, CENTERLINE_LAYER, EDGES_LAYER, NODES_LAYER])
    targets = list(dict.fromkeys(files.values()))  # vectorize's own naming rule, in order
    if raster != "none":
        targets.append(name + RASTER_SUFFIXES[raster])
    for target in targets:
        url = objectstore.join(out_dir, target)
        if objectstore.exists(url):
            raise OutputExistsError(
                f"output {url!r} already exists; pass --overwrite to replace it, --resume to "
                "skip finished scenes, or choose another --out-dir."
            )
