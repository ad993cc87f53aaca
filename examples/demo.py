"""The main job on built-in data (run by `make demo`): synthesize, segment, look, score.

1. `geounet info`
2. `geounet synth`: a 4096 x 4096 synthetic scene (0.5 m, UTM 33N) with ground truth, from
   seed 7, which the built-in model never saw in training (it was trained on seeds 100-103)
3. `geounet segment` with the built-in model: buildings + roads polygons, road centerlines and
   the road graph (road_edges, road_nodes) in a GeoPackage, and the prediction raster as a COG
4. a quicklook PNG of the scene with the predicted outlines (geounet.output.quicklook)
5. `geounet evaluate` of the prediction against the ground truth: pixel, object and
   centerline scores, and APLS of the road graph next to the centerline F1

Everything lands in demo-out/; re-running replaces it (--overwrite).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from click.testing import CliRunner  # only to run the real CLI in-process

from geounet.cli.main import cli

SEED = 7        # unseen by the built-in model (trained on seeds 100-103)
SIZE = 4096


def run(*args: str) -> float:
    """Run one geounet command in-process, echo it and its output, return its wall time."""
    print("$ geounet", " ".join(args), flush=True)
    start = time.perf_counter()
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    seconds = time.perf_counter() - start
    print(result.output, end="")
    if result.exit_code != 0:
        sys.exit(result.exit_code)
    print(f"  ({seconds:.1f} s)\n", flush=True)
    return seconds


def main() -> None:
    from geounet.output.quicklook import write_quicklook

    out = Path("demo-out")
    out.mkdir(exist_ok=True)
    start = time.perf_counter()
    run("info")
    # demo-out/scene.tif, truth.gpkg (buildings, roads), truth_mask.tif, synth.json
    run("synth", str(out), "--size", str(SIZE), "--seed", str(SEED), "--overwrite")
    # demo-out/objects.gpkg (layers buildings, roads, road_centerlines, road_edges, road_nodes)
    # and pred.tif (COG:
    # band 1 class, bands 2-4 probabilities), with the built-in model (no --model)
    run("segment", str(out / "scene.tif"), "--out", str(out / "objects.gpkg"),
        "--raster-out", str(out / "pred.tif"), "--overwrite")
    t0 = time.perf_counter()
    look = write_quicklook(out / "scene.tif", out / "objects.gpkg", out / "quicklook.png",
                           max_size=2048, layers=["buildings", "roads", "road_centerlines"],
                           overwrite=True)
    print(f"quicklook: {look.path} ({look.width} x {look.height} px, 1:{look.scale:g}; "
          f"drawn {look.counts}) ({time.perf_counter() - t0:.1f} s)\n")
    # pixel scores against the truth polygons burnt on the prediction grid, building objects
    # matched one to one at IoU >= 0.5, road centerlines within 2 m, and APLS of the road
    # graph (--graph: its road_edges layer) against the true road centrelines
    run("evaluate", str(out / "pred.tif"), str(out / "truth.gpkg"),
        "--graph", str(out / "objects.gpkg"), "--json", str(out / "scores.json"), "--overwrite")
    print(f"demo finished in {time.perf_counter() - start:.0f} s. Outputs in {out}/:")
    for name, what in [
        ("scene.tif", "synthetic scene (seed 7, 4096 x 4096, 0.5 m, EPSG:32633)"),
        ("truth.gpkg, truth_mask.tif", "its ground truth"),
        ("objects.gpkg", "predicted buildings, roads, road_centerlines, road graph"),
        ("pred.tif", "prediction COG: class + probabilities"),
        ("quicklook.png", "scene with predicted outlines (red buildings, yellow roads, "
                          "cyan centerlines)"),
        ("scores.json", "evaluation scores (APLS under 'apls')"),
    ]:
        print(f"  {name:28s} {what}")


if __name__ == "__main__":
    main()
