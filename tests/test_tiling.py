"""Tests for geounet.engine.tiling: the global grid is pure geometry, cores partition, tiles cover."""

from __future__ import annotations

import numpy as np
import pytest

from geounet.engine.tiling import (
    TileGrid,
    default_tile_size,
    model_pixels_per_output_pixel,
    plan_tiles,
    round_chunk_size,
)
from geounet.errors import TileSizeError
from geounet.model import UNetConfig

GEOMETRIES = [
    # height, width, chunk, tile, halo, stride, padding, alignment
    (301, 257, 64, 72, 20, 32, "valid", 4),
    (301, 257, 128, 104, 20, 64, "valid", 4),
    (257, 300, 96, 108, 44, 16, "valid", 8),
    (97, 31, 32, 76, 20, 32, "valid", 4),
    (5, 700, 256, 300, 20, 256, "valid", 4),
    (1, 1, 16, 60, 20, 16, "valid", 4),
    (301, 257, 64, 96, 32, 32, "same", 4),
    (301, 257, 128, 128, 32, 64, "same", 16),
    (200, 333, 48, 80, 16, 48, "same", 16),
    (3, 500, 32, 160, 64, 32, "same", 32),
]


def _grid(geometry: tuple) -> TileGrid:
    return TileGrid(*geometry)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_chunk_cores_partition_scene(geometry: tuple) -> None:
    grid = _grid(geometry)
    count = np.zeros((grid.height, grid.width), dtype=int)
    for chunk in grid.chunks():
        assert chunk.height > 0 and chunk.width > 0
        assert chunk.y0 % grid.chunk_size == 0 and chunk.x0 % grid.chunk_size == 0
        count[chunk.y0 : chunk.y1, chunk.x0 : chunk.x1] += 1
    assert (count == 1).all()
    assert len(grid.chunks()) == grid.chunk_rows * grid.chunk_cols


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_tiles_cover_core_on_global_grid(geometry: tuple) -> None:
    grid = _grid(geometry)
    for chunk in grid.chunks():
        cover = np.zeros(chunk.shape, dtype=int)
        wy0, wx0, wh, ww = grid.chunk_input_window(chunk)
        for tile in grid.tiles(chunk):
            # core origins sit on one global grid anchored at the scene origin, aligned
            assert tile.core_y0 == tile.row * grid.stride and tile.core_x0 == tile.col * grid.stride
            assert tile.core_y0 % grid.alignment == 0 and tile.core_x0 % grid.alignment == 0
            assert tile.y0 == tile.core_y0 - grid.halo and tile.size == grid.tile_size
            # every tile input lies inside the chunk input window
            assert wy0 <= tile.y0 and tile.y0 + tile.size <= wy0 + wh
            assert wx0 <= tile.x0 and tile.x0 + tile.size <= wx0 + ww
            if grid.padding == "valid":
                y0, x0, hh, wwid = tile.core_y0, tile.core_x0, tile.core_height, tile.core_width
            else:
                y0, x0, hh, wwid = tile.y0, tile.x0, tile.size, tile.size
            ya, yb = max(y0, chunk.y0), min(y0 + hh, chunk.y1)
            xa, xb = max(x0, chunk.x0), min(x0 + wwid, chunk.x1)
            cover[ya - chunk.y0 : yb - chunk.y0, xa - chunk.x0 : xb - chunk.x0] += 1
        if grid.padding == "valid":
            assert (cover == 1).all(), "valid tile cores must partition the chunk core"
        else:
            assert (cover >= 1).all()


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_every_tile_is_run_by_exactly_one_chunk(geometry: tuple) -> None:
    """Issue 11: chunk seams on tile-core boundaries, each tile of the grid run once, by the
    chunk holding its core origin (both paddings)."""
    grid = _grid(geometry)
    runs = [(t.row, t.col, c.row, c.col) for c in grid.chunks() for t in grid.tiles(c)]
    assert len(runs) == len({r[:2] for r in runs}) == grid.tile_rows * grid.tile_cols
    for row, col, crow, ccol in runs:
        chunk, tile = grid.chunk(crow, ccol), grid.tile(row, col)
        assert chunk.y0 <= tile.core_y0 < chunk.y1 and chunk.x0 <= tile.core_x0 < chunk.x1
    cost = len(runs) * grid.tile_size**2 / (grid.height * grid.width)
    assert grid.overlap_overhead() == pytest.approx(cost)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_touching_tiles_are_exactly_those_reaching_the_core(geometry: tuple) -> None:
    grid = _grid(geometry)
    for chunk in grid.chunks():
        chosen = {(t.row, t.col) for t in grid.tiles(chunk, touching=True)}
        expected = set()
        for row in range(grid.tile_rows):
            for col in range(grid.tile_cols):
                t = grid.tile(row, col)
                if grid.padding == "valid":
                    ys, ye = t.core_y0, t.core_y0 + grid.stride
                    xs, xe = t.core_x0, t.core_x0 + grid.stride
                else:
                    ys, ye, xs, xe = t.y0, t.y0 + t.size, t.x0, t.x0 + t.size
                if ys < chunk.y1 and ye > chunk.y0 and xs < chunk.x1 and xe > chunk.x0:
                    expected.add((row, col))
        assert chosen == expected


def test_valid_output_is_chunk_independent_geometrically() -> None:
    # the tile owning each pixel does not depend on the chunk size
    owners = []
    for chunk_size in (32, 64, 96, 160):
        grid = TileGrid(150, 170, chunk_size, 72, 20, 32, "valid", 4)
        owner = np.full((150, 170), -1)
        for chunk in grid.chunks():
            for t in grid.tiles(chunk):
                ya, yb = max(t.core_y0, chunk.y0), min(t.core_y0 + t.core_height, chunk.y1)
                xa, xb = max(t.core_x0, chunk.x0), min(t.core_x0 + t.core_width, chunk.x1)
                owner[ya:yb, xa:xb] = t.row * 1000 + t.col
        owners.append(owner)
    for owner in owners[1:]:
        np.testing.assert_array_equal(owner, owners[0])


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(chunk_size=100),  # not a multiple of 8
        dict(stride=12),  # not a multiple of 8
        dict(stride=96, tile_size=120),  # stride beyond the tile output 120 - 2*20
        dict(chunk_size=0),
        dict(halo=-1),
        dict(padding="same", stride=16),  # same: stride must be tile - 2*halo
    ],
)
def test_grid_rejects_bad_sizes(kwargs: dict) -> None:
    base = dict(height=100, width=100, chunk_size=64, tile_size=128, halo=20, stride=64,
                padding="valid", alignment=8)
    base.update(kwargs)
    with pytest.raises(TileSizeError):
        TileGrid(**base)


def test_error_names_sizes_that_work() -> None:
    with pytest.raises(TileSizeError, match="use 96 or 112"):
        TileGrid(100, 100, 100, 128, 20, 64, "valid", 16)


@pytest.mark.parametrize("depth", [2, 3, 4])
@pytest.mark.parametrize("chunk_size", [256, 512, 2048])
def test_plan_tiles_valid_defaults(depth: int, chunk_size: int) -> None:
    cfg = UNetConfig(depth=depth, base_channels=4)
    grid = plan_tiles(cfg, 3001, 2111, chunk_size=chunk_size)
    cfg.check_input_size(grid.tile_size)
    assert grid.stride % cfg.alignment == 0
    assert grid.stride <= cfg.output_size(grid.tile_size)
    assert chunk_size % grid.stride == 0  # no tile is computed by two chunks
    assert grid.halo == cfg.halo
    if chunk_size >= 1024:
        assert grid.stride == 1024


def test_default_overlap_overhead_is_small() -> None:
    cfg = UNetConfig(depth=4)
    grid = plan_tiles(cfg, 8192, 8192, chunk_size=2048)
    assert grid.tile_size == 1212 and grid.stride == 1024
    assert grid.overlap_overhead() == pytest.approx(1212**2 / 1024**2)
    assert grid.overlap_overhead() < 1.45


def test_plan_tiles_same_defaults() -> None:
    cfg = UNetConfig(depth=4, padding="same")
    assert default_tile_size(cfg, 2048) == 1024 + 2 * cfg.halo == 1088
    grid = plan_tiles(cfg, 1000, 900, chunk_size=2048)
    assert grid.stride == 1024 and grid.blended
    # a same-padding chunk is rounded to whole tile cores too
    grid = plan_tiles(cfg, 5000, 5000, chunk_size=2000, tile_size=512)
    assert grid.stride == 448 and grid.chunk_size == 1792


def test_plan_tiles_rejects_invalid_tile() -> None:
    cfg = UNetConfig(depth=4)
    with pytest.raises(TileSizeError, match="492 or 508"):
        plan_tiles(cfg, 500, 500, chunk_size=512, tile_size=500)
    with pytest.raises(TileSizeError, match="multiple of 16"):
        plan_tiles(cfg, 500, 500, chunk_size=500)
    with pytest.raises(TileSizeError, match="multiple of 16"):
        plan_tiles(UNetConfig(depth=4, padding="same"), 500, 500, chunk_size=512, tile_size=500)


@pytest.mark.parametrize("padding, tile_size", [("valid", 1212), ("same", 640)])
def test_tile_core_larger_than_chunk_is_refused(padding: str, tile_size: int) -> None:
    """A tile core beyond the chunk would be computed whole by every chunk (and can exhaust
    memory): refused, naming the largest tile size that fits."""
    cfg = UNetConfig(depth=4, padding=padding)
    with pytest.raises(TileSizeError, match="larger than the chunk size 512") as info:
        plan_tiles(cfg, 5000, 5000, chunk_size=512, tile_size=tile_size)
    largest = 700 if padding == "valid" else 512 + 2 * cfg.halo
    assert f"at most {largest}" in str(info.value)
    grid = plan_tiles(cfg, 5000, 5000, chunk_size=512, tile_size=largest)
    assert grid.stride == 512


@pytest.mark.parametrize("depth, tile_size, chunk_size",
                         [(2, 116, 200), (3, 252, 520), (4, 700, 1408)])
def test_requested_chunk_rounds_to_whole_tile_cores(
    depth: int, tile_size: int, chunk_size: int
) -> None:
    """Valid padding: a chunk size that is not a whole number of tile cores is rounded to the
    nearest one, so every tile of the global grid is run by exactly one chunk."""
    cfg = UNetConfig(depth=depth, base_channels=4)
    grid = plan_tiles(cfg, 3001, 2111, chunk_size=chunk_size, tile_size=tile_size)
    assert grid.chunk_size % grid.stride == 0
    assert grid.chunk_size == round_chunk_size(chunk_size, grid.stride)
    assert abs(grid.chunk_size - chunk_size) <= grid.stride / 2
    runs = [t for chunk in grid.chunks() for t in grid.tiles(chunk)]
    assert len(runs) == len({(t.row, t.col) for t in runs}) == grid.tile_rows * grid.tile_cols


def test_round_chunk_size_rule() -> None:
    assert round_chunk_size(2048, 1024) == 2048
    assert round_chunk_size(1500, 1024) == 1024 and round_chunk_size(1536, 1024) == 2048
    assert round_chunk_size(10, 448) == 448
    with pytest.raises(TileSizeError, match="core 0"):
        round_chunk_size(100, 0)


def test_model_pixels_per_output_pixel_valid_defaults() -> None:
    """Plan-level count (issue 11): valid padding at the defaults runs each tile once, so the
    cost is the tile's input over its core, (1212 / 1024)**2 = 1.40 on a whole-core scene."""
    grid = plan_tiles(UNetConfig(depth=4), 8192, 8192)
    assert model_pixels_per_output_pixel(grid) == pytest.approx(1212**2 / 1024**2)
    # before this rule a chunk size that is no multiple of the core ran seam tiles twice
    odd = plan_tiles(UNetConfig(depth=4), 8192, 8192, chunk_size=1536, tile_size=1212)
    assert odd.chunk_size == 2048
    assert model_pixels_per_output_pixel(odd) == pytest.approx(1212**2 / 1024**2)
    before = TileGrid(8192, 8192, 1536, 1212, 92, 1024, "valid", 16)
    assert model_pixels_per_output_pixel(before) > 1.8


@pytest.mark.parametrize("size", [4096, 8192, 5000])
def test_model_pixels_per_output_pixel_same_defaults_target(size: int) -> None:
    """Issue 11 target: at most 1.25 for same padding at the defaults (1088 px tiles on
    1024 px cores, each run once: (1088 / 1024)**2 = 1.13 on a whole-core scene)."""
    grid = plan_tiles(UNetConfig(depth=4, padding="same"), size, size)
    assert grid.tile_size == 1088 and grid.stride == 1024 and grid.chunk_size == 2048
    assert model_pixels_per_output_pixel(grid) <= 1.25
    if size % 1024 == 0:
        assert model_pixels_per_output_pixel(grid) == pytest.approx(1088**2 / 1024**2)


@pytest.mark.parametrize("geometry", [g for g in GEOMETRIES if g[6] == "same"])
def test_seam_rects_are_where_other_chunks_tiles_reach(geometry: tuple) -> None:
    """The seam regions of a chunk are exactly the core pixels that another chunk's tiles
    reach, and a tile's seam pieces are exactly its output outside its chunk's interior."""
    grid = _grid(geometry)
    owner = {}
    for chunk in grid.chunks():
        for t in grid.tiles(chunk):
            owner[(t.row, t.col)] = chunk
    reached_by_other = np.zeros((grid.height, grid.width), dtype=bool)
    for (row, col), chunk in owner.items():
        t = grid.tile(row, col)
        ext = np.zeros_like(reached_by_other)
        ext[max(t.y0, 0) : max(t.y0 + t.size, 0), max(t.x0, 0) : max(t.x0 + t.size, 0)] = True
        core = np.zeros_like(ext)
        core[chunk.y0 : chunk.y1, chunk.x0 : chunk.x1] = True
        reached_by_other |= ext & ~core
        pieces = np.zeros((grid.height, grid.width), dtype=int)
        for y0, x0, h, w in grid.tile_seam_rects(t, chunk):
            pieces[y0 : y0 + h, x0 : x0 + w] += 1
        assert pieces.max() <= 1  # disjoint
        y0, x0, h, w = grid.interior(chunk)
        inside = np.zeros_like(ext)
        inside[y0 : y0 + h, x0 : x0 + w] = True
        np.testing.assert_array_equal(pieces == 1, ext & ~inside)
    seams = np.zeros((grid.height, grid.width), dtype=int)
    for chunk in grid.chunks():
        for y0, x0, h, w in grid.seam_rects(chunk):
            seams[y0 : y0 + h, x0 : x0 + w] += 1
        near = {(c.row, c.col) for c in grid.neighbours(chunk)}
        for (row, col), other in owner.items():  # every tile reaching the chunk is near it
            t = grid.tile(row, col)
            if (other.row, other.col) != (chunk.row, chunk.col) and \
                    t.y0 < chunk.y1 and t.y0 + t.size > chunk.y0 and \
                    t.x0 < chunk.x1 and t.x0 + t.size > chunk.x0:
                assert (other.row, other.col) in near
    assert seams.max() <= 1
    # the interior of each chunk is reached by its own tiles only; seams are all the rest
    # that the halo reaches (>= what other chunks' tiles reach)
    assert not (reached_by_other & (seams == 0)).any()


def test_same_grid_refuses_chunks_that_cut_tile_cores() -> None:
    with pytest.raises(TileSizeError, match="whole number of same-padding tile cores.*use 64"):
        TileGrid(100, 100, 48, 96, 16, 64, "same", 16)
