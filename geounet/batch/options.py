"""What a batch writes for each scene, as one frozen, validated value: :class:`BatchOptions`.

What each scene computes is a :class:`geounet.PredictOptions`; how its polygons are made, a
:class:`geounet.VectorizeOptions` (``BatchOptions.vectorize``). Checked once, in
``__post_init__``; what depends on the output folder (GeoPackage cannot go to ``s3://``) is
checked by :func:`geounet.batch.run_batch`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from geounet.config import BatchRaster, VectorFormat, choices
from geounet.errors import InputError, UnsupportedFormatError
from geounet.vectorization import VectorizeOptions


@dataclass(frozen=True)
class BatchOptions:
    """The outputs of a batch and how it runs (besides what each scene computes).

    Attributes
    ----------
    raster : also keep each scene's prediction raster: ``none``, ``zarr`` or ``cog``.
    vector_format : ``gpkg`` (default locally), ``parquet`` (GeoParquet; default and
        recommended for ``s3://``) or ``fgb``. GeoPackage cannot be written to ``s3://``.
    vectorize : how each scene's polygons are made (:class:`geounet.VectorizeOptions`).
    window : most tasks in flight over all scenes; default twice the cluster's threads, at
        least 4. It bounds client memory and keeps workers busy across scene boundaries.
    work_dir : where stores are built when the output folder is ``s3://`` (must be reachable
        by the workers, e.g. a shared file system for a remote cluster; keep it for
        ``resume``); default a folder in the system temp dir named after the output folder.
        For a local output folder stores are built in it under hidden temporary names.
    write_tables : write ``batch.csv`` and ``batch.json`` into the output folder.

    Raises
    ------
    InputError, UnsupportedFormatError
        A raster or vector format that is not a choice, a window below 1.
    """

    raster: BatchRaster = "none"
    vector_format: VectorFormat | None = None
    vectorize: VectorizeOptions = field(default_factory=VectorizeOptions)
    window: int | None = None
    work_dir: str | os.PathLike[str] | None = None
    write_tables: bool = True

    def __post_init__(self) -> None:
        if self.raster not in choices(BatchRaster):
            raise InputError(
                f"raster {self.raster!r} is not a choice; use one of "
                f"{', '.join(choices(BatchRaster))}."
            )
        if self.vector_format is not None and self.vector_format not in choices(VectorFormat):
            raise UnsupportedFormatError(
                f"vector format {self.vector_format!r} is not supported; use one of "
                f"{', '.join(choices(VectorFormat))}."
            )
        if self.window is not None and self.window < 1:
            raise InputError(
                f"window {self.window} is not positive; give 1 or more tasks in flight.")
        if not isinstance(self.vectorize, VectorizeOptions):
            raise InputError(
                f"vectorize {self.vectorize!r} is not a geounet.VectorizeOptions; give e.g. "
                "VectorizeOptions(regularize=True)."
            )
