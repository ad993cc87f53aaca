"""Training-recipe benchmark: building IoU and object F1 of a from-scratch U-Net on hard,
varied synthetic chips, for the recipe before (``--recipe old``) and after (``new``, today's
``TrainConfig`` defaults), plus each epoch's CPU time.

Usage::

    python benchmarks/bench_train.py --recipe new --epochs 5  --out bench-new-5
    python benchmarks/bench_train.py --recipe old --epochs 15 --out bench-old-15
    python benchmarks/bench_train.py --recipe new --set ema=0 --epochs 5 --out no-ema

Data (built once per ``--data`` folder, then reused):

- training: 100 chips of 256 x 256 cut from ``geounet synth`` scenes of seeds 1-4, each
  scene with its own pixel size (0.15-0.35 m, so buildings span 25-150 px), its own
  "season" (per-band gain 0.75-1.25, offset +-20, gamma 0.75-1.33 on the 8-bit values) and
  label noise (each chip's building mask dilated or eroded by one pixel at random, or kept);
- validation: 24 chips from seeds 101-102, with looks drawn the same way, clean masks.

Masks are building-only (0 background, 1 buildings; roads are background), like published
building datasets. Training sees only ``chips/train`` and holds out its own validation chips with geounet's
spatial split (as a user with one labelled folder would); that internal validation picks the
best epoch. After training, the best checkpoint predicts every separate validation chip (whole
chip, mirrored context) and :func:`geounet.evaluate` scores it against the clean mask: pixel
IoU of buildings over all chips (summed counts) and building object F1 (SpaceNet rule).
Prints one JSON line; ``--json`` writes it too. Figures are CPU seconds of this process
(``time.process_time``), not wall time: on a quiet 2-core machine wall time is about CPU
seconds / 2.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OLD = dict(batch_norm=False, lr=1e-3, weight_decay=0.0, schedule="plateau", warmup=0.0,
           ema=0.0, monitor="loss", patience=10, max_minutes=None, brightness=0.1,
           contrast=0.1, gamma=0.0, hue=0.0, scale=0.0, dice_foreground=False)
"""The recipe before issue 8 (geounet 0.x defaults), in today's TrainConfig terms."""

TRAIN_SEEDS = (1, 2, 3, 4)
VAL_SEEDS = (101, 102)
PIXEL_SIZES = (0.15, 0.2, 0.3, 0.35)


def _look(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    gain = rng.uniform(0.75, 1.25, size=(image.shape[0], 1, 1))
    offset = rng.uniform(-20, 20, size=(image.shape[0], 1, 1))
    gamma = float(np.exp(rng.uniform(np.log(0.75), np.log(1.33))))
    out = 255.0 * (np.clip(image * gain + offset, 0, 255) / 255.0) ** gamma
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def build_data(root: Path, n_train: int = 100, n_val: int = 24) -> Path:
    """Write ``root/chips/{train,val}/{images,masks}`` and ``chips.json``; return the chips."""
    import rasterio
    from scipy.ndimage import binary_dilation, binary_erosion

    from geounet.synth import synthesize_scene
    from geounet.training.chips import make_chips

    chips = root / "chips"
    if (chips / "chips.json").exists():
        return chips
    work = root / "work"
    for split, seeds, wanted in (("train", TRAIN_SEEDS, n_train), ("val", VAL_SEEDS, n_val)):
        per_scene = -(-wanted // len(seeds))
        side = 256 * int(np.ceil(np.sqrt(per_scene)))
        written = 0
        for k, seed in enumerate(seeds):
            rng = np.random.default_rng(seed)
            pixel = PIXEL_SIZES[(k + (1 if split == "val" else 0)) % len(PIXEL_SIZES)]
            scene = synthesize_scene(work / f"s{seed}", size=side, seed=seed, pixel_size=pixel,
                                     overwrite=True)
            cut = work / f"c{seed}"
            make_chips(scene.scene_path, scene.truth_path, cut, chip_size=256,
                       class_layers={"buildings": "buildings"}, val_fraction=0.0,
                       overwrite=True)
            (chips / split / "images").mkdir(parents=True, exist_ok=True)
            (chips / split / "masks").mkdir(parents=True, exist_ok=True)
            for image_path in sorted((cut / "images").glob("*.tif"))[:per_scene]:
                if written >= wanted:
                    break
                name = f"s{seed}_{image_path.stem}"
                with rasterio.open(image_path) as src:
                    profile, pixels = src.profile, src.read()
                with rasterio.open(cut / "masks" / image_path.name) as src:
                    mprofile, mask = src.profile, src.read(1)
                if pixels.shape[1:] != (256, 256):
                    continue
                pixels = _look(rng, pixels.astype(np.float64))
                if split == "train":
                    noise = rng.integers(3)
                    body = mask == 1
                    if noise == 1:
                        body = binary_dilation(body)
                    elif noise == 2:
                        body = binary_erosion(body)
                    mask = np.where(mask == 255, 255, body.astype(np.uint8))
                with rasterio.open(chips / split / "images" / f"{name}.tif", "w",
                                   **profile) as dst:
                    dst.write(pixels)
                with rasterio.open(chips / split / "masks" / f"{name}.tif", "w",
                                   **mprofile) as dst:
                    dst.write(mask, 1)
                written += 1
        if written < wanted:
            raise RuntimeError(f"only {written} {split} chips of 256 px; enlarge the scenes")
    (chips / "chips.json").write_text(json.dumps({"classes": ["background", "buildings"]}))
    shutil.rmtree(work)
    return chips


def score(model_path: Path, chips: Path, scratch: Path) -> dict[str, float]:
    """Building pixel IoU (summed counts) and object F1 of ``model_path`` on the val chips."""
    import rasterio

    from geounet.engine.inference import ModelRunner, predict_array
    from geounet.evaluation import evaluate
    from geounet.model import load_checkpoint

    model, card = load_checkpoint(model_path)
    runner = ModelRunner(model, card, device="cpu", precision="fp32")
    tp = fp = fn = otp = ofp = ofn = 0
    for image_path in sorted((chips / "val" / "images").glob("*.tif")):
        with rasterio.open(image_path) as src:
            pixels, profile = src.read(), src.profile
        pred = predict_array(pixels, runner).argmax(0).astype(np.uint8)
        out = scratch / image_path.name
        profile.update(count=1, dtype="uint8", nodata=255)
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(pred, 1)
        report = evaluate(out, chips / "val" / "masks" / image_path.name,
                          classes=("background", "buildings"))
        b = report.pixel[1]
        tp, fp, fn = tp + b.tp, fp + b.fp, fn + b.fn
        otp, ofp, ofn = (otp + report.objects.tp, ofp + report.objects.fp,
                         ofn + report.objects.fn)
    iou = tp / max(tp + fp + fn, 1)
    f1 = 2 * otp / max(2 * otp + ofp + ofn, 1)
    return {"building_iou": round(iou, 4), "object_f1": round(f1, 4),
            "objects_tp_fp_fn": [otp, ofp, ofn]}


def main(argv: list[str] | None = None) -> int:
    import torch

    from geounet.training import TrainConfig, train

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", choices=("old", "new"), default="new")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs (default: the recipe's own)")
    parser.add_argument("--set", action="append", default=[],
                        help="override a TrainConfig field, e.g. --set ema=0 (repeatable)")
    parser.add_argument("--data", default=None, help="chip folder cache (default: temporary)")
    parser.add_argument("--out", default="bench-train", help="run folder (model, log, curves)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data_root = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="bench-train-"))
    cpu0 = time.process_time()
    chips = build_data(data_root)
    data_cpu = time.process_time() - cpu0
    settings: dict[str, object] = dict(OLD) if args.recipe == "old" else {}
    for item in args.set:
        key, value = item.split("=", 1)
        settings[key] = json.loads(value) if value not in ("None",) else None
    if args.epochs:
        settings["epochs"] = args.epochs
    settings["max_minutes"] = None  # CPU-time figures: no wall-clock budget in the benchmark
    config = TrainConfig(**settings)  # type: ignore[arg-type]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    epoch_cpu: list[float] = []
    start = time.process_time()

    def progress(event: object) -> None:
        if getattr(event, "record", None) is not None:
            epoch_cpu.append(round(time.process_time() - start, 1))

    from geounet.training.layout import DatasetConfig

    # Like a user with one labelled folder: train on chips/train with geounet's own spatial
    # validation split (it picks the best epoch), score on chips/val (other scenes, unseen).
    result = train(chips / "train", out / "model.pt", config=config, overwrite=True,
                   progress=progress,
                   dataset=DatasetConfig(classes=("background", "buildings")))
    train_cpu = time.process_time() - start
    scratch = Path(tempfile.mkdtemp(prefix="bench-score-"))
    scores = score(result.best_path, chips, scratch)
    shutil.rmtree(scratch)
    late = [h.iou[1] for h in result.history[-5:]]
    row = {
        "recipe": args.recipe, "set": args.set, "epochs": config.epochs,
        "train_chips": len(list((chips / "train" / "images").glob("*.tif"))),
        "val_chips": len(list((chips / "val" / "images").glob("*.tif"))),
        **scores, "best_epoch": result.best_epoch,
        "internal_val_iou": [round(h.iou[1], 4) for h in result.history],
        "max_late_swing": round(max((abs(a - b) for a, b in zip(late, late[1:])),
                                    default=0.0), 4),
        "cpu_s_train": round(train_cpu, 1), "cpu_s_per_epoch_cumulative": epoch_cpu,
        "cpu_s_data": round(data_cpu, 1), "threads": args.threads,
    }
    line = json.dumps(row)
    print(line)
    if args.json:
        Path(args.json).write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
