"""Benchmark geounet.vectorization: throughput (MP/s, polygons/s) and peak RSS on synthetic masks.

A deterministic building + road class mask (roads: a grid plus diagonals, 10-14 px wide;
buildings: one 12-30 px rectangle in most cells of a 48 px lattice) is written window by
window to a tiled GeoTIFF, then vectorized with the default settings.

    python benchmarks/bench_vectorize.py --size 4096
    python benchmarks/bench_vectorize.py --size 16384 --chunk-size 2048
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_mask(path: Path, size: int, seed: int = 0, rows: int = 1024) -> None:
    """Write a size x size uint8 class mask (0 background, 1 buildings, 2 roads), windowed."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    cell = 48
    n = size // cell + 1
    rng = np.random.default_rng(seed)
    height = rng.integers(12, 31, (n, n))
    width = rng.integers(12, 31, (n, n))
    oy = rng.integers(0, cell - 30, (n, n))
    ox = rng.integers(0, cell - 30, (n, n))
    present = rng.random((n, n)) < 0.7
    profile = {"driver": "GTiff", "height": size, "width": size, "count": 1, "dtype": "uint8",
               "crs": "EPSG:32633", "transform": from_origin(500_000, 5_000_000, 0.5, 0.5),
               "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate",
               "nodata": 255}
    x = np.arange(size)
    with rasterio.open(path, "w", **profile) as dst:
        for y0 in range(0, size, rows):
            y = np.arange(y0, min(y0 + rows, size))[:, None]
            cy, cx = y // cell, x[None, :] // cell
            ly, lx = y % cell - oy[cy, cx], x[None, :] % cell - ox[cy, cx]
            building = present[cy, cx] & (ly >= 0) & (ly < height[cy, cx]) & (lx >= 0) & (
                lx < width[cy, cx]
            )
            road = (y % 512 < 14) | (x[None, :] % 640 < 12) | ((x[None, :] - y) % 1536 < 10)
            mask = np.where(road, 2, np.where(building, 1, 0)).astype(np.uint8)
            dst.write(mask, 1, window=Window(0, y0, size, mask.shape[0]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--chunk-size", type=int, default=2048)
    parser.add_argument("--no-centerlines", action="store_true")
    parser.add_argument("--cut-size", type=int, default=None,
                        help="road cut grid side (default: vectorize's default)")
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args(argv)

    from geounet.vectorization import vectorize

    with tempfile.TemporaryDirectory(dir=args.out_dir) as tmp:
        mask = Path(tmp) / "mask.tif"
        t0 = time.perf_counter()
        # Written by a child process, so this process's peak RSS is imports + vectorize only.
        writer = multiprocessing.get_context("spawn").Process(target=write_mask,
                                                              args=(mask, args.size))
        writer.start()
        writer.join()
        if writer.exitcode:
            raise SystemExit(f"writing the mask failed (exit code {writer.exitcode})")
        made = time.perf_counter() - t0
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result = vectorize(mask, Path(tmp) / "out.gpkg", chunk_size=args.chunk_size,
                           centerlines=not args.no_centerlines,
                           **({"cut_size": args.cut_size} if args.cut_size else {}))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        polygons = sum(v for k, v in result.counts.items() if k != "road_centerlines")
        report = {
            "size": args.size,
            "chunk_size": args.chunk_size,
            "centerlines": not args.no_centerlines,
            "cut_size": args.cut_size or "default",
            "mask_write_s": round(made, 2),
            "seconds": round(result.seconds, 2),
            "megapixels_per_s": round(result.megapixels_per_second, 2),
            "polygons_per_s": round(polygons / result.seconds, 1),
            "counts": result.counts,
            "max_held_objects": result.max_held,
            "peak_rss_mb_after_imports": round(rss_before, 1),
            "peak_rss_mb": round(rss, 1),
        }
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
