"""Quality of the built-in 0.5 m uint8 model on scenes that do not match it (issue 9).

Resolution: the same synthetic layout (``geounet synth``, one seed) written at 0.2, 0.5 and
1.25 m, segmented with ``resample="auto"`` (a GDAL WarpedVRT at 0.5 m for the other two).
Value range: the 0.5 m scene as uint8 and as an 11-bit uint16 copy (``round(v * 2047 / 255)``),
the latter with each ``rescale``. Scores are building/road pixel IoU of the GeoPackage against
the synth truth mask (:func:`geounet.evaluation.evaluate`), plus CPU-seconds of this process
(the model runs in-process, ``client="synchronous"``). Prints a markdown table.

    python benchmarks/bench_real_scenes.py                   # 150 m scenes, seeds 3
    python benchmarks/bench_real_scenes.py --extent 300 --seeds 3,4,5
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _segment(scene: Path, out: Path, **options: object) -> tuple[float, float, float]:
    import geounet
    from geounet.evaluation import evaluate

    start = time.process_time()
    geounet.segment(scene, out, client="synchronous", **options)
    cpu = time.process_time() - start
    report = evaluate(out, scene.parent / "truth_mask.tif")
    return report.score("buildings").iou, report.score("roads").iou, cpu


def _eleven_bit(scene: Path, out: Path) -> Path:
    import rasterio

    with rasterio.open(scene) as src:
        profile, data = src.profile, src.read()
    profile.update(dtype="uint16")
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(np.rint(data.astype(np.float64) * 2047 / 255).astype(np.uint16))
    return out


def main(argv: list[str] | None = None) -> None:
    from geounet.synth import synthesize_scene

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extent", type=float, default=150.0, help="scene side in metres")
    parser.add_argument("--seeds", default="3", help="comma-separated synth seeds")
    args = parser.parse_args(argv)
    print(f"`python benchmarks/bench_real_scenes.py {' '.join(argv or sys.argv[1:])}`\n")
    print("| seed | scene | options | buildings IoU | roads IoU | CPU s |")
    print("| --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for seed in (int(s) for s in args.seeds.split(",")):
            scenes = {}
            for pixel_size in (0.5, 0.2, 1.25):
                size = round(args.extent / pixel_size)
                scenes[pixel_size] = synthesize_scene(
                    root / f"{seed}-{pixel_size}", size=size, seed=seed, pixel_size=pixel_size
                ).scene_path
            runs = [
                (f"{p} m uint8", scenes[p], {"resample": "auto"}) for p in (0.5, 0.2, 1.25)
            ]
            eleven = _eleven_bit(scenes[0.5], scenes[0.5].parent / "scene11.tif")
            runs += [("0.5 m uint8", scenes[0.5], {"rescale": "percentile"})]
            runs += [("0.5 m 11-bit uint16", eleven, {"rescale": r})
                     for r in ("bits", "0,2047", "percentile")]
            for i, (label, scene, options) in enumerate(runs):
                b, r, cpu = _segment(scene, root / f"{seed}-{i}.gpkg", **options)
                shown = ", ".join(f"{k}={v}" for k, v in options.items())
                print(f"| {seed} | {label} | {shown} | {b:.3f} | {r:.3f} | {cpu:.1f} |",
                      flush=True)


if __name__ == "__main__":
    main()
