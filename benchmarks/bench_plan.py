"""Model input pixels per output pixel, a pure count from the tile plan (issue 11 item 1).

No model runs and no timing: the figure is :func:`geounet.tiling.model_pixels_per_output_pixel`
of the grid ``plan_tiles`` lays at the default settings, next to the grid the code laid before
valid-padding chunk sizes were rounded to whole tile cores ("before": the chunk size as asked).

    python benchmarks/bench_plan.py                 # 4096^2 and 8192^2, depth 4
    python benchmarks/bench_plan.py --sizes 10000 --chunks 1536,2048,3000
"""

from __future__ import annotations

import argparse

from geounet.model import UNetConfig
from geounet.tiling import TileGrid, model_pixels_per_output_pixel, plan_tiles


def before_grid(grid: TileGrid, chunk_size: int) -> TileGrid:
    """The same tiles with the chunk side as asked (no rounding to whole tile cores)."""
    return TileGrid(grid.height, grid.width, chunk_size, grid.tile_size, grid.halo, grid.stride,
                    grid.padding, grid.alignment)


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
                tile = 1212 if padding == "valid" else None  # the default 2048 chunk's tile
                grid = plan_tiles(cfg, size, size, chunk_size=chunk, tile_size=tile)
                before = model_pixels_per_output_pixel(before_grid(grid, chunk))
                after = model_pixels_per_output_pixel(grid)
                print(f"| {padding} | {size}² | {chunk} | {grid.chunk_size} | {grid.tile_size} "
                      f"({grid.stride}) | {before:.3f} | {after:.3f} |")


if __name__ == "__main__":
    main()
