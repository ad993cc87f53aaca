"""Cluster overhead and scaling against a real ``dask scheduler`` with ``dask worker`` processes.

    python benchmarks/bench_cluster.py                      # 1024 chunks, 1 and 2 workers
    python benchmarks/bench_cluster.py --reps 5 --skip-throughput   # the overhead alone
    python benchmarks/bench_cluster.py --overhead-size 2048 --chunk 32 --throughput-size 2048

1. Scheduler overhead per chunk: a scene of ``(size / chunk)**2`` chunks (1,024 by default)
   with a trivial model (a depth-1 U-Net with 2 channels, so a task is mostly I/O), run
   in-process (``client="synchronous"``: no scheduler) and through a real scheduler with one
   one-thread worker. ``(remote wall - in-process wall) / chunks`` is the per-chunk cost of
   scheduling, serialization and the round trips (plus the connection and the model shipping,
   paid once); the client's own CPU seconds per chunk (``time.process_time``) are also shown
   (they do not depend on how busy the machine is). Target: < 5 ms per chunk.
2. Throughput with 1 and 2 worker processes (one thread each) against a real scheduler: the
   built-in model on a synthetic scene, megapixels per second and the 2/1 ratio.

Prints a markdown table. Timings are only meaningful on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def _trivial_model(path: Path) -> Path:
    import torch

    from geounet.model import ModelCard, UNet, UNetConfig, save_checkpoint

    torch.manual_seed(0)
    config = UNetConfig(in_channels=3, num_classes=3, depth=1, base_channels=2, padding="valid")
    card = ModelCard(config, bands=(1, 2, 3), mean=(120.0, 125.0, 130.0), std=(60.0, 55.0, 50.0),
                     classes=("background", "buildings", "roads"), pixel_size=0.5,
                     dtype="uint8", value_range=(0.0, 255.0))
    return save_checkpoint(path, UNet(config), card)


def _timed(fn: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overhead-size", type=int, default=1024)
    parser.add_argument("--chunk", type=int, default=32)
    parser.add_argument("--throughput-size", type=int, default=2048)
    parser.add_argument("--throughput-chunk", type=int, default=512)
    parser.add_argument("--reps", type=int, default=5,
                        help="alternating in-process / remote runs for the overhead (medians)")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args(argv)

    from geounet.run.pipeline import predict
    from geounet.synth import synthesize_scene
    from geounet.testing import DaskProcesses, write_scene

    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = _trivial_model(tmp / "trivial.pt")
        scene = write_scene(tmp / "overhead.tif", args.overhead_size, args.overhead_size)
        common = dict(model=model, chunk_size=args.chunk, precision="fp32")
        local_walls, remote_walls, remote_cpus = [], [], []
        chunks = 0
        for rep in range(args.reps):  # alternate, so drifts of a shared machine hit both
            local, wall, _ = _timed(lambda r=rep: predict(
                scene, tmp / f"local{r}.zarr", client="synchronous", **common))
            local_walls.append(wall)
            chunks = local.chunks
            with DaskProcesses(tmp / f"dask1-{rep}", workers=1) as procs:
                _, wall, cpu = _timed(lambda r=rep, on=procs.address: predict(
                    scene, tmp / f"remote{r}.zarr", client=on, **common))
            remote_walls.append(wall)
            remote_cpus.append(cpu)
        local_wall, remote_wall = statistics.median(local_walls), statistics.median(remote_walls)
        per_chunk = (remote_wall - local_wall) / chunks * 1e3
        rows.append(("scheduler overhead per chunk (1 worker, trivial model)",
                     f"{per_chunk:.2f} ms ({chunks} chunks: median {remote_wall:.1f} s via the "
                     f"scheduler vs {local_wall:.1f} s in-process over {args.reps} alternating "
                     f"runs; remote {', '.join(f'{w:.1f}' for w in remote_walls)} s, "
                     f"in-process {', '.join(f'{w:.1f}' for w in local_walls)} s)"))
        rows.append(("client CPU per chunk via the scheduler",
                     f"{statistics.median(remote_cpus) / chunks * 1e3:.2f} ms (median)"))

        if args.skip_throughput:
            return _print(rows)
        big = synthesize_scene(tmp / "synth", size=args.throughput_size, seed=11).scene_path
        rates = {}
        for workers in (1, 2):
            with DaskProcesses(tmp / f"dask-t{workers}", workers=workers) as procs:
                result, wall, _ = _timed(lambda n=workers, on=procs.address: predict(
                    big, tmp / f"t{n}.zarr", client=on, precision="fp32",
                    chunk_size=args.throughput_chunk))
            rates[workers] = result.pixels / 1e6 / wall
            rows.append((f"throughput, {workers} worker process(es) x 1 thread, built-in model",
                         f"{rates[workers]:.2f} MP/s ({result.chunks} chunks of "
                         f"{args.throughput_chunk}², {wall:.1f} s)"))
        rows.append(("2 workers / 1 worker", f"{rates[2] / rates[1]:.2f}x"))
    _print(rows)


def _print(rows: list[tuple[str, str]]) -> None:
    print("| measure | value |\n| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
