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
    """Finalize the store, vectorize it, publish the raster (local or ``s3://``); return
    ``{"objects": {layer: count}, "outputs": [...]}``. The store is removed at the end."""
    from geounet import output
    from geounet.vectorization import vectorize

    store = Path(task.store)
    remote = objectstore.is_s3(task.out_dir)
    local_dir = Path(task.work_dir if remote else task.out_dir)
    outputs: list[str] = []
    regridded: list[Path] = []
    try:
        output.finalize_store(store)
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
        if task.raster != "none" and task.grid is not None:
            from geounet.run.store import regridded_store

            store = regridded_store(store, task.grid, local_dir / task.name)
            regridded.append(store)
            output.finalize_store(store)
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
        output.remove_path(Path(task.store))
        for path in regridded:
            output.remove_path(path)
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
        targets.append(name + (".zarr" if raster == "zarr" else ".tif"))
    for target in targets:
        url = objectstore.join(out_dir, target)
        if objectstore.exists(url):
            raise OutputExistsError(
                f"output {url!r} already exists; pass --overwrite to replace it, --resume to "
                "skip finished scenes, or choose another --out-dir."
            )
