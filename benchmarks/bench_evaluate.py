"""Benchmark geounet.evaluate on UTM and EPSG:4326 copies of synthetic truth masks: Python peak
memory (tracemalloc) per scene size, CPU seconds of this process, and the centerline scores
with a metre tolerance in both CRSs.

For each size a synthetic scene is made (``geounet.synth``); its truth mask is written again
under a lon/lat grid with the same pixels (``geounet.testing.regrid``), and a "prediction" is
the same mask with every road moved 5 px (2.5 m) to the right. Evaluate then scores the
prediction against the truth, window by window.

    python benchmarks/bench_evaluate.py --sizes 1024,2048,4096 --window 1024

Peak memory should not grow with the scene (the window and its halo bound it); the EPSG:4326
scores should equal the UTM ones.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np


def shifted(src: Path, dst: Path, shift: int) -> Path:
    import rasterio

    with rasterio.open(src) as s:
        profile, mask = s.profile, s.read(1)
    roads = mask == 2
    moved = np.zeros_like(roads)
    moved[:, shift:] = roads[:, :-shift]
    out = np.where(roads, 0, mask)
    out = np.where(moved & (mask != 255), 2, out).astype(np.uint8)
    with rasterio.open(dst, "w", **profile) as d:
        d.write(out, 1)
    return dst


def main(argv: list[str] | None = None) -> int:
    from geounet.evaluation import evaluate
    from geounet.synth import synthesize_scene
    from geounet.testing import regrid

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1024,2048,4096")
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--tolerance", type=float, default=2.0)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for size in (int(s) for s in args.sizes.split(",")):
            synthesize_scene(root / f"s{size}", size=size, seed=0)
            utm = root / f"s{size}" / "truth_mask.tif"
            geo = regrid(utm, root / f"geo{size}.tif", crs="EPSG:4326")
            for kind, truth in (("EPSG:32633", utm), ("EPSG:4326", geo)):
                pred = shifted(truth, root / f"pred_{size}_{kind[5:]}.tif", 5)
                evaluate(pred, truth, window_size=args.window,
                         centerline_tolerance=args.tolerance)  # warm imports
                cpu = time.process_time()
                tracemalloc.start()
                report = evaluate(pred, truth, window_size=args.window,
                                  centerline_tolerance=args.tolerance)
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                rows.append({
                    "size": size, "crs": kind, "window": args.window,
                    "peak_mib": round(peak / 2**20, 1),
                    "cpu_s": round(time.process_time() - cpu, 2),
                    "centerline_f1": round(report.centerline.f1, 4),
                    "roads_iou": round(report.score("roads").iou, 4),
                })
                print(json.dumps(rows[-1]), flush=True)
    print("\n| scene | CRS | window | Python peak MiB | CPU s | centerline F1 | roads IoU |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['size']}² | {r['crs']} | {r['window']} | {r['peak_mib']} | {r['cpu_s']} | "
              f"{r['centerline_f1']} | {r['roads_iou']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
