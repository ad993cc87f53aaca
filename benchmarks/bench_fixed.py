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

``--fresh N`` (issue 20 item 4) instead times what a user sees: N rounds of a fresh
``python -m geounet predict SCENE --out OUT`` per checkout (alternating order), each given by
``--checkout NAME=PATH`` (the folder put first on ``PYTHONPATH``; default: this checkout), on
the same 1024² scene: wall seconds of the whole process, seconds from the process's start to
the first forward call (``ModelRunner.forward``, patched in by a small bootstrap: the fixed
cost before the first tile), the seconds after the last forward (writing the output,
teardown), peak RSS, and the top-level imports (``python -X importtime``, one extra run per
checkout). A warm-up run per checkout first fills the engines' export caches (a one-time cost
per checkpoint, reported apart). Before/after for issue 20, on a quiet machine:

    git worktree add /tmp/geounet-main 894a158
    python benchmarks/bench_fixed.py --fresh 5 --size 1024 --out pred.tif \
        --checkout before=/tmp/geounet-main --checkout after=.
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


def import_seconds(env: dict[str, str] | None = None, cmd: list[str] | None = None,
                   cwd: str | None = None) -> tuple[float, list[tuple[float, str]]]:
    """Cumulative top-level import time (s) of ``cmd`` (python arguments; default: import
    `geounet.run.pipeline` + torch) in a fresh interpreter, and the six largest."""
    cmd = cmd or ["-c", "import geounet.run.pipeline, geounet.engine.inference, torch"]
    err = subprocess.run([sys.executable, "-X", "importtime", *cmd], capture_output=True,
                         text=True, check=True, env=env, cwd=cwd).stderr
    rows = []
    for line in err.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m and len(m.group(3)) <= 1:  # top-level imports only
            rows.append((int(m.group(2)) / 1e6, m.group(4)))
    return sum(r[0] for r in rows), sorted(rows, reverse=True)[:6]


BOOTSTRAP = """
import atexit, json, sys, time
stamps = {"start": time.time()}
import geounet.engine.runner as runner
forward = runner.ModelRunner.forward
def timed(self, *args, **kwargs):
    stamps.setdefault("first_forward", time.time())
    try:
        return forward(self, *args, **kwargs)
    finally:
        stamps["last_forward"] = time.time()
runner.ModelRunner.forward = timed
atexit.register(lambda: open(sys.argv[1], "w").write(json.dumps(stamps)))
from geounet.cli.main import cli
cli(sys.argv[2:], prog_name="geounet")
"""


def write_noise_scene(scene: Path, size: int) -> None:
    """A 3-band uint8 noise GeoTIFF (tiled 512, DEFLATE), the same for every checkout."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(0)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3,
               "dtype": "uint8", "crs": "EPSG:32633", "tiled": True, "blockxsize": 512,
               "blockysize": 512, "compress": "deflate",
               "transform": from_origin(500000, 5000000, 0.5, 0.5)}
    with rasterio.open(scene, "w", **profile) as dst:
        for y in range(0, size, 512):
            h = min(512, size - y)
            block = rng.integers(0, 256, (3, h, size), dtype=np.uint8)
            dst.write(block, window=((y, y + h), (0, size)))


def fresh_runs(args: argparse.Namespace) -> None:
    """``--fresh``: whole fresh processes per checkout, alternating (see the module docstring)."""
    import json
    import os
    import statistics

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _proctree import run_measured

    checkouts = dict(item.split("=", 1) for item in (args.checkout or ["this=."]))
    work = Path(tempfile.mkdtemp(prefix="bench-fixed-fresh-"))
    scene = work / "scene.tif"
    write_noise_scene(scene, args.size)
    extra = args.predict_args.split()
    if args.model:
        extra += ["--model", args.model]

    def command(name: str, tag: str) -> list[str]:
        return ["-c", BOOTSTRAP, str(work / f"stamps-{name}-{tag}.json"), "-q", "predict",
                str(scene), "--out", str(work / f"{name}-{args.out}"), "--overwrite", *extra]

    def run(name: str, path: str, tag: str) -> dict[str, float]:
        env = {**os.environ, "PYTHONPATH": str(Path(path).resolve())}
        env.pop("PYTHONSAFEPATH", None)
        stamps = work / f"stamps-{name}-{tag}.json"
        cmd = [sys.executable, *command(name, tag)]
        t0 = time.time()
        # cwd: the work folder, so `python -c` does not put this checkout first on sys.path
        wall, peak, _, code = run_measured(cmd, stderr=subprocess.DEVNULL, env=env,
                                           cwd=str(work))
        if code:
            raise SystemExit(f"{name} failed ({code}): {' '.join(cmd[3:])}")
        st = json.loads(stamps.read_text())
        return {"wall": wall, "first": st["first_forward"] - t0,
                "after": t0 + wall - st["last_forward"], "peak": peak / 1e9}

    rows: dict[str, list[dict[str, float]]] = {name: [] for name in checkouts}
    warm = {name: run(name, path, "warm") for name, path in checkouts.items()}
    for rep in range(args.fresh):
        order = list(checkouts.items())
        for name, path in order if rep % 2 == 0 else order[::-1]:
            rows[name].append(run(name, path, str(rep)))
    print(f"`python benchmarks/bench_fixed.py {' '.join(sys.argv[1:])}`  ")
    print(f"{args.size}² noise scene, `geounet predict --out {args.out} "
          f"{args.predict_args}`; medians of {args.fresh} alternating rounds after one warm-up "
          "run per checkout\n")
    print("| checkout | wall s | start -> first forward s | after last forward s | "
          "peak RSS GB | warm-up run wall s | top-level imports s (importtime) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, path in checkouts.items():
        med = {k: statistics.median(r[k] for r in rows[name]) for k in rows[name][0]}
        total, top = import_seconds({**os.environ, "PYTHONPATH": str(Path(path).resolve())},
                                    command(name, "importtime"), cwd=str(work))
        tops = ", ".join(f"{n} {t:.2f}" for t, n in top[:4])
        print(f"| {name} | {med['wall']:.2f} | {med['first']:.2f} | {med['after']:.2f} | "
              f"{med['peak']:.2f} | {warm[name]['wall']:.2f} | {total:.2f} ({tops}) |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", default="pred.tif", help="pred.tif (COG) or pred.zarr")
    parser.add_argument("--scheduler", choices=("default", "synchronous", "cluster"),
                        default="default", help="default: geounet's choice for the scene")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--engine", default="torch")
    parser.add_argument("--fresh", type=int, default=0, metavar="N",
                        help="time N rounds of fresh `geounet predict` processes per checkout")
    parser.add_argument("--checkout", action="append", default=None, metavar="NAME=PATH",
                        help="with --fresh: a geounet checkout to time (repeat)")
    parser.add_argument("--predict-args", default="",
                        help='with --fresh: extra `geounet predict` options, e.g. "--engine torch"')
    args = parser.parse_args(argv)
    if args.fresh:
        fresh_runs(args)
        return

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
