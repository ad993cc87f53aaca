"""Benchmarks of tiled prediction: pipeline efficiency, the common way, memory, overlap, seams, bf16.

Each subcommand prints a markdown block (the command that produced it, then a table) that can
be pasted into benchmarks/RESULTS.md. Random-weight U-Nets unless ``--model`` is given.

    python benchmarks/bench_predict.py efficiency --size 2048 --base 32
    python benchmarks/bench_predict.py common --size 2048 --base 32
    python benchmarks/bench_predict.py memory --sizes 4096,16384 --base 8
    python benchmarks/bench_predict.py overlap
    python benchmarks/bench_predict.py seam --size 1024 --base 16
    python benchmarks/bench_predict.py bf16 --size 1024 --base 32 [--model trained.pt]
    python benchmarks/bench_predict.py all --quick        # small sizes: checks that all run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
CLASSES = ("background", "buildings", "roads")


# ---- helpers --------------------------------------------------------------------------------


def header(title: str) -> None:
    cmd = "python benchmarks/bench_predict.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    import torch

    print(f"\n### {title}\n")
    print(f"`{cmd}`  ")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}\n")


def table(columns: list[str], rows: list[list[Any]]) -> None:
    print("| " + " | ".join(columns) + " |")
    print("| " + " | ".join("---" for _ in columns) + " |")
    for row in rows:
        print("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row)
              + " |")


def write_big_scene(path: Path, size: int, *, block: int = 1024, seed: int = 0) -> Path:
    """A 3-band uint8 tiled GeoTIFF written block by block (never the whole scene in memory)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    profile = dict(driver="GTiff", height=size, width=size, count=3, dtype="uint8", tiled=True,
                   blockxsize=256, blockysize=256, compress="deflate", crs="EPSG:32633",
                   transform=from_origin(500_000, 5_000_000, 0.5, 0.5), BIGTIFF="IF_SAFER")
    with rasterio.open(path, "w", **profile) as dst:
        for y0 in range(0, size, block):
            for x0 in range(0, size, block):
                h, w = min(block, size - y0), min(block, size - x0)
                yy, xx = np.mgrid[y0:y0 + h, x0:x0 + w].astype(np.float32)
                base = 127 + 60 * np.sin(yy / 37.0) * np.cos(xx / 53.0)
                data = base[None] + rng.normal(0, 20, (3, h, w))
                dst.write(np.clip(data, 0, 255).astype(np.uint8), window=Window(x0, y0, w, h))
    return path


def make_model(path: Path, *, base: int, depth: int, padding: str, seed: int = 0) -> Path:
    import torch

    from geounet.model import ModelCard, UNet, UNetConfig, save_checkpoint

    torch.manual_seed(seed)
    config = UNetConfig(in_channels=3, num_classes=3, depth=depth, base_channels=base,
                        padding=padding)
    card = ModelCard(config, bands=(1, 2, 3), mean=(127.0,) * 3, std=(50.0,) * 3,
                     classes=CLASSES, pixel_size=0.5, dtype="uint8", value_range=(0.0, 255.0),
                     description="random weights for benchmarks")
    return save_checkpoint(path, UNet(config), card, overwrite=True)


def peak_rss_of(cmd: list[str]) -> tuple[float, float, str]:
    """Run ``cmd``; return (seconds, peak RSS of the whole process tree in MiB, stdout)."""
    from _proctree import run_measured

    seconds, peak, out, code = run_measured(cmd)
    if code:
        raise SystemExit(f"benchmark child failed ({code}): {' '.join(cmd)}")
    return seconds, peak / 2**20, out


# ---- the common way (for comparison) ----------------------------------------------------------


def common_way(scene: Path, model: Path, tile: int, overlap: int) -> None:
    """Rasterio window loop, fp32 NCHW eager, whole-scene float accumulator (how most tools run).

    Uses the same checkpoint; same-padding tiles with ``overlap`` pixels averaged.
    """
    import rasterio
    import torch
    from rasterio.windows import Window

    from geounet.model import load_checkpoint

    net, card = load_checkpoint(model)
    net.eval()
    with rasterio.open(scene) as src:
        height, width = src.height, src.width
        acc = np.zeros((card.architecture.num_classes, height, width), np.float32)
        weight = np.zeros((height, width), np.float32)
        step = tile - 2 * overlap
        for y0 in range(0, height, step):
            for x0 in range(0, width, step):
                ya, xa = max(0, y0 - overlap), max(0, x0 - overlap)
                ya, xa = min(ya, max(0, height - tile)), min(xa, max(0, width - tile))
                data = src.read(list(card.bands), window=Window(xa, ya, tile, tile),
                                boundless=True).astype(np.float32)
                data = (data - np.array(card.mean, np.float32)[:, None, None]) / np.array(
                    card.std, np.float32)[:, None, None]
                with torch.no_grad():
                    probs = torch.softmax(net(torch.from_numpy(data[None])), 1)[0].numpy()
                h, w = min(tile, height - ya), min(tile, width - xa)
                acc[:, ya:ya + h, xa:xa + w] += probs[:, :h, :w]
                weight[ya:ya + h, xa:xa + w] += 1
        acc /= np.maximum(weight, 1)[None]
        mask = acc.argmax(0).astype(np.uint8)
        profile = src.profile | {"count": 1, "dtype": "uint8"}
    with rasterio.open(scene.with_suffix(".common.tif"), "w", **profile) as dst:
        dst.write(mask, 1)


# ---- subcommands ------------------------------------------------------------------------------


def run_geounet(scene: Path, out: Path, model: Path, **kwargs: Any) -> Any:
    from geounet.run.pipeline import predict

    return predict(scene, out, model=model, overwrite=True, **kwargs)


def cmd_efficiency(args: argparse.Namespace, work: Path) -> None:
    """End-to-end predict throughput vs a bare model forward over the same tiles.

    Bare forward: the runner's forward on one full tile in this process with every core as
    torch threads, batch 1, times the number of tiles the run computes (each tile once). In
    process: ``geounet.predict`` here, model already loaded. Fresh process: ``geounet predict``
    as a user runs it (interpreter start, imports, model load, publish included).
    """
    import torch

    from geounet.distributed.threads import available_cores
    from geounet.engine.inference import get_runner
    from geounet.engine.tiling import plan_tiles

    scene = write_big_scene(work / "scene.tif", args.size)
    model = Path(args.model) if args.model else make_model(
        work / "m.pt", base=args.base, depth=args.depth, padding=args.padding)
    rows = []
    for precision in args.precisions.split(","):
        torch.set_num_threads(available_cores())  # a run before may have left fewer
        runner = get_runner(str(model), "cpu", precision)
        grid = plan_tiles(runner.config, args.size, args.size, chunk_size=args.chunk_size)
        tiles = sum(len(grid.tiles(c)) for c in grid.chunks())
        batch = np.random.default_rng(0).normal(
            size=(1, 3, grid.tile_size, grid.tile_size)).astype(np.float32)
        runner.forward(batch)  # warm-up
        n = min(tiles, args.forward_tiles)
        start = time.perf_counter()
        for _ in range(n):
            runner.forward(batch)
        bare = (time.perf_counter() - start) / n * tiles
        result = run_geounet(scene, work / "p.zarr", model, chunk_size=args.chunk_size,
                             precision=precision, workers=args.workers, client=args.client)
        out = work / f"fresh.{args.fresh_out}"
        cmd = [sys.executable, "-m", "geounet", "-q", "predict", str(scene), "--out", str(out),
               "--model", str(model), "--chunk-size", str(args.chunk_size), "--precision",
               precision, "--overwrite"]
        if args.workers:
            cmd += ["--workers", str(args.workers)]
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        fresh = time.perf_counter() - start
        mp = args.size**2 / 1e6
        rows.append([precision, f"{args.size}²", grid.tile_size, tiles, round(bare, 2),
                     round(result.seconds, 2), round(fresh, 2), round(mp / bare, 3),
                     round(result.megapixels_per_second, 3), f"{bare / result.seconds:.0%}",
                     f"{fresh / bare:.2f}x", f"{fresh - bare:+.1f}"])
    header(f"Pipeline efficiency (U-Net depth {args.depth} base {args.base} {args.padding}, "
           f"chunk {args.chunk_size}, workers {args.workers or 'default'}, "
           f"scheduler {args.client or 'default'}; fresh process writes .{args.fresh_out})")
    table(["precision", "scene", "tile", "tiles", "bare forward s", "in-process s",
           "fresh process s", "bare MP/s", "in-process MP/s", "efficiency (in-process)",
           "fresh / bare", "fresh - bare s"], rows)


def cmd_common(args: argparse.Namespace, work: Path) -> None:
    """geounet vs the common way: time and peak memory (process tree RSS) of each."""
    scene = write_big_scene(work / "scene.tif", args.size)
    model = Path(args.model) if args.model else make_model(
        work / "m.pt", base=args.base, depth=args.depth, padding="same")
    py = sys.executable
    me = str(Path(__file__).resolve())
    t_common, m_common, _ = peak_rss_of([py, me, "_common", str(scene), str(model),
                                         str(args.tile), str(args.overlap)])
    rows = [["common way (rasterio loop, fp32 NCHW eager, scene accumulator)",
             round(t_common, 1), round(args.size**2 / 1e6 / t_common, 3), round(m_common)]]
    for precision in ("fp32", "auto"):
        t, m, _ = peak_rss_of([py, me, "_geounet", str(scene), str(model), str(work / "p.zarr"),
                               precision, str(args.chunk_size), str(args.workers or 0)])
        rows.append([f"geounet predict ({precision}, local cluster)", round(t, 1),
                     round(args.size**2 / 1e6 / t, 3), round(m)])
    header(f"geounet vs the common way ({args.size}², same-padding depth {args.depth} "
           f"base {args.base}, tile {args.tile}, overlap {args.overlap}; times include "
           "process start and model load)")
    table(["method", "seconds", "MP/s", "peak RSS MiB (all processes)"], rows)


def cmd_memory(args: argparse.Namespace, work: Path) -> None:
    """Peak RSS of the whole run at growing scene sizes: must not grow with the scene."""
    model = Path(args.model) if args.model else make_model(
        work / "m.pt", base=args.base, depth=args.depth, padding=args.padding)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        scene = write_big_scene(work / f"scene{size}.tif", size)
        t, m, _ = peak_rss_of([sys.executable, str(Path(__file__).resolve()), "_geounet",
                               str(scene), str(model), str(work / f"p{size}.zarr"), "auto",
                               str(args.chunk_size), str(args.workers or 0)])
        rows.append([f"{size}²", round(size**2 / 1e6, 1), round(t, 1),
                     round(size**2 / 1e6 / t, 2), round(m)])
        scene.unlink()
    header(f"Peak memory vs scene size (depth {args.depth} base {args.base} {args.padding}, "
           f"chunk {args.chunk_size}, uint8 Zarr output)")
    table(["scene", "MP", "seconds", "MP/s", "peak RSS MiB (all processes)"], rows)


def cmd_overlap(args: argparse.Namespace, work: Path) -> None:
    """Model input pixels per output pixel at the default tile sizes (pure geometry)."""
    from geounet.engine.tiling import plan_tiles
    from geounet.model import UNetConfig

    rows = []
    for padding in ("valid", "same"):
        for depth in (3, 4):  # depth 3: the built-in model's; depth 4: the seed design's
            config = UNetConfig(depth=depth, padding=padding)
            for chunk in (1024, 2048, 4096):
                grid = plan_tiles(config, 16384, 16384, chunk_size=chunk)
                rows.append([padding, depth, chunk, grid.tile_size, grid.halo, grid.stride,
                             round(grid.overlap_overhead(), 3)])
    header("Overlap overhead at defaults (16384² scene)")
    table(["padding", "depth", "chunk", "tile", "halo", "stride", "input px / output px"], rows)


def cmd_seam(args: argparse.Namespace, work: Path) -> None:
    """Seam error of blended same-padding tiles vs whole-scene inference, at default overlap."""
    from geounet.engine.inference import get_runner, measure_seam_error
    from geounet.engine.tiling import plan_tiles
    from geounet.raster import open_scene

    scene = write_big_scene(work / "scene.tif", args.size)
    rows = []
    for padding in ("same", "valid"):
        model = make_model(work / f"m_{padding}.pt", base=args.base, depth=args.depth,
                           padding=padding)
        runner = get_runner(str(model), "cpu", "fp32")
        grid = plan_tiles(runner.config, args.size, args.size, chunk_size=args.chunk_size,
                          tile_size=args.tile if padding == "same" else None)
        report = measure_seam_error(open_scene(scene), grid, runner)
        rows.append([padding, grid.tile_size, grid.halo, f"{report.max_abs_diff:.2e}",
                     f"{report.mean_abs_diff:.2e}", f"{report.class_agreement:.5f}"])
    header(f"Seam error vs whole-scene inference ({args.size}², depth {args.depth} "
           f"base {args.base}, fp32, chunk {args.chunk_size})")
    table(["padding", "tile", "halo (overlap/side)", "max abs Δp", "mean abs Δp",
           "argmax agreement"], rows)


def cmd_bf16(args: argparse.Namespace, work: Path) -> None:
    """IoU per class of the bf16 mask against the fp32 mask, and the speed of each."""
    import zarr

    scene = write_big_scene(work / "scene.tif", args.size)
    model = Path(args.model) if args.model else make_model(
        work / "m.pt", base=args.base, depth=args.depth, padding=args.padding)
    masks, speed = {}, {}
    for precision in ("fp32", "bf16"):
        result = run_geounet(scene, work / f"{precision}.zarr", model,
                             chunk_size=args.chunk_size, precision=precision,
                             workers=args.workers, client=args.client)
        masks[precision] = zarr.open_array(str(work / f"{precision}.zarr" / "mask"))[:]
        speed[precision] = result.megapixels_per_second
    rows = []
    for index, name in enumerate(CLASSES):
        a, b = masks["fp32"] == index, masks["bf16"] == index
        union = np.logical_or(a, b).sum()
        iou = np.logical_and(a, b).sum() / union if union else 1.0
        rows.append([name, int(a.sum()), int(b.sum()), f"{iou:.5f}"])
    agree = float((masks["fp32"] == masks["bf16"]).mean())
    rows.append(["all (pixel agreement)", "", "", f"{agree:.5f}"])
    header(f"bf16 vs fp32 ({args.size}², {'model ' + args.model if args.model else 'random'} "
           f"depth {args.depth} base {args.base} {args.padding}; fp32 {speed['fp32']:.3f} MP/s, "
           f"bf16 {speed['bf16']:.3f} MP/s)")
    table(["class", "fp32 px", "bf16 px", "IoU(bf16, fp32)"], rows)


COMMANDS: dict[str, Callable[[argparse.Namespace, Path], None]] = {
    "efficiency": cmd_efficiency,
    "common": cmd_common,
    "memory": cmd_memory,
    "overlap": cmd_overlap,
    "seam": cmd_seam,
    "bf16": cmd_bf16,
}

QUICK = {"size": 512, "sizes": "512,1024", "base": 8, "depth": 3, "chunk_size": 256,
         "tile": 128, "overlap": 16, "forward_tiles": 4}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_common":  # child process of `common`
        common_way(Path(argv[1]), Path(argv[2]), int(argv[3]), int(argv[4]))
        return
    if argv and argv[0] == "_geounet":  # child process of `common` / `memory`
        workers = int(argv[6]) or None
        result = run_geounet(Path(argv[1]), Path(argv[3]), Path(argv[2]), precision=argv[4],
                             chunk_size=int(argv[5]), workers=workers)
        print(json.dumps({"seconds": result.seconds}))
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=[*COMMANDS, "all"])
    parser.add_argument("--size", type=int, default=2048, help="scene side (px)")
    parser.add_argument("--sizes", default="4096,16384", help="memory: scene sides")
    parser.add_argument("--base", type=int, default=32, help="U-Net base channels")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--padding", default="valid", choices=["valid", "same"])
    parser.add_argument("--chunk-size", type=int, default=2048)
    parser.add_argument("--tile", type=int, default=512, help="common/seam: same-padding tile")
    parser.add_argument("--overlap", type=int, default=64, help="common: overlap per side")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--client", default=None,
                        help="efficiency/bf16: 'threads' runs in-process (no cluster start)")
    parser.add_argument("--precisions", default="fp32,auto", help="efficiency: precisions")
    parser.add_argument("--fresh-out", default="zarr", choices=["zarr", "tif"],
                        help="efficiency: output of the fresh-process run")
    parser.add_argument("--forward-tiles", type=int, default=8,
                        help="efficiency: tiles timed for the bare forward (extrapolated)")
    parser.add_argument("--model", default=None, help="a trained checkpoint instead of random")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that it runs")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    names = list(COMMANDS) if args.command == "all" else [args.command]
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for name in names:
            work = Path(tmp) / name
            work.mkdir()
            COMMANDS[name](args, work)


if __name__ == "__main__":
    main()
