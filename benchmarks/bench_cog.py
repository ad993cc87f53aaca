"""What publishing a prediction store as a COG costs (issue 11 item 2, "fixed cost per run").

Builds a realistic prediction store with geounet's own API: a ``geounet synth`` scene's truth
mask turned into 3-class probabilities the way a real model's look (smooth fields with sharp
class edges: the one-hot truth blurred by 1.5 px, plus a smooth logit field of 12 px, then
softmax; uint8 as ``predict`` writes them by default, nodata border of 16 px, chunk 2048),
then times ``geounet.output.write_cog`` ("after") against a faithful copy of the writer it
replaced ("before": DEFLATE-compressed staging GeoTIFF, then GDAL's COG driver building the
overviews and compressing again at DEFLATE level 6), plus the steps in between (ablations).

CPU-seconds are ``time.process_time()`` of this process, which counts every thread of it,
GDAL's included; wall seconds are printed too but are not a result on a shared machine.
Each variant runs ``--repeat`` times, variants alternating, medians reported.

    python benchmarks/bench_cog.py --size 4096
    python benchmarks/bench_cog.py --size 4096 --variants before after --memory
    python benchmarks/bench_cog.py --size 16384 --variants before after --memory --repeat 1

``--memory`` runs each variant once more in a fresh child process and reports its peak
RSS (``ru_maxrss``), to show it does not grow with the scene. A 16384² store is the 4096²
probabilities tiled 4 x 4 (it is built chunk by chunk, never held whole).
If rio-cogeo happens to be importable, every output is also checked with its
``cog_validate``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CLASSES = ("background", "buildings", "roads")
CHUNK = 2048
BASE = 4096  # side of the synthetic probabilities; larger stores tile them


def probabilities(work: Path) -> tuple[Any, Any, str, tuple[float, ...]]:
    """(K, BASE, BASE) float32 probabilities and the validity of a synthetic scene's truth."""
    import numpy as np
    import rasterio
    from scipy import ndimage

    from geounet.synth import synthesize_scene

    mask_path = work / "scene" / "truth_mask.tif"
    if not mask_path.is_file():
        synthesize_scene(work / "scene", size=BASE, seed=0, nodata_border=16, overwrite=True)
    with rasterio.open(mask_path) as src:
        truth = src.read(1)
        crs_wkt, transform = src.crs.to_wkt(), tuple(src.transform)[:6]
    rng = np.random.default_rng(0)
    logits = np.empty((len(CLASSES), *truth.shape), np.float32)
    for k in range(len(CLASSES)):
        smooth = ndimage.gaussian_filter(rng.standard_normal(truth.shape).astype(np.float32), 12)
        logits[k] = 5 * ndimage.gaussian_filter((truth == k).astype(np.float32), 1.5)
        logits[k] += smooth * (0.8 / smooth.std())
    logits -= logits.max(0, keepdims=True)
    probs = np.exp(logits, out=logits)
    probs /= probs.sum(0, keepdims=True)
    return probs, truth != 255, crs_wkt, transform


def build_store(work: Path, size: int) -> Path:
    """A prediction store of ``size``² written chunk by chunk by geounet.output."""
    from geounet import output
    store = work / f"p{size}.zarr"
    if store.is_dir():
        return store
    probs, valid, crs_wkt, transform = probabilities(work)
    spec = output.create_store(store, height=size, width=size, classes=CLASSES,
                               chunk_size=CHUNK, crs_wkt=crs_wkt, transform=transform,
                               run={"scene": "bench"})
    for y0 in range(0, size, CHUNK):
        for x0 in range(0, size, CHUNK):
            rows = slice(y0 % BASE, y0 % BASE + CHUNK)
            cols = slice(x0 % BASE, x0 % BASE + CHUNK)
            block = probs[:, rows, cols]
            output.write_chunk(spec, y0, x0, block, block.argmax(0).astype("uint8"),
                               valid[rows, cols])
            output.mark_done(spec, y0, x0, {})
    return store


def write_variant(store: Path, out: Path, *, staging: dict[str, Any], staging_overviews: bool,
                  cog: dict[str, Any]) -> int:
    """geounet's COG writer with its staging and COG options replaced: the old writer and the
    steps between old and new. Returns the staging file's size in bytes."""
    import rasterio
    import rasterio.shutil
    import zarr

    from geounet.output import cog as cog_module
    from geounet.output.paths import remove_path

    group = zarr.open_group(str(store), mode="r")
    probs, mask = group["probabilities"], group["mask"]
    profile = cog_module._staging_profile(group, probs, 512) | staging
    stage = out.with_suffix(".staging.tif")
    remove_path(stage)
    remove_path(out)
    try:
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
            factors = cog_module._overview_factors(*mask.shape, 512) if staging_overviews else []
            cog_module._write_staging(stage, profile, probs, mask, list(CLASSES), CHUNK, factors)
            size = stage.stat().st_size
            rasterio.shutil.copy(stage, out, driver="COG", BLOCKSIZE=512, BIGTIFF="IF_SAFER",
                                 OVERVIEW_RESAMPLING="NEAREST", **cog)
    finally:
        remove_path(stage)
    return size


DEFLATE6 = {"COMPRESS": "DEFLATE"}
VARIANTS: dict[str, dict[str, Any]] = {
    # the writer before this change: DEFLATE staging, COG driver makes overviews, level 6
    "before": {"staging": {"compress": "DEFLATE"}, "staging_overviews": False, "cog": DEFLATE6},
    "staging uncompressed": {"staging": {}, "staging_overviews": False, "cog": DEFLATE6},
    "+ overviews in staging": {"staging": {}, "staging_overviews": True, "cog": DEFLATE6},
    "+ predictor, level 1": {"staging": {}, "staging_overviews": True,
                             "cog": {**DEFLATE6, "PREDICTOR": "YES", "LEVEL": 1}},
    "+ predictor, level 6": {"staging": {}, "staging_overviews": True,
                             "cog": {**DEFLATE6, "PREDICTOR": "YES"}},
    "+ level 3, no predictor": {"staging": {}, "staging_overviews": True,
                                "cog": {**DEFLATE6, "LEVEL": 3}},
    "+ predictor, level 3, 2 threads": {"staging": {}, "staging_overviews": True,
                                        "cog": {**DEFLATE6, "PREDICTOR": "YES", "LEVEL": 3,
                                                "NUM_THREADS": 2}},
    "staging ZSTD 1 + overviews, predictor, level 3": {
        "staging": {"compress": "ZSTD", "zstd_level": 1}, "staging_overviews": True,
        "cog": {**DEFLATE6, "PREDICTOR": "YES", "LEVEL": 3}},
    # geounet.output.write_cog as it is now (uncompressed staging with overviews, predictor,
    # level 3)
    "after": {},
}


def run_variant(name: str, store: Path, out: Path) -> tuple[float, float, int, int]:
    """(CPU-s, wall s, COG bytes, staging bytes) of one write of ``name``."""
    from geounet import output
    c0, w0 = time.process_time(), time.perf_counter()
    if name == "after":
        output.write_cog(store, out, overwrite=True)
        staging = -1
    else:
        staging = write_variant(store, out, **VARIANTS[name])
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return cpu, wall, out.stat().st_size, staging


def validate(path: Path) -> str:
    try:
        from rio_cogeo.cogeo import cog_validate
    except ImportError:
        return "-"
    valid, errors, _warnings = cog_validate(str(path), quiet=True)
    return "valid" if valid else f"INVALID {errors}"


def peak_rss_mb(name: str, store: Path, out: Path) -> float:
    """Peak RSS (MB) of a fresh child process that writes ``name`` once."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_cog; "
            f"bench_cog.run_variant({name!r}, bench_cog.Path({str(store)!r}), "
            f"bench_cog.Path({str(out)!r}))")
    proc = subprocess.Popen([sys.executable, "-c", code])
    _pid, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise SystemExit(f"child for {name!r} failed ({status})")
    return usage.ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=BASE, help="store side (multiple of 2048)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--memory", action="store_true", help="peak RSS per variant")
    parser.add_argument("--work", default=None, help="folder kept between runs (store reused)")
    args = parser.parse_args(argv)
    if args.size % CHUNK:
        parser.error(f"--size {args.size} is not a multiple of {CHUNK}; use e.g. 4096")

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-cog-"))
    work.mkdir(parents=True, exist_ok=True)
    store = build_store(work, args.size)
    runs: dict[str, list[tuple[float, float, int, int]]] = {name: [] for name in args.variants}
    outs = {name: work / f"out{i}.tif" for i, name in enumerate(args.variants)}
    for _ in range(args.repeat):
        for name in args.variants:
            runs[name].append(run_variant(name, store, outs[name]))
    print(f"`python benchmarks/bench_cog.py {' '.join(sys.argv[1:])}`  ")
    print(f"{args.size}² store, {len(CLASSES)} classes uint8, chunk {CHUNK}; medians of "
          f"{args.repeat}; CPU-s = process_time (all threads); wall is not a result on a "
          "shared machine\n")
    memory = "| peak RSS MB " if args.memory else ""
    print(f"| variant | CPU-s | wall s | COG MB | vs before | staging MB {memory}| cog_validate |")
    print("| --- " * (8 if args.memory else 7) + "|")
    before = None
    records = {}
    for name in args.variants:
        cpu = statistics.median(r[0] for r in runs[name])
        wall = statistics.median(r[1] for r in runs[name])
        size = runs[name][-1][2]
        staging = runs[name][-1][3]
        before = size if name == "before" else before
        check = validate(outs[name])
        rss = f"| {peak_rss_mb(name, store, outs[name]):.0f} " if args.memory else ""
        ratio = f"{size / before - 1:+.1%}" if before else "-"
        stage = f"{staging / 1e6:.1f}" if staging >= 0 else "(not kept)"
        print(f"| {name} | {cpu:.2f} | {wall:.2f} | {size / 1e6:.2f} | {ratio} | {stage} "
              f"{rss}| {check} |")
        records[name] = {"cpu": cpu, "wall": wall, "bytes": size}
    (work / "bench_cog.json").write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
