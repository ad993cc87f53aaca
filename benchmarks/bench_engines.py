"""Forward-pass cost of each inference engine on this CPU (issue 11 item 3: the ``auto`` rule).

Runs the same random-weight U-Net (exported once from one checkpoint) through every installed
engine on the same tiles and prints, per engine: CPU-seconds of this process per output
megapixel (``time.process_time``, all threads: meaningful on a busy machine), wall seconds per
output megapixel (meaningful on a quiet machine only) and the largest difference from PyTorch.

    python benchmarks/bench_engines.py                              # depth 4, base 16, valid 1212
    python benchmarks/bench_engines.py --base 32 --threads 2 --reps 5
    python benchmarks/bench_engines.py --padding same --precision bf16   # AVX512_BF16/AMX
    python benchmarks/bench_engines.py --precision int8   # torch fp32 as the reference row

int8 runners are calibrated on the benchmark's own tile (raw uint8 noise; issue 20); the
difference column is then the quantization error, not rounding.

To rerun quietly: on an otherwise idle machine, `python benchmarks/bench_engines.py --reps 5`
for threads 1 and all cores, and paste the tables into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--base", type=int, default=16)
    parser.add_argument("--padding", choices=("valid", "same"), default="valid")
    parser.add_argument("--tile", type=int, default=None, help="default: 1212 valid, 512 same")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args(argv)

    import torch

    from geounet.engine import backends as engines
    from geounet.engine.inference import ModelRunner, clear_runner_cache, get_runner
    from geounet.model import ModelCard, UNet, UNetConfig, save_checkpoint

    torch.set_num_threads(args.threads)
    tile = args.tile or (1212 if args.padding == "valid" else 512)
    cfg = UNetConfig(depth=args.depth, base_channels=args.base, padding=args.padding)
    torch.manual_seed(0)
    card = ModelCard(architecture=cfg, bands=(1, 2, 3), mean=(120.0,) * 3, std=(60.0,) * 3,
                     classes=("background", "buildings", "roads"), pixel_size=0.5,
                     dtype="uint8", value_range=(0.0, 255.0))
    work = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    checkpoint = save_checkpoint(work / "m.pt", UNet(cfg).eval(), card)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(3, tile, tile), dtype=np.uint8)
    batch = ((pixels.astype(np.float32) - 120.0) / 60.0)[None]
    out_side = cfg.output_size(tile) if args.padding == "valid" else tile
    out_mp = out_side**2 / 1e6
    flags = engines.cpu_flags()
    isa = ",".join(sorted(f for f in flags if f.startswith(("avx512f", "avx512_bf16", "amx"))))
    print(f"`python benchmarks/bench_engines.py {' '.join(sys.argv[1:])}`  ")
    print(f"{platform.machine()}, {os.cpu_count()} cores, AVX2 {'avx2' in flags}, "
          f"AVX-512/AMX: {isa or 'none'}; depth {args.depth}, base {args.base}, {args.padding} "
          f"{tile} -> {out_side}, {args.threads} thread(s), {args.precision}, "
          f"auto -> {engines.resolve_engine('auto', 'cpu')}\n")
    print("| engine | version | CPU-s / output MP | wall s / output MP | max abs diff vs torch |")
    print("| --- | --- | --- | --- | --- |")
    reference = None
    for engine in engines.available_engines():
        precision = args.precision
        if (engine == "onnxruntime" and precision == "bf16") or (
                engine == "torch" and precision == "int8"):
            precision = "fp32"
        clear_runner_cache()
        runner: ModelRunner = get_runner(checkpoint, "cpu", precision, engine=engine,
                                         calibration=pixels if precision == "int8" else None)
        runner.forward(batch)  # warm-up (OpenVINO compiles the shape here)
        cpu, wall = [], []
        for _ in range(args.reps):
            c0, w0 = time.process_time(), time.perf_counter()
            probs = runner.forward(batch)
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
        if reference is None:
            reference = probs
        diff = float(np.abs(probs - reference).max())
        print(f"| {engine} ({precision}) | {engines.engine_version(engine)} | "
              f"{np.median(cpu) / out_mp:.2f} | {np.median(wall) / out_mp:.2f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
