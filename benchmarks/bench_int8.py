"""Accuracy cost of int8 against fp32 (issue 20 item 1): IoU and building object F1 on the demo
scene and on synthetic scenes of other seeds, with the built-in model.

For each seed: ``geounet.synthesize_scene`` a scene with its truth, then for each variant
``geounet.predict(scene, pred.tif, precision=..., engine=...)`` (threads in this process) and
``geounet.evaluate(pred.tif, truth.gpkg)``; prints per seed and variant pixel IoU of buildings
and roads, building object F1 (IoU >= 0.5), the change of each from fp32 and the share of
pixels whose class agrees with fp32. Accuracy only: the CPU-seconds printed are indicative (a
shared machine). The built-in checkpoint is copied into the work folder, so its exports and
int8 models are cached there (not next to the package), and each int8 run starts without a
cached int8 model (``--keep-cache`` to reuse them): its CPU-seconds include calibration and
quantization.

    python benchmarks/bench_int8.py                                    # demo (seed 7, 4096) + 3 seeds at 2048
    python benchmarks/bench_int8.py --demo-size 1024 --size 512 --seeds 11   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

VARIANTS = {  # name: (engine, precision)
    "fp32 (torch)": ("torch", "fp32"),
    "int8 (openvino)": ("openvino", "int8"),
    "int8 (onnxruntime)": ("onnxruntime", "int8"),
}


def _classes(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        return src.read(1)


def _score(pred: Path, truth: Path) -> dict[str, float]:
    import geounet

    report = geounet.evaluate(pred, truth)
    return {"building_iou": report.score("buildings").iou, "road_iou": report.score("roads").iou,
            "object_f1": report.objects.f1 if report.objects is not None else float("nan")}


def run_seed(work: Path, model: Path, seed: int, size: int, variants: list[str],
             keep_cache: bool) -> list[dict[str, object]]:
    """Rows of one seed: one per variant."""
    import geounet

    folder = work / f"seed{seed}-{size}"
    geounet.synthesize_scene(folder, size=size, seed=seed, overwrite=True)
    scene, truth = folder / "scene.tif", folder / "truth.gpkg"
    rows: list[dict[str, object]] = []
    reference: dict[str, object] | None = None
    for name in variants:
        engine, precision = VARIANTS[name]
        if precision == "int8" and not keep_cache:
            for old in (model.parent / ".geounet-cache").glob("*-int8-*"):
                old.unlink()
        pred = folder / f"pred-{engine}-{precision}.tif"
        c0, w0 = time.process_time(), time.perf_counter()
        geounet.predict(scene, pred, model=model, engine=engine, precision=precision,
                        client="threads", overwrite=True)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        row: dict[str, object] = {"seed": seed, "size": size, "variant": name, "cpu_s": cpu,
                                  "wall_s": wall, **_score(pred, truth)}
        classes = _classes(pred)
        if reference is None:
            reference = {**row, "classes": classes}
        row["agreement"] = float((classes == reference["classes"]).mean())
        for key in ("building_iou", "road_iou", "object_f1"):
            row[f"d_{key}"] = float(row[key]) - float(reference[key])  # type: ignore[arg-type]
        rows.append(row)
        print(f"{seed:>4} {size:>5} {name:>18} {cpu:>7.1f} {row['building_iou']:>8.4f} "
              f"{row['d_building_iou']:>+8.4f} {row['road_iou']:>8.4f} {row['d_road_iou']:>+8.4f} "
              f"{row['object_f1']:>7.4f} {row['d_object_f1']:>+8.4f} {row['agreement']:>8.4f}",
              flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-size", type=int, default=4096, help="the demo scene's size "
                        "(seed 7, examples/demo.py); 0 leaves it out")
    parser.add_argument("--size", type=int, default=2048, help="size of the other seeds")
    parser.add_argument("--seeds", type=int, nargs="*", default=[11, 12, 13])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--model", type=Path, default=None, help="default: the built-in model")
    parser.add_argument("--work", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--keep-cache", action="store_true",
                        help="reuse int8 models quantized by an earlier run of the same scene")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from geounet.engine.runner import default_model_path
    from geounet.environment import cpu_features, cpu_flags

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-int8-"))
    work.mkdir(parents=True, exist_ok=True)
    model = work / "model.pt"
    shutil.copy(args.model or default_model_path(), model)
    print(f"CPU: {', '.join(cpu_features(cpu_flags()))}; model {args.model or 'built-in'}; "
          f"work {work}")
    print(f"{'seed':>4} {'size':>5} {'variant':>18} {'CPU-s':>7} {'bldg IoU':>8} {'change':>8} "
          f"{'road IoU':>8} {'change':>8} {'obj F1':>7} {'change':>8} {'agree':>8}", flush=True)
    jobs = ([(7, args.demo_size)] if args.demo_size else []) + [(s, args.size) for s in args.seeds]
    rows = []
    for seed, size in jobs:
        rows += run_seed(work, model, seed, size, args.variants, args.keep_cache)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
        print(f"rows: {args.json}")


if __name__ == "__main__":
    main()
