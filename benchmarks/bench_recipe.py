"""Compare training recipes on the realistic proxy (issue 21) and, optionally, on real imagery.

Usage::

    PYTHONPATH=. python benchmarks/bench_recipe.py --out recipe-run --seeds 0,1,2 \\
        --train 60 --eval 12 --budget epochs:6,chip_size:128,max_minutes:none \\
        --recipe old= --recipe bw10=border_weight:10
    PYTHONPATH=. python benchmarks/bench_recipe.py --out recipe-run --seeds none \\
        --devset ../shared/devset --budget epochs:6,chip_size:128 --recipe old= --recipe bw10=border_weight:10

For each seed, ``benchmarks/proxy_data.py`` writes ``--train`` training chips (256 px, mixed
0.075/0.15/0.30 m, OSM-like label noise) and ``--eval`` evaluation chips of other scenes (exact
labels). Each recipe is ``NAME=key:value,key:value`` over :class:`geounet.training.TrainConfig`
fields (values parsed as int, float, true/false, none, ``a/b/c`` tuples, else text; ``NAME=``
alone is the defaults; ``as_is:true`` trains on a copy whose chips all claim the first
chip's pixel size, the resolution rule before issue 21: the old defaults are
``old=border_weight:0,precision:fp32,as_is:true``), with ``--budget`` (same syntax, no name) applied to every recipe
first: the reduced budget. Every field a future ``TrainConfig`` gains can be compared the same
way. Training is ``geounet.training.train`` on ``DATA/train``; each evaluation chip is then
predicted on its own (``geounet.predict``) and scored: building pixel IoU summed over all
chips, and object F1 at IoU 0.5 (``geounet.evaluation.objects.match_objects``, one to one;
proxy truth = the true building outlines, so touching roofs are separate objects; devset truth =
4-connected components of the label mask). A table goes to stdout and everything to
``OUT/results.json``.

``--devset PATH`` (the real-imagery development set, read only, never copied into the repo)
cuts chips with ``geounet.training.make_chips`` (= ``geounet chips``) into ``OUT/devset``:
training on Massachusetts 22978945_15 (1 m), Inria Austin (0.30 m) and Tanzania (0.0775 m),
evaluation on all chips of the other Massachusetts scene, 23429155_15 (1 m, its 0-255 uint16
values written as uint8 in the temp copy).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def parse_options(text: str) -> dict:
    """``key:value,key:value`` -> TrainConfig keyword arguments (checked against its fields)."""
    from geounet.training import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    out: dict = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, raw = item.partition(":")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields | {"as_is"}:
            raise SystemExit(f"recipe option {item!r}: expected key:value with key one of "
                             f"{sorted(fields)}")
        out[key] = _value(raw.strip())
    return out


def _value(raw: str):
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    if "/" in raw:
        return tuple(_value(part) for part in raw.split("/"))
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def _pairs(folder: Path) -> list[tuple[Path, Path]]:
    return [(img, img.with_name(img.name[:-4] + ".mask.tif"))
            for img in sorted(folder.glob("*.tif")) if not img.name.endswith(".mask.tif")]


def _components(mask: np.ndarray, transform) -> list:
    from rasterio.features import shapes
    from scipy.ndimage import label
    from shapely.geometry import shape

    if not mask.any():
        return []
    labels, _ = label(mask, structure=[[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    return [shape(g) for g, _ in shapes(labels.astype(np.int32), mask=labels > 0,
                                        connectivity=4, transform=transform)]


def score(model: Path, pairs: list[tuple[Path, Path]], scratch: Path,
          objects: dict[str, list[str]] | None, reuse: bool = False) -> dict:
    """Building pixel IoU (summed) and object F1 at IoU 0.5 over the evaluation chips: of
    every predicted 4-connected piece, and of the pieces of at least 4 m^2 (what
    ``geounet vectorize`` keeps by default, ``DEFAULT_MIN_AREA``)."""
    import rasterio
    from rasterio.warp import Resampling, reproject
    from shapely import wkt

    from geounet.evaluation.objects import match_objects
    from geounet.run.pipeline import predict
    from geounet.vectorization import DEFAULT_MIN_AREA

    min_area = DEFAULT_MIN_AREA["buildings"]
    tp4 = fp4 = fn4 = 0

    scratch.mkdir(parents=True, exist_ok=True)
    inter = union = tp = fp = fn = 0
    for image, mask_path in pairs:
        pred = scratch / image.name
        if not (reuse and pred.exists()):
            predict(image, pred, model=model, overwrite=True, client="synchronous")
        with rasterio.open(mask_path) as src:
            raw = src.read(1)
            transform, crs = src.transform, src.crs
        with rasterio.open(pred) as src:
            # predict warps a chip off the model's pixel size to it: back to the chip's grid
            cls = np.full(raw.shape, 255, np.uint8)
            reproject(src.read(1), cls, src_transform=src.transform, src_crs=src.crs,
                      dst_transform=transform, dst_crs=crs, resampling=Resampling.mode)
            got = cls == 1
        valid = raw != 255
        truth = (raw == 1) & valid
        got &= valid
        inter += int(np.sum(got & truth))
        union += int(np.sum(got | truth))
        stem = image.name[:-4]
        true_objs = ([wkt.loads(t) for t in objects[stem]] if objects is not None
                     else _components(truth, transform))
        pieces = _components(got, transform)
        res = match_objects(pieces, true_objs, 0.5)
        tp, fp, fn = tp + res.tp, fp + res.fp, fn + res.fn
        res = match_objects([q for q in pieces if q.area >= min_area], true_objs, 0.5)
        tp4, fp4, fn4 = tp4 + res.tp, fp4 + res.fp, fn4 + res.fn
    return {"pixel_iou": round(inter / max(union, 1), 4),
            "object_f1": round(2 * tp / max(2 * tp + fp + fn, 1), 4),
            "objects": {"tp": tp, "fp": fp, "fn": fn},
            "object_f1_4m2": round(2 * tp4 / max(2 * tp4 + fp4 + fn4, 1), 4),
            "objects_4m2": {"tp": tp4, "fp": fp4, "fn": fn4}, "chips": len(pairs)}


def as_is_copy(train_dir: Path, out: Path) -> Path:
    """A copy of ``train_dir`` whose chips all claim the first chip's pixel size (origins kept).

    Training on it reproduces geounet's rule before issue 21 item 1: the card took the first
    chip's pixel size and every chip was trained as it is, whatever its ground resolution.
    """
    import rasterio
    from affine import Affine

    from geounet.training.resolution import chip_pixel_size

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(train_dir, out)
    images = sorted(p for p in out.rglob("*.tif") if not p.name.endswith(".mask.tif")
                    and p.parent.name != "masks")
    first = None
    for img in images:
        masks = [img.with_name(img.name[:-4] + ".mask.tif"), img.parent.parent / "masks" / img.name]
        with rasterio.open(img, "r+") as src:
            size = chip_pixel_size(src)
            if size is None:
                continue
            first = first or size
            t = src.transform
            f = first / size
            new = Affine(t.a * f, t.b * f, t.c, t.d * f, t.e * f, t.f)
            src.transform = new
        for mask in masks:
            if mask.exists():
                with rasterio.open(mask, "r+") as dst:
                    dst.transform = new
    return out


def run_recipe(name: str, options: dict, budget: dict, train_dir: Path, pairs, objects,
               out: Path) -> dict:
    from geounet.training import TrainConfig, train

    options = dict(options)
    if options.pop("as_is", False):
        train_dir = as_is_copy(train_dir, out / "train-as-is")
    config = TrainConfig(**{**budget, **options})
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = train(train_dir, out / "model.pt", config=config, overwrite=True)
    minutes = (time.perf_counter() - start) / 60
    row = {"recipe": name, "options": options, "budget": budget,
           "epochs": len(result.history), "best_epoch": result.best_epoch,
           "train_minutes": round(minutes, 2),
           "val_iou": round(float(result.best.mean_iou), 4),
           "epoch_seconds": [round(r.seconds, 1) for r in result.history]}
    row.update(score(out / "model.pt", pairs, out / "pred", objects))
    return row


def devset_chips(devset: Path, out: Path) -> tuple[Path, list, None]:
    """Chips of the real development set under ``out``: train/ + val/ for training, eval/."""
    import geopandas as gpd
    import rasterio
    from rasterio.features import shapes
    from shapely.geometry import shape

    from geounet.training import make_chips

    if out.exists():
        shutil.rmtree(out)
    work = out / "work"
    work.mkdir(parents=True)
    # Austin: the label is a 0/255 mask -> polygons
    aus_img = devset / "deeposlandia_inria_austin/images/aerial_sample.tif"
    with rasterio.open(devset / "deeposlandia_inria_austin/labels/aerial_sample.tif") as src:
        m = src.read(1) > 0
        geoms = [shape(g) for g, v in shapes(m.astype(np.uint8), mask=m, transform=src.transform)]
        gpd.GeoDataFrame(geometry=geoms, crs=src.crs).to_file(work / "austin.gpkg",
                                                              layer="buildings")
    # the uint16 Massachusetts scene (values 0-255) as uint8
    ma2 = devset / "gdl_massachusetts/images/23429155_15.tif"
    with rasterio.open(ma2) as src:
        data = src.read()
        profile = src.profile
    profile.update(dtype="uint8")
    with rasterio.open(work / "ma2.tif", "w", **profile) as dst:
        dst.write(np.clip(data, 0, 255).astype(np.uint8))
    ma_labels = devset / "gdl_massachusetts/labels/massachusetts_buildings.gpkg"
    sources = [
        ("a_ma1", devset / "gdl_massachusetts/images/22978945_15.tif", ma_labels,
         "massachusetts_buildings"),
        ("b_austin", aus_img, work / "austin.gpkg", "buildings"),
        ("c_tanzania", devset / "deeposlandia_tanzania/images/tanzania_sample.tif",
         devset / "deeposlandia_tanzania/labels/tanzania_sample.geojson", "tanzania_sample"),
    ]
    for split in ("train", "val", "eval"):
        for sub in ("images", "masks"):
            (out / split / sub).mkdir(parents=True)
    for prefix, scene, labels, layer in sources:
        name = work / prefix
        scene_link = work / f"{prefix}.tif"
        scene_link.symlink_to(scene.resolve())
        make_chips(scene_link, labels, name, chip_size=256, class_layers={"buildings": layer},
                   split_block=2, val_fraction=0.25, seed=0)
        import csv

        for row in csv.DictReader(open(name / "split.csv")):
            if row["split"] == "buffer":
                continue
            for sub in ("images", "masks"):
                shutil.copy(name / sub / f"{row['name']}.tif",
                            out / row["split"] / sub / f"{row['name']}.tif")
    make_chips(work / "ma2.tif", ma_labels, work / "ma2", chip_size=256,
               class_layers={"buildings": "massachusetts_buildings"}, split_block=2, seed=0)
    for img in sorted((work / "ma2" / "images").glob("*.tif")):
        shutil.copy(img, out / "eval" / img.name)
        shutil.copy(work / "ma2" / "masks" / img.name, out / "eval" / (img.name[:-4] + ".mask.tif"))
    return out, _pairs(out / "eval"), None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seeds", default="0,1,2", help="proxy seeds, or 'none'")
    parser.add_argument("--train", type=int, default=120)
    parser.add_argument("--eval", type=int, default=30)
    parser.add_argument("--budget", default="epochs:3",
                        help="TrainConfig options applied to every recipe (the reduced budget)")
    parser.add_argument("--recipe", action="append", default=[],
                        help="NAME=key:value,... (repeatable); default: old= and bw10")
    parser.add_argument("--devset", help="real development set folder (read only)")
    parser.add_argument("--rescore", action="store_true",
                        help="recompute the scores of finished runs from their saved predictions")
    args = parser.parse_args(argv)
    from proxy_data import make_proxy

    recipes = args.recipe or ["old=", "bw10=border_weight:10"]
    parsed = [(r.partition("=")[0], parse_options(r.partition("=")[2])) for r in recipes]
    budget = parse_options(args.budget)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    rows: list[dict] = json.loads(results_path.read_text()) if results_path.exists() else []
    done = {(r["data"], r["recipe"]) for r in rows}
    datasets = []
    if args.seeds != "none":
        for seed in (int(s) for s in args.seeds.split(",")):
            datasets.append((f"proxy-{seed}", seed))
    if args.devset:
        datasets.append(("devset", None))
    for data_name, seed in datasets:
        data = out / data_name
        if seed is not None:
            if not (data / "proxy.json").exists():
                make_proxy(data, seed, args.train, args.eval)
            train_dir, pairs = data / "train", _pairs(data / "eval")
            objects = json.loads((data / "eval" / "objects.json").read_text())
        else:
            if not (data / "eval").exists():
                devset_chips(Path(args.devset), data)
            train_dir, pairs, objects = data, _pairs(data / "eval"), None
        for name, options in parsed:
            if (data_name, name) in done:
                if args.rescore:
                    for row in rows:
                        if (row["data"], row["recipe"]) == (data_name, name):
                            run = out / "runs" / f"{data_name}-{name}"
                            row.update(score(run / "model.pt", pairs, run / "pred", objects,
                                             reuse=True))
                    results_path.write_text(json.dumps(rows, indent=1) + "\n")
                continue
            row = run_recipe(name, options, budget, train_dir, pairs, objects,
                             out / "runs" / f"{data_name}-{name}")
            row["data"] = data_name
            rows.append(row)
            results_path.write_text(json.dumps(rows, indent=1) + "\n")
            print(json.dumps(row), flush=True)
    print(f"\n{'data':<10} {'recipe':<10} {'pixel IoU':>9} {'object F1':>9} {'F1 >=4m2':>9} "
          f"{'minutes':>8} {'epochs':>6}")
    for r in rows:
        print(f"{r['data']:<10} {r['recipe']:<10} {r['pixel_iou']:>9.3f} {r['object_f1']:>9.3f} "
              f"{r.get('object_f1_4m2', float('nan')):>9.3f} {r['train_minutes']:>8.1f} "
              f"{r['epochs']:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
