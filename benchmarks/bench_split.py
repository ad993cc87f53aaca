"""Spatial split cost: chips kept for training/validation vs lost to the buffer.

Run: PYTHONPATH=. python benchmarks/bench_split.py
Pure geometry (no files): web-tile-like 256 px chips at 7.5 cm in EPSG:4326, laid out as a
contiguous grid, as separate clusters, and scattered; val_fraction 0.2, split_block 4.
"""

from __future__ import annotations

import numpy as np

from geounet.training.split import spatial_split

PX, PY = 1.1e-6 * 256, 6.7e-7 * 256


def grid(rows: int, cols: int, x0: float = 13.4, y0: float = 52.5) -> list[tuple[float, ...]]:
    return [(x0 + c * PX, y0 - (r + 1) * PY, x0 + (c + 1) * PX, y0 - r * PY)
            for r in range(rows) for c in range(cols)]


def main() -> None:
    rng = np.random.default_rng(0)
    layouts = {
        "contiguous 10x12": grid(10, 12),
        "12 clusters of 2x5": [b for k in range(12) for b in grid(2, 5, 13.4 + k * 0.01)],
        "120 scattered": [b for k in range(120) for b in grid(1, 1, 13.4 + k * 0.01)],
        "contiguous 4x30 strip": grid(4, 30),
        "random walk of 120": [],
    }
    cells = {(0, 0)}
    while len(cells) < 120:  # a blob of tiles grown at random, like tiles around an AOI
        r, c = list(cells)[int(rng.integers(len(cells)))]
        dr, dc = [(0, 1), (1, 0), (0, -1), (-1, 0)][int(rng.integers(4))]
        cells.add((r + dr, c + dc))
    layouts["random walk of 120"] = [grid(1, 1, 13.4 + c * PX, 52.5 - r * PY)[0]
                                     for r, c in sorted(cells)]
    print("| layout | chips | train | val | buffer |")
    print("| --- | --- | --- | --- | --- |")
    for name, boxes in layouts.items():
        for seed in (0, 1):
            split = spatial_split(boxes, val_fraction=0.2, seed=seed, split_block=4,
                                  tolerance=PX / 512)
            print(f"| {name} (seed {seed}) | {len(boxes)} | {split.count('train')} | "
                  f"{split.count('val')} | {split.count('buffer')} |")


if __name__ == "__main__":
    main()
