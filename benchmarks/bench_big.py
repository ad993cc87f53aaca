"""A multi-gigabyte end-to-end run (issue 20 item 4): ``geounet segment`` on a 32768² RGB scene.

Makes a scene of ``--sizes`` (default 16384 and 32768: 0.8 and 3.2 GB of raw RGB uint8) as a
tiled Cloud-Optimized GeoTIFF without holding it in memory: one ``geounet.synthesize_scene``
tile of ``--tile-size`` px (realistic buildings and roads, 8192² by default: 0.2 GB), repeated
as a mosaic by a GDAL VRT and streamed by GDAL's COG driver (DEFLATE, 512 px blocks; the scene's
memory is GDAL's block cache, bounded). Then, per size, a fresh process runs what a user runs:

    geounet segment SCENE --out objects.gpkg --raster-out pred.tif --overwrite [--segment-args]

(prediction with the built-in model, building and road polygons, road centerlines, the
prediction COG), and the script records wall seconds, MP/s, the peak RSS of the whole process
tree (benchmarks/_proctree.py: the process and its children, sampled every 0.2 s), the output
sizes and feature counts, and checks the issue's memory bound: the largest scene's peak within
1.2x the 16384² one's (the first size given is the reference).

The quiet-machine run (never on a busy machine; about 1-2 h on 2 cores; needs about 20 GB of
free disk in ``--workdir`` at 32768²: the scene 2-3 GB, the Zarr store and COG staging file of
the prediction 4/3 of 4.3 GB while the COG is written, the outputs):

    python benchmarks/bench_big.py --sizes 16384,32768 --json big.json

Smoke test (checks that it runs; seconds mean nothing on a busy machine):

    python benchmarks/bench_big.py --sizes 1024,2048 --tile-size 1024
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def make_tile(work: Path, size: int, seed: int) -> Path:
    """The synthetic tile the mosaics repeat (cached in ``work``)."""
    import geounet

    folder = work / f"tile-{size}-seed{seed}"
    scene = folder / "scene.tif"
    if not scene.exists():
        geounet.synthesize_scene(folder, size=size, seed=seed, overwrite=True)
    return scene


def _vrt(tile: Path, tile_size: int, size: int) -> str:
    """A VRT mosaic of ``tile`` repeated to ``size`` x ``size`` (the tile's georeferencing)."""
    import rasterio

    with rasterio.open(tile) as src:
        t, crs, dtype = src.transform, src.crs.to_wkt(), src.dtypes[0]
    geo = f"{t.c}, {t.a}, {t.b}, {t.f}, {t.d}, {t.e}"
    n = -(-size // tile_size)
    bands = []
    for band in (1, 2, 3):
        sources = "".join(
            f"<SimpleSource><SourceFilename relativeToVRT=\"0\">{tile}</SourceFilename>"
            f"<SourceBand>{band}</SourceBand>"
            f"<SrcRect xOff=\"0\" yOff=\"0\" xSize=\"{tile_size}\" ySize=\"{tile_size}\"/>"
            f"<DstRect xOff=\"{j * tile_size}\" yOff=\"{i * tile_size}\" xSize=\"{tile_size}\" "
            f"ySize=\"{tile_size}\"/></SimpleSource>"
            for i in range(n) for j in range(n))
        bands.append(f"<VRTRasterBand dataType=\"{'Byte' if dtype == 'uint8' else dtype}\" "
                     f"band=\"{band}\">{sources}</VRTRasterBand>")
    return (f"<VRTDataset rasterXSize=\"{size}\" rasterYSize=\"{size}\"><SRS>"
            f"{crs.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')}</SRS>"
            f"<GeoTransform>{geo}</GeoTransform>{''.join(bands)}</VRTDataset>")


def make_scene(work: Path, tile: Path, tile_size: int, size: int) -> Path:
    """The ``size``² scene as a tiled COG streamed from the mosaic (cached in ``work``)."""
    import rasterio
    from rasterio.shutil import copy

    scene = work / f"scene-{size}.tif"
    if scene.exists():
        return scene
    vrt = work / f"mosaic-{size}.vrt"
    vrt.write_text(_vrt(tile, tile_size, size))
    part = scene.with_name(f".part-{scene.name}")
    with rasterio.Env(GDAL_CACHEMAX=256):
        copy(str(vrt), str(part), driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=512,
             BIGTIFF="IF_SAFER", NUM_THREADS="ALL_CPUS", OVERVIEWS="NONE")
    os.replace(part, scene)
    vrt.unlink()
    return scene


def _size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def _features(gpkg: Path) -> dict[str, int]:
    import pyogrio

    return {name: int(pyogrio.read_info(gpkg, layer=name)["features"])
            for name, _ in pyogrio.list_layers(gpkg)}


def run_size(work: Path, scene: Path, size: int, args: argparse.Namespace) -> dict[str, object]:
    """One fresh ``geounet segment`` of ``scene``, measured."""
    sys.path.insert(0, str(HERE))
    from _proctree import run_measured

    out = work / f"out-{size}"
    out.mkdir(exist_ok=True)
    gpkg, pred = out / "objects.gpkg", out / "pred.tif"
    cmd = [args.python, "-m", "geounet", "segment", str(scene), "--out", str(gpkg),
           "--raster-out", str(pred), "--overwrite", *shlex.split(args.segment_args)]
    log = out / "log.txt"
    with log.open("w") as err:
        wall, peak, stdout, code = run_measured(cmd, stderr=err, interval=0.2)
    if code:
        raise SystemExit(f"failed ({code}): {shlex.join(cmd)}\n" + log.read_text()[-3000:])
    megapixels = size * size / 1e6
    row: dict[str, object] = {
        "size": size, "megapixels": megapixels, "scene_raw_gb": 3 * size * size / 1e9,
        "scene_file_gb": _size_of(scene) / 1e9, "wall_s": wall, "mp_per_s": megapixels / wall,
        "peak_rss_gb": peak / 1e9, "cog_gb": _size_of(pred) / 1e9,
        "gpkg_gb": _size_of(gpkg) / 1e9, "features": _features(gpkg),
        "command": shlex.join(cmd), "summary": stdout.strip()[-300:],
    }
    print(f"  {size}²: {wall:.0f} s, {megapixels / wall:.2f} MP/s, peak {peak / 1e9:.2f} GB, "
          f"features {row['features']}", file=sys.stderr, flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16384,32768",
                        help="scene sides, the memory reference first (default 16384,32768)")
    parser.add_argument("--tile-size", type=int, default=8192,
                        help="side of the synthetic tile the mosaic repeats")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--segment-args", default="",
                        help='extra `geounet segment` options, e.g. "--engine torch"')
    parser.add_argument("--python", default=sys.executable, help="python with geounet")
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "bench-big",
                        help="scenes (cached) and outputs (default: $TMPDIR/bench-big)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    sizes = [int(s) for s in args.sizes.split(",")]
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tile_size = min(args.tile_size, min(sizes))
    tile = make_tile(work, tile_size, args.seed)
    rows = []
    for size in sizes:
        scene = make_scene(work, tile, tile_size, size)
        print(f"scene {size}² ready ({_size_of(scene) / 1e9:.2f} GB, "
              f"{time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
        rows.append(run_size(work, scene, size, args))
    reference = float(rows[0]["peak_rss_gb"])  # type: ignore[arg-type]
    print(f"\n`python benchmarks/bench_big.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
          f"  \n`geounet segment SCENE --out objects.gpkg --raster-out pred.tif "
          f"{args.segment_args}`, built-in model, a {tile_size}² synthetic tile (seed "
          f"{args.seed}) repeated; peak RSS of the process tree\n")
    print("| scene | raw RGB GB | file GB | wall s | MP/s | peak RSS GB | vs first | COG GB | "
          "GeoPackage GB | features |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        ratio = float(row["peak_rss_gb"]) / reference  # type: ignore[arg-type]
        features = ", ".join(f"{k} {v:,}" for k, v in row["features"].items())  # type: ignore[union-attr]
        print(f"| {row['size']}² | {row['scene_raw_gb']:.3f} | {row['scene_file_gb']:.3f} | "
              f"{row['wall_s']:.0f} | {row['mp_per_s']:.2f} | {row['peak_rss_gb']:.2f} | "
              f"{ratio:.2f}x {'(within 1.2x)' if ratio <= 1.2 else '(OVER 1.2x)'} | "
              f"{row['cog_gb']:.3f} | {row['gpkg_gb']:.3f} | {features} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
