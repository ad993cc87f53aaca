"""Bit-identity check of a refactor: run the same CLI commands with two code trees, compare outputs.

    # 1. with the old code (e.g. main's checkout) into BEFORE
    PYTHONPATH=/path/to/old python benchmarks/check_bit_identity.py run /tmp/o18/before
    # 2. with the new code into AFTER
    PYTHONPATH=$PWD python benchmarks/check_bit_identity.py run /tmp/o18/after
    # 3. compare (any code tree)
    python benchmarks/check_bit_identity.py compare /tmp/o18/before /tmp/o18/after

`run` writes a synthetic scene (seed 7, unseen by the built-in model, as in examples/demo.py)
and segments it with the demo's settings (built-in model, auto engine, COG raster) three ways:
in-process (Dask threads), on a local cluster of 2 real worker processes (`--workers 2`), and
`geounet batch` over the scene and a second seed with `--raster cog --workers 2`; and the Zarr
publishing path twice: an in-process `segment --raster-out inproc.zarr` and a
`batch --raster zarr --in-process`. `compare` checks every band of every prediction raster
for array equality (and dtype, transform, CRS), every file of every Zarr store byte for byte,
and every layer of every vector file for equal geometries (WKB) and equal attributes. Exit
code 1 on any difference.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SIZE = 2048
CHUNK = 1024


def _geounet(*args: str) -> None:
    cmd = [sys.executable, "-m", "geounet", *args]
    print("$ geounet", " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def run(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for seed in (7, 8):
        _geounet("synth", str(out / f"scene{seed}"), "--size", str(SIZE), "--seed", str(seed),
                 "--overwrite")
    scene = str(out / "scene7" / "scene.tif")
    common = ["--chunk-size", str(CHUNK), "--overwrite"]
    _geounet("segment", scene, "--out", str(out / "inproc.gpkg"),
             "--raster-out", str(out / "inproc.tif"), *common)
    _geounet("segment", scene, "--out", str(out / "cluster.gpkg"),
             "--raster-out", str(out / "cluster.tif"), "--workers", "2", *common)
    batch_in = out / "batch_in"
    batch_in.mkdir(exist_ok=True)
    for seed in (7, 8):
        link = batch_in / f"s{seed}.tif"
        if not link.exists():
            link.symlink_to(out / f"scene{seed}" / "scene.tif")
    _geounet("batch", str(batch_in / "s7.tif"), str(batch_in / "s8.tif"),
             "--out-dir", str(out / "batch"), "--raster", "cog", "--workers", "2", *common)
    _geounet("segment", scene, "--out", str(out / "inproc_zarr.gpkg"),
             "--raster-out", str(out / "inproc.zarr"), *common)
    _geounet("batch", str(batch_in / "s7.tif"), "--out-dir", str(out / "batch_zarr"),
             "--raster", "zarr", "--in-process", *common)


def _compare_raster(a: Path, b: Path) -> list[str]:
    import numpy as np
    import rasterio

    with rasterio.open(a) as ra, rasterio.open(b) as rb:
        if (ra.count, ra.dtypes, ra.transform, ra.crs) != (rb.count, rb.dtypes, rb.transform,
                                                            rb.crs):
            return [f"{a.name}: profile differs"]
        bad = [f"{a.name}: band {i} differs" for i in range(1, ra.count + 1)
               if not np.array_equal(ra.read(i), rb.read(i))]
    return bad


def _compare_vectors(a: Path, b: Path) -> list[str]:
    import pyogrio

    bad = []
    layers_a = [name for name, _ in pyogrio.list_layers(a)]
    layers_b = [name for name, _ in pyogrio.list_layers(b)]
    if layers_a != layers_b:
        return [f"{a.name}: layers {layers_a} != {layers_b}"]
    for layer in layers_a:
        fa = pyogrio.read_dataframe(a, layer=layer)
        fb = pyogrio.read_dataframe(b, layer=layer)
        if len(fa) != len(fb) or list(fa.columns) != list(fb.columns):
            bad.append(f"{a.name}:{layer}: shape/columns differ")
            continue
        if list(fa.geometry.to_wkb()) != list(fb.geometry.to_wkb()):
            bad.append(f"{a.name}:{layer}: geometries differ")
        attrs = [c for c in fa.columns if c != fa.geometry.name]
        if not fa[attrs].equals(fb[attrs]):
            bad.append(f"{a.name}:{layer}: attributes differ")
    return bad


def _compare_store(a: Path, b: Path) -> list[str]:
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file()}

    fa, fb = files(a), files(b)
    if sorted(fa) != sorted(fb):
        return [f"{a.name}: files differ ({sorted(set(fa) ^ set(fb))[:5]})"]
    return [f"{a.name}/{name}: bytes differ" for name in fa if fa[name] != fb[name]]


def compare(before: Path, after: Path) -> int:
    rasters = sorted(p.relative_to(before) for p in before.rglob("*.tif")
                     if "scene" not in p.parts[len(before.parts)] and "batch_in" not in str(p))
    vectors = sorted(p.relative_to(before) for p in before.rglob("*.gpkg")
                     if not p.parts[len(before.parts)].startswith("scene"))
    problems: list[str] = []
    for rel in rasters:
        problems += _compare_raster(before / rel, after / rel)
    for rel in vectors:
        problems += _compare_vectors(before / rel, after / rel)
    stores = sorted(p.relative_to(before) for p in before.rglob("*.zarr") if p.is_dir())
    for rel in stores:
        problems += _compare_store(before / rel, after / rel)
    print(f"compared {len(rasters)} rasters ({', '.join(map(str, rasters))}), "
          f"{len(stores)} Zarr stores ({', '.join(map(str, stores))}) and "
          f"{len(vectors)} vector files ({', '.join(map(str, vectors))})")
    for problem in problems:
        print("DIFF", problem)
    print("bit-identical" if not problems else f"{len(problems)} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(Path(sys.argv[2]))
    elif sys.argv[1] == "compare":
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))
    else:
        sys.exit(__doc__)
