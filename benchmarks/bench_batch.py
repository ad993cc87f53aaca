"""Benchmarks of `geounet batch`: throughput against separate runs, client memory vs scenes.

Each subcommand prints a markdown block (the command, then a table) for benchmarks/RESULTS.md.

    python benchmarks/bench_batch.py throughput --scenes 8 --size 2048
    python benchmarks/bench_batch.py memory --counts 10,100,1000 --size 64
    python benchmarks/bench_batch.py all --quick      # small sizes: checks that all run

``throughput`` writes N synthetic scenes and segments them (built-in model, default local
cluster) once as one ``geounet batch`` command and once as N ``geounet segment`` commands
(each a new process: Python start, local cluster start and model load per scene, as a user's
shell loop pays them). ``memory`` runs batches of tiny scenes with a trivial model on a local
cluster of worker processes and samples the *client* process (RSS and Python heap peak via
tracemalloc): it must stay flat as the number of scenes grows.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def header(title: str) -> None:
    cmd = "python benchmarks/bench_batch.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(f"\n### {title}\n")
    print(f"`{cmd}`  ")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M')}\n")


def table(columns: list[str], rows: list[list[Any]]) -> None:
    print("| " + " | ".join(columns) + " |")
    print("| " + " | ".join("---" for _ in columns) + " |")
    for row in rows:
        print("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row)
              + " |")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _cli(*args: str) -> float:
    """Run ``python -m geounet ARGS`` in a new process; return its wall seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "geounet", "-q", *args], check=True, env=_env(),
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def throughput(args: argparse.Namespace) -> None:
    from geounet.synth import synthesize_scene

    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        scenes = []
        for i in range(args.scenes):
            path = work / "scenes" / f"s{i}.tif"
            path.parent.mkdir(exist_ok=True)
            synthesize_scene(work / "synth" / f"s{i}", size=args.size, seed=i)
            os.replace(work / "synth" / f"s{i}" / "scene.tif", path)
            scenes.append(path)
        common = ["--chunk-size", str(args.chunk_size)]
        if args.workers:
            common += ["--workers", str(args.workers)]
        batch_s = _cli("batch", *map(str, scenes), "--out-dir", str(work / "batch"), *common)
        separate_s = 0.0
        (work / "separate").mkdir()
        for path in scenes:
            separate_s += _cli("segment", str(path), "--out",
                               str(work / "separate" / f"{path.stem}.gpkg"), *common)
        megapixels = args.scenes * args.size * args.size / 1e6
        header(f"batch of {args.scenes} scenes of {args.size}² vs {args.scenes} separate "
               "segment runs")
        table(["run", "wall s", "MP/s", "throughput ratio"], [
            [f"{args.scenes} x `geounet segment`", separate_s, megapixels / separate_s, 1.0],
            ["one `geounet batch`", batch_s, megapixels / batch_s, separate_s / batch_s],
        ])
    finally:
        shutil.rmtree(work, ignore_errors=True)


class _Sampler(threading.Thread):
    """Samples this process's RSS every ``interval`` seconds; ``peak`` holds the maximum."""

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process()
        self.interval = interval
        self.peak = self.process.memory_info().rss
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def stop(self) -> int:
        self.stopped.set()
        self.join()
        return self.peak


def memory(args: argparse.Namespace) -> None:
    import tracemalloc

    from distributed import Client, LocalCluster

    from geounet.batch.job import run_batch
    from geounet.model import ModelCard, UNet, UNetConfig, save_checkpoint
    from geounet.testing import write_scene

    work = Path(tempfile.mkdtemp(prefix="bench-batch-mem-"))
    rows = []
    try:
        config = UNetConfig(in_channels=3, num_classes=3, depth=1, base_channels=2,
                            padding="same")
        card = ModelCard(config, bands=(1, 2, 3), mean=(120.0,) * 3, std=(60.0,) * 3,
                         classes=("background", "buildings", "roads"), pixel_size=0.5,
                         dtype="uint8", value_range=(0.0, 255.0))
        model = save_checkpoint(work / "trivial.pt", UNet(config), card)
        counts = [int(c) for c in args.counts.split(",")]
        scene_dir = work / "scenes"
        scene_dir.mkdir()
        for i in range(max(counts)):
            write_scene(scene_dir / f"s{i:05d}.tif", args.size, args.size, seed=i % 7)
        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                          dashboard_address=":0") as cluster, Client(cluster) as client:
            for count in counts:
                scenes = [scene_dir / f"s{i:05d}.tif" for i in range(count)]
                out = work / f"out-{count}"
                tracemalloc.start()
                sampler = _Sampler()
                base = sampler.peak
                sampler.start()
                cpu = time.process_time()
                start = time.perf_counter()
                result = run_batch(scenes, out, model=model, client=client,
                                   chunk_size=args.size, precision="fp32")
                wall = time.perf_counter() - start
                cpu = time.process_time() - cpu
                peak_rss = sampler.stop()
                _, heap_peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                assert result.ok, result.format_table()
                rows.append([count, heap_peak / 2**20, (peak_rss - base) / 2**20,
                             cpu / count * 1e3, wall])
                shutil.rmtree(out, ignore_errors=True)
        header(f"client memory vs scenes in one batch ({args.size}² scenes, trivial model, "
               f"{args.workers} worker processes)")
        table(["scenes", "client Python heap peak MiB", "client RSS growth MiB",
               "client CPU ms / scene", "wall s"], rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--scenes", type=int, default=8)
    t.add_argument("--size", type=int, default=2048)
    t.add_argument("--chunk-size", type=int, default=1024)
    t.add_argument("--workers", type=int, default=None)
    m = sub.add_parser("memory")
    m.add_argument("--counts", default="10,100,1000")
    m.add_argument("--size", type=int, default=64)
    m.add_argument("--workers", type=int, default=2)
    a = sub.add_parser("all")
    a.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.command == "throughput":
        throughput(args)
    elif args.command == "memory":
        memory(args)
    else:
        quick = args.quick
        throughput(argparse.Namespace(scenes=2 if quick else 8, size=512 if quick else 2048,
                                      chunk_size=256 if quick else 1024, workers=None))
        memory(argparse.Namespace(counts="5,20" if quick else "10,100,1000",
                                  size=64, workers=2))


if __name__ == "__main__":
    main()
