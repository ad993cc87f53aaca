"""Benchmark the road graph (road_edges / road_nodes) and APLS on synthetic scenes.

For each size and seed, `geounet.synth` writes a scene with its true road centrelines
(truth.gpkg, layer roads) and class mask (truth_mask.tif). Then, each in a fresh process (so
peak RSS is that step's own):

- **accuracy**: the road graph of the true mask, and of the true mask with occlusions (a
  disc of radius --occlusion-m metres cleared of road every --occlusion-every-m metres of road,
  like trees over a street), vectorized with gap bridging on (default --gap-length 10) and
  off (0), each scored with APLS against the true centrelines (SpaceNet rules: control nodes
  every 50 m, snap 4 m);
- **cost**: wall time and peak RSS of `vectorize` of the roads with the graph and without
  it (`--no-graph`); the graph's cost per km of true road is the difference (so imports,
  the mask walk and the centerlines cancel), and the time of the APLS score itself (its
  pairs grow with the square of the road length).

    python benchmarks/bench_graph.py --sizes 1024 --seeds 3 4 5          # accuracy (quick)
    python benchmarks/bench_graph.py --sizes 2048 4096 8192 --seeds 3    # timing: quiet machine
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
from typing import Any

import numpy as np


def _child(queue: Any, name: str, args: tuple) -> None:
    started = time.perf_counter()
    out = globals()[name](*args)
    out["seconds"] = time.perf_counter() - started
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(out)


def in_child(name: str, *args: Any) -> dict[str, Any]:
    """Run ``name(*args)`` in a fresh spawned process; its result plus seconds and peak RSS."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_child, args=(queue, name, args))
    process.start()
    result = queue.get()
    process.join()
    return result


def synth(out_dir: str, size: int, seed: int, every_m: float, radius_m: float) -> dict[str, Any]:
    """Scene, truth and a copy of the true mask with road occlusions."""
    import geopandas as gpd
    import rasterio
    import shapely
    from rasterio.features import rasterize

    from geounet.synth import synthesize_scene

    result = synthesize_scene(Path(out_dir), size=size, seed=seed, overwrite=True)
    lines = gpd.read_file(result.truth_path, layer="roads", engine="pyogrio").geometry.values
    lengths = shapely.length(lines)
    rng = np.random.default_rng(seed)
    n = max(1, int(lengths.sum() / every_m))
    which = rng.choice(len(lines), n, p=lengths / lengths.sum())
    centres = shapely.line_interpolate_point(lines[which], rng.uniform(0, 1, n), normalized=True)
    with rasterio.open(result.mask_path) as src:
        profile, mask = src.profile, src.read(1)
        hole = rasterize(((d, 1) for d in shapely.buffer(centres, radius_m)),
                         out_shape=mask.shape, transform=src.transform, dtype="uint8")
    mask[(hole > 0) & (mask == 2)] = 0
    with rasterio.open(Path(out_dir) / "occluded_mask.tif", "w", **profile) as dst:
        dst.write(mask, 1)
    return {"road_km": float(lengths.sum()) / 1000, "occlusions": n}


def run_vectorize(mask: str, out: str, graph: bool, gap: float) -> dict[str, Any]:
    import geopandas as gpd

    from geounet.vectorization import vectorize

    result = vectorize(mask, out, classes=["roads"], graph=graph, gap_length=gap,
                       overwrite=True)
    info = {"counts": result.counts}
    if graph:
        edges = gpd.read_file(out, layer="road_edges", engine="pyogrio")
        info["graph_km"] = float(edges["length_m"].sum()) / 1000
    return info


def run_apls(pred: str, truth: str) -> dict[str, Any]:
    from geounet.evaluation import score_graph_files

    return {"apls": score_graph_files(pred, truth).to_dict()}


def measure(size: int, seed: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    folder = tmp / f"s{size}_{seed}"
    scene = in_child("synth", str(folder), size, seed, args.occlusion_every_m, args.occlusion_m)
    truth, mask, occluded = (str(folder / n) for n in ("truth.gpkg", "truth_mask.tif",
                                                       "occluded_mask.tif"))
    row: dict[str, Any] = {"size": size, "seed": seed, "road_km": scene["road_km"],
                           "occlusions": scene["occlusions"]}
    runs = {"mask": (mask, args.gap_length), "occluded": (occluded, args.gap_length),
            "occluded_no_bridge": (occluded, 0.0)}
    for name, (source, gap) in runs.items():
        out = str(folder / f"{name}.gpkg")
        vec = in_child("run_vectorize", source, out, True, gap)
        score = in_child("run_apls", out, truth)
        row[name] = {"apls": score["apls"]["apls"], "truth_to_pred": score["apls"]["truth_to_pred"],
                     "pred_to_truth": score["apls"]["pred_to_truth"], "graph_km": vec["graph_km"],
                     "edges": vec["counts"]["road_edges"], "nodes": vec["counts"]["road_nodes"],
                     "vectorize_s": vec["seconds"], "vectorize_rss_mib": vec["peak_rss_mib"],
                     "apls_s": score["seconds"]}
    plain = in_child("run_vectorize", mask, str(folder / "plain.gpkg"), False, 0.0)
    row["no_graph"] = {"vectorize_s": plain["seconds"], "vectorize_rss_mib": plain["peak_rss_mib"]}
    return row


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table; the graph's cost is the vectorize run with it minus the run without."""
    lines = ["| size | seed | road km | APLS mask | APLS occluded, bridged | APLS occluded, no "
             "bridge | vectorize s (graph / none) | graph s per km | peak RSS MiB (graph / "
             "none) | graph MiB per km | APLS s | APLS s per km |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        m, g, n = r["mask"], r["occluded"], r["no_graph"]
        km = r["road_km"]
        lines.append(
            f"| {r['size']} | {r['seed']} | {km:.1f} | {m['apls']:.3f} | {g['apls']:.3f} | "
            f"{r['occluded_no_bridge']['apls']:.3f} | {m['vectorize_s']:.2f} / "
            f"{n['vectorize_s']:.2f} | {(m['vectorize_s'] - n['vectorize_s']) / km:.3f} | "
            f"{m['vectorize_rss_mib']:.0f} / {n['vectorize_rss_mib']:.0f} | "
            f"{(m['vectorize_rss_mib'] - n['vectorize_rss_mib']) / km:.2f} | "
            f"{m['apls_s']:.2f} | {m['apls_s'] / km:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024])
    parser.add_argument("--seeds", type=int, nargs="+", default=[3])
    parser.add_argument("--gap-length", type=float, default=10.0)
    parser.add_argument("--occlusion-m", type=float, default=3.0,
                        help="radius of each occlusion disc (metres)")
    parser.add_argument("--occlusion-every-m", type=float, default=150.0,
                        help="one occlusion per this many metres of road")
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.out_dir) as tmp:
        for size in args.sizes:
            for seed in args.seeds:
                rows.append(measure(size, seed, args, Path(tmp)))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
