"""Cost and gain of test-time augmentation (``--tta``) with the built-in model (issue 21 item 3).

For each synthetic seed: ``geounet synth`` a scene with its truth, then for each TTA setting
``geounet segment --raster-out pred.tif --tta T`` (in-process, the built-in model) and
``geounet evaluate pred.tif truth.gpkg``; prints per seed and setting the model evaluations
(tiles of the grid x transforms: the cost, exact), the wall time of ``geounet predict`` into a
Zarr store (the model's share) and of ``segment`` (prediction + polygons + COG), each with its
ratio to ``none`` (a shared machine: indicative only), and pixel IoU of buildings and roads
and building object F1 (IoU >= 0.5).

    python benchmarks/bench_tta.py                          # seeds 7 (the demo's), 11, 12; 1536 px
    python benchmarks/bench_tta.py --size 4096 --seeds 7    # the demo scene itself
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from click.testing import CliRunner


def _run(*args: str) -> float:
    from geounet.cli.main import cli

    start = time.perf_counter()
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    if result.exit_code != 0:
        print(result.output, file=sys.stderr)
        sys.exit(result.exit_code)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1536)
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 11, 12])
    parser.add_argument("--tta", nargs="+", default=["none", "flips", "d4"])
    parser.add_argument("--work", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args(argv)

    from geounet.engine.runner import TTA_TRANSFORMS
    from geounet.run.planning import plan_prediction

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-tta-"))
    rows = []
    print(f"{'seed':>4} {'tta':>5} {'tiles x T':>9} {'predict s':>9} {'ratio':>5} "
          f"{'segment s':>9} {'ratio':>5} "
          f"{'bldg IoU':>8} {'road IoU':>8} {'obj F1':>7}", flush=True)
    for seed in args.seeds:
        folder = work / f"seed{seed}"
        _run("synth", str(folder), "--size", str(args.size), "--seed", str(seed), "--overwrite")
        scene = folder / "scene.tif"
        grid = plan_prediction(scene, check_device=False).grid
        tiles = grid.tile_rows * grid.tile_cols
        base: tuple[float, float] | None = None
        for tta in args.tta:
            pred, objects, scores = (folder / f"pred-{tta}.tif", folder / f"objects-{tta}.gpkg",
                                     folder / f"scores-{tta}.json")
            predict_s = _run("predict", str(scene), "--out", str(folder / f"pred-{tta}.zarr"),
                             "--tta", tta, "--in-process", "--overwrite")
            seconds = _run("segment", str(scene), "--out", str(objects), "--raster-out",
                           str(pred), "--tta", tta, "--in-process", "--overwrite")
            _run("evaluate", str(pred), str(folder / "truth.gpkg"), "--json", str(scores),
                 "--overwrite")
            report = json.loads(scores.read_text())
            base = (predict_s, seconds) if base is None else base
            row = {"seed": seed, "tta": tta, "evaluations": tiles * len(TTA_TRANSFORMS[tta]),
                   "predict_seconds": predict_s, "predict_ratio": predict_s / base[0],
                   "seconds": seconds, "ratio": seconds / base[1],
                   "building_iou": report["pixel"]["buildings"]["iou"],
                   "road_iou": report["pixel"]["roads"]["iou"],
                   "object_f1": report["objects"]["f1"]}
            rows.append(row)
            print(f"{seed:>4} {tta:>5} {row['evaluations']:>9} {predict_s:>9.1f} "
                  f"{row['predict_ratio']:>5.2f} {seconds:>9.1f} "
                  f"{row['ratio']:>5.2f} {row['building_iou']:>8.4f} {row['road_iou']:>8.4f} "
                  f"{row['object_f1']:>7.4f}", flush=True)
    (work / "bench_tta.json").write_text(json.dumps(rows, indent=2))
    print(f"rows: {work / 'bench_tta.json'}")


if __name__ == "__main__":
    main()
