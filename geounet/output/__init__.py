"""Prediction outputs: the georeferenced Zarr v3 store written chunk by chunk, and the COG made from it.

Each task writes whole Zarr chunks of its own region of the store and leaves a completion
marker, which is what resume reads; outputs are built under a temporary name and renamed into
place only when complete. The store's layout: :mod:`~geounet.output.store` and
docs/CONTRACTS.md, "Prediction store".

The package's modules, one job each: :mod:`~geounet.output.paths` (output formats, temporary
names, atomic replacement), :mod:`~geounet.output.store` (the store, resume markers, the
record of published outputs), :mod:`~geounet.output.cog` (the COG and its categorical
sidecar) and :mod:`~geounet.output.regrid` (a store written onto another grid). Every public name is importable from ``geounet.output``.
"""

from __future__ import annotations

from geounet.output.cog import (
    CLASS_COLOURS,
    COG_BLOCK_SIZE,
    class_band_pam,
    class_colours,
    write_cog,
)
from geounet.output.paths import (
    SUFFIXES,
    check_new_path,
    check_output,
    output_format,
    remove_path,
    replace_path,
    temporary_path,
)
from geounet.output.regrid import regrid_store
from geounet.output.store import (
    StoreSpec,
    changed_settings,
    check_resumable,
    chunk_id,
    create_store,
    done_chunks,
    finalize_store,
    load_seam_data,
    mark_done,
    open_prediction,
    quantize,
    read_outputs,
    read_run,
    record_output,
    recorded_output,
    save_seam_data,
    seam_data_chunks,
    write_chunk,
)

__all__ = [
    "CLASS_COLOURS",
    "COG_BLOCK_SIZE",
    "SUFFIXES",
    "StoreSpec",
    "changed_settings",
    "check_new_path",
    "check_output",
    "check_resumable",
    "chunk_id",
    "class_band_pam",
    "class_colours",
    "create_store",
    "done_chunks",
    "finalize_store",
    "load_seam_data",
    "mark_done",
    "open_prediction",
    "output_format",
    "quantize",
    "read_outputs",
    "read_run",
    "record_output",
    "recorded_output",
    "regrid_store",
    "remove_path",
    "replace_path",
    "save_seam_data",
    "seam_data_chunks",
    "temporary_path",
    "write_chunk",
    "write_cog",
]
