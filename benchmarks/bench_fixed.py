"""Where a `predict` spends its CPU time outside the forward pass (issue 11 item 2).

Runs `geounet.predict` on a synthetic-noise scene with the built-in model (or ``--model``) under
cProfile with a CPU-time clock (``time.process_time``: all threads of this process), and
prints CPU-seconds per phase: plan, model load, read, normalize, forward, blend/crop, write,
publish (Zarr consolidate or COG conversion), plus the import of geounet's pipeline and torch
(``python -X importtime``, a child process) and the CPU-seconds of a LocalCluster's worker
processes (``RUSAGE_CHILDREN``) when ``--scheduler cluster`` is given. Counts and CPU-seconds
stay meaningful on a busy machine; wall seconds do not.

    python benchmarks/bench_fixed.py --size 1024 --out pred.tif
    python benchmarks/bench_fixed.py --size 4096 --out pred.tif
    python benchmarks/bench_fixed.py --size 1024 --out pred.tif --scheduler cluster --workers 2

To rerun quietly: the same commands on an idle machine; add the wall column (printed) to
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASES = {  # phase: (module file suffix, function name)
    "plan (open scene, card, grid)": ("planning.py", "plan_prediction"),
    "model load (get_runner)": ("runner.py", "get_runner"),
    "read window + mirror": ("window.py", "read_window"),
    "normalize": ("runner.py", "normalize"),
    "forward (engine)": ("runner.py", "forward"),
    "chunk total (compute_chunk)": ("inference.py", "_run_tiles"),
    "seam blend (blend_seams)": ("inference.py", "blend_seams"),
    "classify": ("inference.py", "classify"),
    "write chunk": ("store.py", "write_chunk"),
    "marker": ("store.py", "mark_done"),
    "scheduler start/stop": ("cluster.py", "scheduler"),
    "publish (consolidate / COG)": ("run/store.py", "publish_raster"),
    "finalize store": ("store.py", "finalize_store"),
}


def import_seconds() -> tuple[float, list[tuple[float, str]]]:
    """Cumulative import time (s) of `geounet.run.pipeline` + torch in a fresh interpreter."""
    code = "import geounet.run.pipeline, geounet.engine.inference, torch"
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True,
                         text=True, check=True).stderr
    rows = []
    for line in err.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m and len(m.group(3)) <= 1:  # top-level imports only
            rows.append((int(m.group(2)) / 1e6, m.group(4)))
    return sum(r[0] for r in rows), sorted(rows, reverse=True)[:6]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", default="pred.tif", help="pred.tif (COG) or pred.zarr")
    parser.add_argument("--scheduler", choices=("default", "synchronous", "cluster"),
                        default="default", help="default: geounet's choice for the scene")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--engine", default="torch")
    args = parser.parse_args(argv)

    total_import, top = import_seconds()
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    import geounet

    work = Path(tempfile.mkdtemp(prefix="bench-fixed-"))
    scene = work / "scene.tif"
    rng = np.random.default_rng(0)
    profile = {"driver": "GTiff", "width": args.size, "height": args.size, "count": 3,
               "dtype": "uint8", "crs": "EPSG:32633", "tiled": True, "blockxsize": 512,
               "blockysize": 512, "compress": "deflate",
               "transform": from_origin(500000, 5000000, 0.5, 0.5)}
    with rasterio.open(scene, "w", **profile) as dst:
        for y in range(0, args.size, 512):
            h = min(512, args.size - y)
            block = rng.integers(0, 256, (3, h, args.size), dtype=np.uint8)
            dst.write(block, window=((y, y + h), (0, args.size)))
    client = {"default": None, "synchronous": "synchronous", "cluster": None}[args.scheduler]
    workers = args.workers if args.scheduler == "cluster" else None
    if args.scheduler == "cluster" and workers is None:
        workers = 2
    prof = cProfile.Profile(time.process_time)
    c0, w0 = time.process_time(), time.perf_counter()
    prof.enable()
    result = geounet.predict(scene, work / args.out, model=args.model, client=client,
                             workers=workers, engine=args.engine)
    prof.disable()
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    stats = pstats.Stats(prof)
    found: dict[str, float] = {}
    for (path, _line, name), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():
        for phase, (suffix, func) in PHASES.items():
            if name == func and path.endswith(suffix):
                found[phase] = found.get(phase, 0.0) + ct
    print(f"`python benchmarks/bench_fixed.py {' '.join(sys.argv[1:])}`  ")
    print(f"{args.size}² scene, {result.chunks} chunk(s), out {args.out}, scheduler "
          f"{args.scheduler}; this process {cpu:.2f} CPU-s, {wall:.1f} s wall (busy machine: "
          f"wall not a result); child processes {children.ru_utime + children.ru_stime:.2f} "
          f"CPU-s (importtime child included)\n")
    print("| phase | CPU-s (this process) | share |")
    print("| --- | --- | --- |")
    print(f"| import geounet.run.pipeline + torch (fresh interpreter, wall s) | "
          f"{total_import:.2f} | - |")
    for phase in PHASES:
        if phase in found:
            print(f"| {phase} | {found[phase]:.2f} | {found[phase] / cpu:.0%} |")
    print("\nlargest top-level imports: " + ", ".join(f"{n} {s:.2f} s" for s, n in top))


if __name__ == "__main__":
    main()
