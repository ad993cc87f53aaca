"""Planning the tile grid from a model's size rules: default tile and chunk sizes, and
:func:`plan_tiles`, which checks every size and names sizes that work.

The model is seen only through the :class:`SizeRules` protocol, so this package stays pure
geometry (it imports neither torch nor :mod:`geounet.model`; an import contract in
``pyproject.toml`` checks that).
"""

from __future__ import annotations

import math
from typing import Protocol

from geounet.config import Padding
from geounet.engine.tiling.grid import TileGrid, nearest_multiples, round_chunk_size
from geounet.errors import TileSizeError

DEFAULT_CHUNK_SIZE = 2048
"""Default chunk core side in pixels (a multiple of every alignment up to 2**11)."""

DEFAULT_TILE_CORE = 1024
"""Target tile core side for valid-padding models: large tiles keep the halo overhead small."""


class SizeRules(Protocol):
    """The model's size rules the tile grid needs, and nothing else of the model.

    :class:`geounet.model.UNetConfig` has them; the grid is planned from any object that does,
    so this package stays pure geometry (it imports neither torch nor :mod:`geounet.model`;
    an import contract in ``pyproject.toml`` checks that).
    """

    @property
    def padding(self) -> Padding:
        """``valid`` (tiles exact, no blending) or ``same`` (tiles overlap and are blended)."""

    @property
    def depth(self) -> int:
        """Number of poolings; named in messages."""

    @property
    def alignment(self) -> int:
        """``2**depth``: tile and chunk cores start at multiples of it."""

    @property
    def halo(self) -> int:
        """Context pixels per side the model needs around an output pixel."""

    def valid_input_sizes(self, lo: int, hi: int) -> list[int]:
        """Input sides in ``[lo, hi]`` the model accepts (``valid`` padding)."""

    def check_input_size(self, input_size: int) -> None:
        """Raise :class:`~geounet.errors.TileSizeError` for an input side the model rejects."""

    def output_size(self, input_size: int) -> int:
        """Output side for an input side ``input_size``."""


def default_tile_size(config: SizeRules, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """Default model input side for ``config`` within chunks of ``chunk_size``.

    The tile core (stride) is the largest multiple of the alignment that divides
    ``chunk_size`` and is at most ``DEFAULT_TILE_CORE`` (1024), so no tile is computed by two
    chunks. ``valid``: the smallest valid input covering that core; the overhead is
    ``(core + 2*halo + extra)**2 / core**2`` (1.40 for a depth-4 net with 1024 cores, 1212 px
    inputs). ``same``: ``core + 2*halo`` (1088 at depth 4, overhead 1.13); the blended seams
    cost ``halo`` per side whatever the tile size, so large tiles mean few of them.

    Examples
    --------
    >>> from geounet.model import UNetConfig  # doctest: +SKIP
    >>> default_tile_size(UNetConfig(depth=4))  # doctest: +SKIP
    1212
    """
    core = _default_core(chunk_size, config.alignment)
    if config.padding == "same":
        return core + 2 * config.halo
    return _valid_input_for_core(config, core)


def _default_core(chunk_size: int, alignment: int) -> int:
    best = alignment
    for core in range(alignment, min(chunk_size, DEFAULT_TILE_CORE) + 1, alignment):
        if chunk_size % core == 0:
            best = core
    return best


def _valid_input_for_core(config: SizeRules, core: int) -> int:
    """Smallest valid input size whose output covers ``core`` pixels."""
    lo = core + 2 * config.halo
    sizes = config.valid_input_sizes(lo, lo + 4 * config.alignment)
    if not sizes:  # pragma: no cover - the contract guarantees one per alignment step
        raise TileSizeError(f"no valid input size between {lo} and {lo + 4 * config.alignment}.")
    return sizes[0]


def plan_tiles(
    config: SizeRules,
    height: int,
    width: int,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    tile_size: int | None = None,
    halo: int | None = None,
) -> TileGrid:
    """Build the global tile grid of a ``height x width`` scene for a model configuration.

    Parameters
    ----------
    config : the model's size rules (:class:`SizeRules`; a :class:`~geounet.model.UNetConfig`).
    height, width : scene size.
    chunk_size : chunk core side, a multiple of ``config.alignment``.
    tile_size : model input side; None picks :func:`default_tile_size`.
        ``valid``: any valid input size of the net (``config.check_input_size``) with an
        output of at least ``alignment`` pixels; the stride is the largest multiple of the
        alignment not above the output (the few extra output pixels are discarded).
        ``same``: a multiple of the alignment larger than ``2*halo``.
        In both modes the tile core (stride) must not exceed ``chunk_size``, and the chunk
        side is then rounded to a whole number of tile cores (:func:`round_chunk_size`:
        nearest multiple, at least one), so chunk seams lie on tile-core boundaries and no
        tile is computed by two chunks; ``grid.chunk_size`` is the side used.
    halo : ``same`` only: blending overlap per side (default ``config.halo``), a multiple of
        the alignment. In ``valid`` mode the halo is the model's and cannot be changed.

    Raises
    ------
    TileSizeError
        For sizes the model cannot use; the message names sizes that work.

    Examples
    --------
    >>> grid = plan_tiles(UNetConfig(depth=2, base_channels=4), 301, 257, chunk_size=128)  # doctest: +SKIP
    """
    a = config.alignment
    if not isinstance(chunk_size, int) or chunk_size <= 0 or chunk_size % a:
        raise TileSizeError(
            f"chunk size {chunk_size} is not a positive multiple of {a} (2**depth for depth "
            f"{config.depth}); use {nearest_multiples(max(int(chunk_size), 1), a)}."
        )
    if tile_size is None:
        tile_size = default_tile_size(config, chunk_size)
    if config.padding == "valid":
        if halo is not None and halo != config.halo:
            raise TileSizeError(
                f"halo {halo} differs from the valid-padding model's halo {config.halo}; the "
                f"halo of a valid net is fixed by its receptive field: leave it unset."
            )
        config.check_input_size(tile_size)
        out = config.output_size(tile_size)
        stride = (out // a) * a
        if stride <= 0:
            smallest = _valid_input_for_core(config, a)
            raise TileSizeError(
                f"tile size {tile_size} gives {out} output pixels, fewer than the alignment {a}; "
                f"use a tile size of at least {smallest}."
            )
        if stride > chunk_size:
            raise TileSizeError(
                f"tile size {tile_size} gives a {stride} px tile core, larger than the chunk "
                f"size {chunk_size}: every chunk would compute the whole tile; use a tile size "
                f"of at most {_valid_input_for_core(config, chunk_size)} or a chunk size of at "
                f"least {stride}."
            )
        chunk_size = round_chunk_size(chunk_size, stride)
        return TileGrid(height, width, chunk_size, tile_size, config.halo, stride, "valid", a)
    halo = config.halo if halo is None else halo
    if tile_size % a or tile_size <= 2 * halo:
        good = max(a * math.ceil((2 * halo + a) / a), a * round(tile_size / a))
        raise TileSizeError(
            f"tile size {tile_size} is not a multiple of {a} (2**depth for depth {config.depth}) "
            f"larger than 2 x halo {2 * halo} for a same-padding net; use {good}."
        )
    if tile_size - 2 * halo > chunk_size:
        raise TileSizeError(
            f"tile size {tile_size} gives a {tile_size - 2 * halo} px tile core (tile size - "
            f"2 x halo {halo}), larger than the chunk size {chunk_size}: every chunk would "
            f"compute the whole tile; use a tile size of at most {chunk_size + 2 * halo} or a "
            f"chunk size of at least {tile_size - 2 * halo}."
        )
    stride = tile_size - 2 * halo
    return TileGrid(height, width, round_chunk_size(chunk_size, stride), tile_size, halo, stride,
                    "same", a)


def model_pixels_per_output_pixel(grid: TileGrid) -> float:
    """Model input pixels computed per scene pixel output by a run over ``grid``.

    A pure count from the tile plan (:meth:`TileGrid.overlap_overhead`): every tile each chunk
    runs (each tile of the grid once), divided by the scene's pixels.
    ``benchmarks/bench_plan.py`` reports it for the default settings.
    """
    return grid.overlap_overhead()
