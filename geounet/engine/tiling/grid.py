"""The global tile grid as pure geometry (no files): chunk cores, tile windows, their halos
and the seam rectangles of same padding (:class:`TileGrid`). Sizes are planned from a model's
size rules in :mod:`geounet.engine.tiling.plan`; the package's face explains both modes.

Examples
--------
>>> grid = TileGrid(height=301, width=257, chunk_size=128, tile_size=124, halo=20,
...                 stride=80, padding="valid", alignment=8)
>>> [c.shape for c in grid.chunks()][:3]
[(128, 128), (128, 128), (128, 1)]
>>> grid.tiles(grid.chunks()[0])[0]
TileWindow(row=0, col=0, y0=-20, x0=-20, size=124, core_y0=0, core_x0=0, core_height=80, core_width=80)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from geounet.config import Padding
from geounet.errors import TileSizeError

Rect = tuple[int, int, int, int]
"""A rectangle of scene pixels: ``(y0, x0, height, width)``."""


@dataclass(frozen=True)
class ChunkWindow:
    """One chunk core: rows ``y0:y0+height``, columns ``x0:x0+width`` of the scene.

    ``row``/``col`` are the chunk's index in the chunk grid (one chunk task each).
    """

    row: int
    col: int
    y0: int
    x0: int
    height: int
    width: int

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the core."""
        return (self.height, self.width)

    @property
    def y1(self) -> int:
        """End row (exclusive)."""
        return self.y0 + self.height

    @property
    def x1(self) -> int:
        """End column (exclusive)."""
        return self.x0 + self.width


@dataclass(frozen=True)
class TileWindow:
    """One model input window on the global grid.

    ``y0, x0`` is the input origin (may be negative or run past the scene: mirrored there);
    the input is ``size x size``. The core ``core_y0:core_y0+core_height`` (clipped to the
    scene) is the part this tile owns on the grid; in ``valid`` mode it is what reaches the
    output, in ``same`` mode the whole input extent is blended.
    """

    row: int
    col: int
    y0: int
    x0: int
    size: int
    core_y0: int
    core_x0: int
    core_height: int
    core_width: int


@dataclass(frozen=True)
class TileGrid:
    """The global tile grid of one scene (immutable, pure geometry).

    Parameters
    ----------
    height, width : scene size in pixels.
    chunk_size : chunk core side; a multiple of ``alignment``. Edge chunks are smaller.
    tile_size : model input side (every tile, edge tiles included, has this shape).
    halo : context pixels per side around a tile core.
    stride : distance between tile core origins; a multiple of ``alignment``.
        ``valid``: ``stride <= tile_size - 2*halo``; ``same``: ``stride == tile_size - 2*halo``.
    padding : ``valid`` (exact, no blending) or ``same`` (overlapping tiles, blended).
    alignment : ``2**depth`` of the model; tile cores (and chunk cores) start at multiples of it.

    Use :func:`plan_tiles` to build a grid from a model configuration with checked sizes.
    """

    height: int
    width: int
    chunk_size: int
    tile_size: int
    halo: int
    stride: int
    padding: Padding = "valid"
    alignment: int = 1

    def __post_init__(self) -> None:
        for name in ("height", "width", "chunk_size", "tile_size", "stride", "alignment"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise TileSizeError(f"{name} {value!r} is not a positive whole number; give one > 0.")
        if not isinstance(self.halo, int) or self.halo < 0:
            raise TileSizeError(f"halo {self.halo!r} is negative; give 0 or more pixels.")
        if self.padding not in ("valid", "same"):
            raise TileSizeError(f"padding {self.padding!r} is not one of 'valid', 'same'.")
        a = self.alignment
        if self.chunk_size % a:
            raise TileSizeError(
                f"chunk size {self.chunk_size} is not a multiple of {a} (2**depth of the model); "
                f"use {nearest_multiples(self.chunk_size, a)}."
            )
        if self.stride % a:
            raise TileSizeError(
                f"tile stride {self.stride} is not a multiple of {a} (2**depth of the model); "
                f"use {nearest_multiples(self.stride, a)}."
            )
        room = self.tile_size - 2 * self.halo
        if self.padding == "valid" and self.stride > room:
            raise TileSizeError(
                f"tile stride {self.stride} exceeds the tile output {room} "
                f"(tile size {self.tile_size} - 2 x halo {self.halo}); use a stride <= {room} "
                f"or a tile size >= {self.stride + 2 * self.halo}."
            )
        if self.padding == "same":
            if self.chunk_size % self.stride:
                raise TileSizeError(
                    f"chunk size {self.chunk_size} is not a whole number of same-padding tile "
                    f"cores ({self.stride} px), so tiles would straddle chunk seams; use "
                    f"{round_chunk_size(self.chunk_size, self.stride)}."
                )
            if self.stride != room:
                raise TileSizeError(
                    f"tile stride {self.stride} must equal tile size {self.tile_size} - "
                    f"2 x halo {self.halo} = {room} for same-padding tiles; use stride {room}."
                )
            if self.halo % a:
                raise TileSizeError(
                    f"blending halo {self.halo} is not a multiple of {a} (2**depth of the model), "
                    f"so tile inputs would not start on the pooling grid; use "
                    f"{nearest_multiples(self.halo, a)}."
                )

    # ---- derived -----------------------------------------------------------------------
    @property
    def output_offset(self) -> int:
        """Offset of the tile output inside the tile input (``halo`` for valid, 0 for same)."""
        return self.halo if self.padding == "valid" else 0

    @property
    def output_size(self) -> int:
        """Side of one tile's model output (``tile_size - 2*halo`` valid, ``tile_size`` same)."""
        return self.tile_size - 2 * self.halo if self.padding == "valid" else self.tile_size

    @property
    def blended(self) -> bool:
        """True when overlapping tile outputs are blended (same padding)."""
        return self.padding == "same"

    @property
    def chunk_rows(self) -> int:
        """Number of chunk rows."""
        return math.ceil(self.height / self.chunk_size)

    @property
    def chunk_cols(self) -> int:
        """Number of chunk columns."""
        return math.ceil(self.width / self.chunk_size)

    @property
    def tile_rows(self) -> int:
        """Number of tile rows of the global grid (tile cores starting inside the scene)."""
        return math.ceil(self.height / self.stride)

    @property
    def tile_cols(self) -> int:
        """Number of tile columns of the global grid."""
        return math.ceil(self.width / self.stride)

    # ---- chunks ------------------------------------------------------------------------
    def chunks(self) -> list[ChunkWindow]:
        """All chunk cores in row-major order; they partition the scene exactly."""
        return [self.chunk(row, col) for row in range(self.chunk_rows)
                for col in range(self.chunk_cols)]

    def chunk(self, row: int, col: int) -> ChunkWindow:
        """The chunk core at chunk-grid index ``(row, col)``."""
        if not (0 <= row < self.chunk_rows and 0 <= col < self.chunk_cols):
            raise TileSizeError(
                f"chunk index ({row}, {col}) is outside the {self.chunk_rows} x "
                f"{self.chunk_cols} chunk grid; use 0 <= row < {self.chunk_rows} and "
                f"0 <= col < {self.chunk_cols}."
            )
        y0, x0 = row * self.chunk_size, col * self.chunk_size
        return ChunkWindow(
            row,
            col,
            y0,
            x0,
            min(self.chunk_size, self.height - y0),
            min(self.chunk_size, self.width - x0),
        )

    # ---- tiles -------------------------------------------------------------------------
    def _tile_range(self, start: int, stop: int, n_tiles: int, touching: bool) -> range:
        """Global tile indices along one axis: those whose core starts in ``[start, stop)``
        (``touching=False``; for ``valid`` also those whose core touches it), or those whose
        output extent touches it."""
        s = self.stride
        if self.padding == "valid" or not touching:
            first, last = start // s, (stop - 1) // s
        else:  # tile extent [i*s - halo, i*s + s + halo) must intersect [start, stop)
            first = max(0, (start - s - self.halo) // s + 1)
            last = min(n_tiles - 1, (stop + self.halo - 1) // s)
        return range(max(first, 0), min(last, n_tiles - 1) + 1)

    def tile_indices(self, chunk: ChunkWindow, *, touching: bool = False) -> tuple[range, range]:
        """Global tile row and column indices of the tiles ``chunk`` runs: those whose core
        lies in its core (each tile of the grid belongs to one chunk).

        ``touching=True``: every tile whose output reaches the chunk's core, the chunk's own
        and (``same`` padding) its neighbours' tiles within ``halo`` of its seams; what one
        chunk needs to be blended on its own (:func:`geounet.engine.inference.predict_chunk`).
        """
        return (
            self._tile_range(chunk.y0, chunk.y1, self.tile_rows, touching),
            self._tile_range(chunk.x0, chunk.x1, self.tile_cols, touching),
        )

    def tile(self, row: int, col: int) -> TileWindow:
        """The tile at global grid index ``(row, col)``."""
        s = self.stride
        cy, cx = row * s, col * s
        return TileWindow(
            row,
            col,
            cy - self.halo,
            cx - self.halo,
            self.tile_size,
            cy,
            cx,
            min(s, self.height - cy),
            min(s, self.width - cx),
        )

    def tiles(self, chunk: ChunkWindow, *, touching: bool = False) -> list[TileWindow]:
        """The tiles ``chunk`` runs, row-major (see :meth:`tile_indices` for ``touching``)."""
        rows, cols = self.tile_indices(chunk, touching=touching)
        return [self.tile(r, c) for r in rows for c in cols]

    def chunk_input_window(self, chunk: ChunkWindow, *, touching: bool = False) -> Rect:
        """``(y0, x0, height, width)`` of the input covering all tiles of ``chunk``
        (:meth:`tiles` with the same ``touching``).

        The window may start before the scene or end after it; those pixels are mirrored.
        """
        rows, cols = self.tile_indices(chunk, touching=touching)
        y0 = rows[0] * self.stride - self.halo
        x0 = cols[0] * self.stride - self.halo
        y1 = rows[-1] * self.stride - self.halo + self.tile_size
        x1 = cols[-1] * self.stride - self.halo + self.tile_size
        return (y0, x0, y1 - y0, x1 - x0)

    # ---- seams (same padding) -----------------------------------------------------------
    def neighbours(self, chunk: ChunkWindow) -> list[ChunkWindow]:
        """The chunks whose tiles can reach ``chunk``'s core, row-major, ``chunk`` excluded:
        the eight around it (more when the halo exceeds the chunk side); none for ``valid``."""
        if not self.blended:
            return []
        r = -(-self.halo // self.chunk_size)
        return [self.chunk(i, j)
                for i in range(max(chunk.row - r, 0), min(chunk.row + r + 1, self.chunk_rows))
                for j in range(max(chunk.col - r, 0), min(chunk.col + r + 1, self.chunk_cols))
                if (i, j) != (chunk.row, chunk.col)]

    def interior(self, chunk: ChunkWindow) -> Rect:
        """The part of ``chunk``'s core that only its own tiles reach: the core less ``halo``
        pixels on each side with a neighbouring chunk (``same`` padding; the whole core for
        ``valid``). Height or width may be 0 for a thin edge chunk."""
        if not self.blended:
            return (chunk.y0, chunk.x0, chunk.height, chunk.width)
        h = self.halo
        y0 = chunk.y0 + (h if chunk.row > 0 else 0)
        x0 = chunk.x0 + (h if chunk.col > 0 else 0)
        y1 = chunk.y1 - (h if chunk.row < self.chunk_rows - 1 else 0)
        x1 = chunk.x1 - (h if chunk.col < self.chunk_cols - 1 else 0)
        return (y0, x0, max(y1 - y0, 0), max(x1 - x0, 0))

    def seam_rects(self, chunk: ChunkWindow) -> list[Rect]:
        """Disjoint rectangles covering the pixels of ``chunk``'s core that neighbouring
        chunks' tiles also reach (within ``halo`` of a seam); empty for ``valid`` padding or
        a chunk without neighbours. These pixels are final only once the neighbours ran."""
        return _frame((chunk.y0, chunk.x0, chunk.height, chunk.width), self.interior(chunk))

    def tile_seam_rects(self, tile: TileWindow, chunk: ChunkWindow) -> list[Rect]:
        """Disjoint rectangles of ``tile``'s output (clipped to the scene) that lie in a seam
        region, of ``chunk`` (the tile's own chunk) or of a neighbour: the parts another
        chunk's seam blend needs. Empty for ``valid`` padding."""
        if not self.blended:
            return []
        extent = clip_rect((tile.y0, tile.x0, self.output_size, self.output_size),
                       (0, 0, self.height, self.width))
        return _frame(extent, clip_rect(self.interior(chunk), extent))

    # ---- cost --------------------------------------------------------------------------
    def overlap_overhead(self) -> float:
        """Model input pixels computed per scene pixel output, over all chunks.

        Counts every tile each chunk runs (:meth:`tiles`), as the pipeline does.
        """
        total = 0
        for chunk in self.chunks():
            rows, cols = self.tile_indices(chunk)
            total += len(rows) * len(cols)
        return total * self.tile_size**2 / (self.height * self.width)


def clip_rect(rect: Rect, bounds: Rect) -> Rect:
    """``rect`` cut to ``bounds`` (height and width 0 when they do not overlap).

    >>> clip_rect((-5, 2, 10, 10), (0, 0, 8, 8))
    (0, 2, 5, 6)
    """
    y0, x0 = max(rect[0], bounds[0]), max(rect[1], bounds[1])
    y1 = min(rect[0] + rect[2], bounds[0] + bounds[2])
    x1 = min(rect[1] + rect[3], bounds[1] + bounds[3])
    return (y0, x0, max(y1 - y0, 0), max(x1 - x0, 0))


def _frame(outer: Rect, inner: Rect) -> list[Rect]:
    """Disjoint rectangles covering ``outer`` less ``inner`` (``inner`` inside ``outer`` or
    empty): a band above, one below, and the two sides between them.

    >>> _frame((0, 0, 10, 10), (2, 3, 6, 4))
    [(0, 0, 2, 10), (8, 0, 2, 10), (2, 0, 6, 3), (2, 7, 6, 3)]
    """
    if outer[2] <= 0 or outer[3] <= 0:
        return []
    if inner[2] <= 0 or inner[3] <= 0:
        return [outer]
    oy0, ox0, oh, ow = outer
    iy0, ix0, ih, iw = inner
    oy1, ox1, iy1, ix1 = oy0 + oh, ox0 + ow, iy0 + ih, ix0 + iw
    rects = [(oy0, ox0, iy0 - oy0, ow), (iy1, ox0, oy1 - iy1, ow),
             (iy0, ox0, ih, ix0 - ox0), (iy0, ix1, ih, ox1 - ix1)]
    return [r for r in rects if r[2] > 0 and r[3] > 0]


def round_chunk_size(chunk_size: int, core: int) -> int:
    """A chunk side made of whole tile cores: ``chunk_size`` rounded to the nearest multiple
    of ``core`` (halves round up), at least one core.

    With chunk seams on tile-core boundaries every tile belongs to exactly one chunk, so no
    model pixel is computed twice whatever chunk size is asked for.

    Examples
    --------
    >>> round_chunk_size(2048, 1024), round_chunk_size(2000, 448), round_chunk_size(100, 448)
    (2048, 1792, 448)
    """
    if core <= 0:
        raise TileSizeError(f"tile core {core} is not positive; give a core of 1 pixel or more.")
    return max(1, (2 * chunk_size + core) // (2 * core)) * core


def nearest_multiples(value: int, step: int) -> str:
    """Say which multiples of ``step`` are nearest to ``value``: ``"496 or 512"``."""
    low = (value // step) * step
    if low == value:
        return str(value)
    if low < step:
        return str(step)
    return f"{low} or {low + step}"


