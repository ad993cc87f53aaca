"""The global tile grid: chunk cores, tile windows and their halos, as pure geometry (no files).

One grid is anchored at the scene origin ``(0, 0)``. Tile *cores* sit at multiples of the
``stride`` (itself a multiple of the model's ``alignment = 2**depth``), so the pooling windows
of every tile line up with those of whole-scene inference. A chunk computes exactly the tiles
that touch its core; therefore the output of a pixel never depends on how the scene is cut
into chunks.

Two modes, chosen by the model's convolution padding:

``valid``
    Tile input = core + ``halo`` on each side (+ a few extra pixels at the bottom/right to reach
    a valid input size; their output is discarded). Tile cores partition the scene: every
    output pixel comes from exactly one tile, no blending, and the result equals whole-scene
    inference on the mirrored scene.
``same``
    Tile input = core + ``halo`` on each side, the whole tile output is used and neighbouring
    tiles overlap by ``2 * halo``; overlapping outputs are blended (:mod:`geounet.engine.blend`).
    A tile reaches ``halo`` pixels into the chunks next to its own, so the pixels within
    ``halo`` of a chunk seam (:meth:`TileGrid.seam_rects`) are blended from the tiles of up to
    four chunks: each chunk keeps its tiles' outputs there (:meth:`TileGrid.tile_seam_rects`)
    and the seam is finished once its neighbours have run (the seam exchange,
    ``docs/ARCHITECTURE.md`` invariant 3).

The package's modules: :mod:`~geounet.engine.tiling.grid` (the grid itself: chunks, tiles,
seams) and :mod:`~geounet.engine.tiling.plan` (sizes from the model's :class:`SizeRules`,
:func:`plan_tiles`). Every public name is importable from ``geounet.engine.tiling``.
"""

from __future__ import annotations

from geounet.engine.tiling.grid import (
    ChunkWindow,
    Rect,
    TileGrid,
    TileWindow,
    clip_rect,
    round_chunk_size,
)
from geounet.engine.tiling.plan import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_TILE_CORE,
    SizeRules,
    default_tile_size,
    model_pixels_per_output_pixel,
    plan_tiles,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_TILE_CORE",
    "ChunkWindow",
    "Rect",
    "SizeRules",
    "TileGrid",
    "TileWindow",
    "clip_rect",
    "default_tile_size",
    "model_pixels_per_output_pixel",
    "plan_tiles",
    "round_chunk_size",
]
