"""Wall time and peak RSS of `geounet synth` at several scene sizes (one subprocess each).

Usage::

    python benchmarks/bench_synth.py                # sizes 4096 and 8192
    python benchmarks/bench_synth.py --sizes 2048 4096 --band-count 4 --dtype uint16

Prints a Markdown table (size, megapixels, wall seconds, MP/s, peak RSS of the process
tree, output sizes). Each run writes into a temporary directory that is removed afterwards.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil


def measure(cmd: list[str], poll_s: float = 0.02) -> tuple[float, int, int]:
    """Run ``cmd``; return (wall seconds, peak RSS bytes of it and its children, exit code)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss + sum(
                child.memory_info().rss for child in ps.children(recursive=True)
            )
            peak = max(peak, rss)
        except psutil.NoSuchProcess:
            pass
        time.sleep(poll_s)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr.read().decode() if proc.stderr else "")
    return wall, peak, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192])
    parser.add_argument("--band-count", type=int, default=3)
    parser.add_argument("--dtype", default="uint8")
    parser.add_argument("--chunk-size", type=int, default=1024)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {psutil.cpu_count()} CPUs, load {psutil.getloadavg()}")
    print()
    print("| size | MP | wall s | MP/s | peak RSS MiB | scene.tif MiB | truth.gpkg MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="bench-synth-") as tmp:
            out = Path(tmp) / "out"
            cmd = [
                sys.executable, "-m", "geounet", "-q", "synth", str(out),
                "--size", str(size), "--band-count", str(args.band_count),
                "--dtype", args.dtype, "--chunk-size", str(args.chunk_size),
            ]  # fmt: skip
            wall, peak, code = measure(cmd)
            if code != 0:
                raise SystemExit(f"geounet synth failed with exit code {code}")
            mp = size * size / 1e6
            scene_mib = (out / "scene.tif").stat().st_size / 2**20
            truth_mib = (out / "truth.gpkg").stat().st_size / 2**20
            print(
                f"| {size} | {mp:.1f} | {wall:.1f} | {mp / wall:.2f} | {peak / 2**20:.0f} "
                f"| {scene_mib:.0f} | {truth_mib:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
