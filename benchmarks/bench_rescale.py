"""Which ``--rescale`` to pick for an 11- or 12-bit scene given to a uint8 model (issue 22).

For each seed a synthetic uint8 scene (``geounet synth``, 0.5 m, the built-in model's) is the
reference; an 11-bit and a 12-bit copy are made as a sensor records the scene, not as ``* 8``:
per band a dark offset and a gain (unequal bands: the white balance of the 8-bit product
undone), the display gamma undone (the 8-bit product is gamma-encoded, the sensor counts are
linear in radiance: ``raw = offset + gain * (v / 255) ** 2.2``) and read noise (Gaussian, 1 %
of the offset); a third copy is the uint8 product only stored in 11 bits (``v * 2047 / 255``,
the case of issue 9). Each copy is segmented by the built-in model with ``--rescale bits``,
``percentile``, and ``match``: through 5 of the card's training percentiles (the default,
2, 25, 50, 75, 98), all 11, or 3 or 2 of them (``match:2,98`` is linear). Scores against the synth truth:
buildings found (polygons), building pixel IoU, building object F1 (IoU >= 0.5), road IoU.
Accuracy only: the figures do not depend on the machine's load. Prints a markdown table.

    python benchmarks/bench_rescale.py                       # seeds 3,4,5, 300 m scenes
    python benchmarks/bench_rescale.py --seeds 3 --extent 100  # a quick check
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

MODES = ("bits", "percentile", "match", "match:1,2,5,10,25,50,75,90,95,98,99", "match:2,50,98",
         "match:2,98")

SENSORS = {
    # name: (bits, per-band dark offset in DN, per-band gain as a share of the range above
    # it, gamma undone); "linear": the uint8 product only stored in 11 bits (v * 2047 / 255)
    "11-bit linear": (11, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 1.0),
    "11-bit sensor": (11, (62.0, 84.0, 101.0), (0.78, 0.70, 0.61), 2.2),
    "12-bit sensor": (12, (180.0, 151.0, 122.0), (0.55, 0.66, 0.72), 2.2),
}


def sensor_copy(scene: Path, out: Path, sensor: str, seed: int) -> Path:
    """``scene`` as ``sensor`` (a key of :data:`SENSORS`) records it (module docstring)."""
    import rasterio

    bits, offsets, gains, gamma = SENSORS[sensor]
    top = 2**bits - 1
    rng = np.random.default_rng(seed)
    with rasterio.open(scene) as src:
        profile, data = src.profile, src.read().astype(np.float64)
    raw = np.empty(data.shape, np.uint16)
    for band in range(data.shape[0]):
        linear = (data[band] / 255.0) ** gamma
        counts = offsets[band] + gains[band] * (top - offsets[band]) * linear
        if offsets[band]:
            counts += rng.normal(0.0, 0.01 * offsets[band], counts.shape)
        raw[band] = np.clip(np.rint(counts), 0, top)
    profile.update(dtype="uint16", nbits=bits)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(raw)
    return out


def score(scene: Path, out: Path, **options: object) -> dict[str, float]:
    import pyogrio

    import geounet
    from geounet.evaluation import evaluate

    geounet.segment(scene, out, client="synchronous", **options)
    report = evaluate(out, scene.parent / "truth_mask.tif")
    return {"found": pyogrio.read_info(out, layer="buildings")["features"],
            "iou": report.score("buildings").iou, "f1": report.objects.f1,
            "roads": report.score("roads").iou}


def main(argv: list[str] | None = None) -> None:
    import pyogrio

    from geounet.synth import synthesize_scene

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="3,4,5", help="comma-separated synth seeds")
    parser.add_argument("--extent", type=float, default=300.0, help="scene side in metres")
    args = parser.parse_args(argv)
    print(f"`python benchmarks/bench_rescale.py {' '.join(argv or sys.argv[1:])}`\n")
    print("| seed | scene | --rescale | buildings found (truth) | building IoU | building "
          "object F1 | road IoU |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    rows: dict[tuple[int, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for seed in (int(s) for s in args.seeds.split(",")):
            synth = synthesize_scene(root / f"s{seed}", size=round(args.extent / 0.5),
                                     seed=seed)
            truth = pyogrio.read_info(synth.truth_path, layer="buildings")["features"]
            runs = [("uint8 (reference)", synth.scene_path, "none")]
            for k, sensor in enumerate(SENSORS):
                copy = sensor_copy(synth.scene_path, synth.scene_path.parent / f"{k}.tif",
                                   sensor, seed)
                runs += [(sensor, copy, mode) for mode in MODES]
            for i, (label, scene, mode) in enumerate(runs):
                options = {} if mode == "none" else {"rescale": mode}
                s = score(scene, root / f"{seed}-{i}.gpkg", **options)
                rows.setdefault((label, mode), []).append(s)
                print(f"| {seed} | {label} | {mode} | {s['found']} ({truth}) | {s['iou']:.3f} "
                      f"| {s['f1']:.3f} | {s['roads']:.3f} |", flush=True)
    print("\nMean over the seeds:\n")
    print("| scene | --rescale | buildings found | building IoU | building object F1 | "
          "road IoU |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (label, mode), scores in rows.items():
        mean = {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}
        print(f"| {label} | {mode} | {mean['found']:.1f} | {mean['iou']:.3f} | "
              f"{mean['f1']:.3f} | {mean['roads']:.3f} |")


if __name__ == "__main__":
    main()
