"""Model input pixels per output pixel, a pure count from the tile plan (issue 11 item 1).

No model runs and no timing: the figure is :func:`geounet.engine.tiling.model_pixels_per_output_pixel`
of the grid ``plan_tiles`` lays at the default settings ("after"), next to what the code ran
before ("before"): valid padding, the same tiles with the chunk size as asked (before chunk
sizes were rounded to whole tile cores); same padding, 512 px tiles (the old default) with
every chunk running each tile touching its core (before the seam exchange).

    python benchmarks/bench_plan.py                 # 4096^2 and 8192^2, depth 4
    python benchmarks/bench_plan.py --sizes 10000 --chunks 1536,2048,3000
"""

from __future__ import annotations

import argparse

from geounet.engine.tiling import TileGrid, model_pixels_per_output_pixel, plan_tiles
from geounet.model import UNetConfig


def before_grid(grid: TileGrid, chunk_size: int) -> TileGrid:
    """The same tiles with the chunk side as asked (no rounding to whole tile cores)."""
    return TileGrid(grid.height, grid.width, chunk_size, grid.tile_size, grid.halo, grid.stride,
                    grid.padding, grid.alignment)


def before_same(size: int, chunk_size: int, tile: int, halo: int) -> float:
    """Model pixels per output pixel of the old same-padding rule: each chunk ran every tile
    whose output touched its core, so tiles near chunk seams ran in two (or four) chunks."""
    stride = tile - 2 * halo
    n_tiles = -(-size // stride)

    def touching(start: int, stop: int) -> int:
        first = max(0, (start - stride - halo) // stride + 1)
        last = min(n_tiles - 1, (stop + halo - 1) // stride)
        return last - first + 1

    per_axis = sum(touching(y0, min(y0 + chunk_size, size)) for y0 in range(0, size, chunk_size))
    return per_axis**2 * tile**2 / size**2


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4096,8192")
    parser.add_argument("--chunks", default="2048,1536,3000")
    parser.add_argument("--depth", type=int, default=4)
    args = parser.parse_args(argv)
    print("| padding | scene | chunk asked | chunk used | tile (core) | before | after |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for padding in ("valid", "same"):
        cfg = UNetConfig(depth=args.depth, padding=padding)  # type: ignore[arg-type]
        for size in (int(s) for s in args.sizes.split(",")):
            for chunk in (int(c) for c in args.chunks.split(",")):
                chunk = chunk - chunk % cfg.alignment
                tile = 1212 if padding == "valid" else 1088  # the default 2048 chunk's tile
                grid = plan_tiles(cfg, size, size, chunk_size=chunk, tile_size=tile)
                if padding == "valid":
                    before = model_pixels_per_output_pixel(before_grid(grid, chunk))
                else:
                    before = before_same(size, chunk, 512, cfg.halo)
                after = model_pixels_per_output_pixel(grid)
                print(f"| {padding} | {size}² | {chunk} | {grid.chunk_size} | {grid.tile_size} "
                      f"({grid.stride}) | {before:.3f} | {after:.3f} |")


if __name__ == "__main__":
    main()
