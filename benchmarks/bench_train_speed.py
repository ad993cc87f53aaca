"""Training throughput (chips/s) per speed switch, on the issue-21 proxy chips (issue 21 item 6).

Usage (quiet machine; the figures are wall-clock rates)::

    PYTHONPATH=. python benchmarks/bench_train_speed.py --out speed-run --threads 2
    PYTHONPATH=. python benchmarks/bench_train_speed.py --out speed-run --profile   # + profiles
    PYTHONPATH=. python benchmarks/bench_train_speed.py --out tiny --chips 12 --chip-size 64 \\
        --set depth:2,base_channels:8 --steps 2 --warmup 1 --samples 4      # a smoke test

Data: ``benchmarks/proxy_data.py`` chips (``--chips`` training chips of 256 px, seed 0, mixed
0.075/0.15/0.30 m, so some are resampled when read) in ``OUT/data`` (made once, reused).

Three measurements, each steady state (after ``--warmup`` steps or samples) as the median of
``--steps`` (``--samples``):

1. **Training steps** (``train_epoch``, the real loop: DataLoader, augmentation, forward,
   backward, AdamW, weight average): chips/s = batch / median wall time between consecutive
   steps, for each variant of ``--variant NAME=key:value,...`` over :class:`TrainConfig` (the
   defaults: ``default`` = every rule, then ``fp32``, ``bf16``, ``nchw`` (channels_last off),
   ``workers0``, ``workers1``, ``nocache``, ``noborder`` (border weights off), ``noaug``
   (zoom, gamma and hue off), ``contact`` (contact_class)). ``--set`` applies to every variant
   first (e.g. ``chip_size:128``). Each row also gives what the rules resolved (precision,
   channels_last, workers, cache), since ``bf16`` on a CPU without native bf16 trains fp32.
2. **Data pipeline alone** (one process, ``ChipDataset`` training samples): samples/s and ms
   per sample with the chip cache on/off, border weights on/off, augmentation on/off, contact
   labels: what a DataLoader worker would have to sustain.
3. With ``--profile``: cProfile of the default variant's steps (``OUT/profile.txt``, top 40
   by cumulative time) and torch.profiler's op table (``OUT/ops.txt``, self CPU time). Their
   shares are meaningful even on a loaded machine; wall rates are not.

Writes ``OUT/speed.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANTS = [
    "default=", "fp32=precision:fp32", "bf16=precision:bf16", "nchw=channels_last:false",
    "workers0=workers:0", "workers1=workers:1", "nocache=cache_chips:false",
    "noborder=border_weight:0", "noaug=scale:0,gamma:0,hue:0", "contact=contact_class:true",
]


def _data(out: Path, chips: int) -> Path:
    from proxy_data import make_proxy

    data = out / "data"
    if not (data / "proxy.json").exists():
        make_proxy(data, 0, chips, 2)
    return data / "train"


def _run(train_dir: Path, config):
    from geounet.training.prepare import prepare_run
    from geounet.training.start import Start

    return prepare_run(train_dir, config, Start())


def step_rate(train_dir: Path, config, steps: int, warmup: int,
              profile: Path | None = None) -> dict:
    """Median chips/s of training steps of ``config`` after ``warmup`` steps (at least one
    epoch, so the chip cache is filled)."""
    from geounet.training.state import TrainState
    from geounet.training.steps import train_epoch

    run = _run(train_dir, config)
    warmup = max(warmup, run.steps)
    stamps: list[float] = []
    sizes: list[int] = []
    state = TrainState(run_start=time.perf_counter())
    profiler = cProfile.Profile() if profile is not None else None

    def tick(event) -> None:
        stamps.append(time.perf_counter())
        n = len(run.train_set)
        sizes.append(min(config.batch_size, n - (event.step - 1) * config.batch_size))
        if profiler is not None and len(stamps) == warmup + 1:
            profiler.enable()

    epoch = 0
    start = time.perf_counter()
    try:
        while len(stamps) < warmup + steps + 1:
            epoch += 1
            train_epoch(run, state, epoch, tick)
        if profiler is not None:
            profiler.disable()
            _write_profiles(run, state, profiler, profile)
    finally:
        run.close()
    gaps = [b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1:])][:steps]
    rates = [n / g for n, g in zip(sizes[warmup + 1:], gaps)]
    return {"chips_per_s": round(statistics.median(rates), 3),
            "step_s_median": round(statistics.median(gaps), 4),
            "step_s": [round(g, 4) for g in gaps],
            "precision": {"torch.bfloat16": "bf16", "torch.float16": "fp16"}.get(
                str(run.amp_dtype), "fp32"),
            "channels_last": run.channels_last, "workers": run.workers,
            "cache": run.train_set.reader.cache, "train_chips": len(run.train_set),
            "epochs": epoch, "seconds": round(time.perf_counter() - start, 1)}


def _write_profiles(run, state, profiler: cProfile.Profile, out: Path) -> None:
    """cProfile's top functions and torch.profiler's op table of a few more steps."""
    from torch.profiler import ProfilerActivity, profile

    from geounet.training.steps import train_epoch

    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
    (out / "profile.txt").write_text(text.getvalue())
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_epoch(run, state, 99, None)
    (out / "ops.txt").write_text(prof.key_averages().table(sort_by="self_cpu_time_total",
                                                           row_limit=30))


def data_rate(train_dir: Path, config, samples: int, warmup: int, **changes) -> dict:
    """Median ms per training sample of one process's ChipDataset (no model), after one
    epoch of samples (the chip cache filled) and ``warmup`` more."""
    import dataclasses

    run = _run(train_dir, dataclasses.replace(config, **changes))
    dataset = run.train_set
    warmup += len(dataset)
    times = []
    try:
        for i in range(warmup + samples):
            key = (1 + i // len(dataset), i % len(dataset))
            t0 = time.perf_counter()
            dataset[key]
            times.append(time.perf_counter() - t0)
    finally:
        run.close()
    median = statistics.median(times[warmup:])
    return {"samples_per_s": round(1 / median, 2), "ms_per_sample": round(1000 * median, 2),
            "cache": dataset.reader.cache}


def main(argv: list[str] | None = None) -> int:
    from bench_recipe import parse_options

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--chips", type=int, default=60, help="proxy training chips")
    parser.add_argument("--chip-size", type=int, default=None,
                        help="TrainConfig.chip_size (default: the chips', 256)")
    parser.add_argument("--set", default="", help="TrainConfig options for every variant")
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME=key:value,... (repeatable; default: the list in the doc)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--samples", type=int, default=40, help="data-pipeline samples")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    import torch

    from geounet.training import TrainConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_dir = _data(out, args.chips)
    common = {"max_minutes": None, "epochs": 1000, **parse_options(args.set)}
    if args.chip_size:
        common["chip_size"] = args.chip_size
    rows = []
    for spec in args.variant or VARIANTS:
        name, _, options = spec.partition("=")
        config = TrainConfig(**{**common, **parse_options(options)})
        row = {"variant": name, "options": options,
               **step_rate(train_dir, config, args.steps, args.warmup,
                           out if args.profile and name == "default" else None)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = TrainConfig(**common)
    data = {name: data_rate(train_dir, base, args.samples, args.warmup, **changes)
            for name, changes in (("default", {}), ("nocache", {"cache_chips": False}),
                                  ("noborder", {"border_weight": 0.0}),
                                  ("noaug", {"scale": 0.0, "gamma": 0.0, "hue": 0.0}),
                                  ("contact", {"contact_class": True}))}
    result = {"threads": torch.get_num_threads(), "torch": torch.__version__,
              "set": common, "steps": rows, "data": data}
    (out / "speed.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n{'variant':<10} {'chips/s':>8} {'step s':>7} {'precision':>9} {'NHWC':>5} "
          f"{'workers':>7} {'cache':>5}")
    for r in rows:
        print(f"{r['variant']:<10} {r['chips_per_s']:>8.2f} {r['step_s_median']:>7.3f} "
              f"{r['precision']:>9} {str(r['channels_last']):>5} {r['workers']:>7} "
              f"{str(r['cache']):>5}")
    print(f"\n{'data':<10} {'samples/s':>9} {'ms/sample':>9}")
    for name, d in data.items():
        print(f"{name:<10} {d['samples_per_s']:>9.1f} {d['ms_per_sample']:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
