"""The reproducible recipe of geounet's built-in model (run by `make model`).

It synthesizes training scenes (`geounet synth`, seeds listed in RECIPE), cuts them into
labelled chips (`geounet chips`), trains a small valid-padding U-Net (`geounet train`) and
saves the best checkpoint, without its optimizer state, to geounet/weights/builtin.pt with a
model card that says what it is: a model of geounet's synthetic scenes, for demos and tests.

    python examples/make_model.py                    # the shipped recipe (~20-25 min, 2 cores)
    python examples/make_model.py --work build/model --out geounet/weights/builtin.pt
    python examples/make_model.py --card-only        # refresh the card's training statistics

``--card-only`` rebuilds the recipe's chips, recomputes the card's training statistics
(``geounet.training.dataset.compute_stats``, as training does) and rewrites the card of the
existing checkpoint with the same weights; it checks that the mean and std it finds are the
card's (the same data), so only what older cards lack is added (the per-band percentiles of
``--rescale match``).

The scene seeds used here must never be used to score the model: the demo and the
documentation score it on seed 7, which it never saw.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Everything that shapes the model. Changing any value changes the shipped weights.
RECIPE: dict = {
    "seeds": [100, 101, 102, 103],   # training scenes (never the evaluation seed 7)
    "scene_size": 2048,              # px per side, 0.5 m, EPSG:32633, 3 bands uint8
    "chip_size": 256,
    "split_block": 2,                # 2x2 chip blocks go wholly to train or val
    "val_fraction": 0.15,
    "train": {
        "depth": 3,
        "base_channels": 16,
        "padding": "valid",
        "batch_norm": False,
        "epochs": 30,
        "batch_size": 4,
        "lr": 1e-3,
        "class_weights": (1.0, 3.0, 2.0),  # buildings are ~7% of pixels, roads ~10%
        "dice_weight": 1.0,
        "patience": None,
        "precision": "fp32",               # the CPU path; bf16 training is ~10x slower here
        "device": "cpu",
        "seed": 0,
        # the recipe before issue 8 (the TrainConfig defaults of then), pinned so that
        # `make model` still reproduces the shipped weights under today's defaults
        "weight_decay": 0.0, "schedule": "plateau", "warmup": 0.0, "ema": 0.0,
        "monitor": "loss", "max_minutes": None, "brightness": 0.1, "contrast": 0.1,
        "gamma": 0.0, "hue": 0.0, "scale": 0.0, "dice_foreground": False,
    },
}

DESCRIPTION = (
    "geounet built-in model: trained ONLY on geounet's synthetic scenes "
    "(geounet synth seeds {seeds}, {size} px, 0.5 m, RGB uint8), for demos and tests only. "
    "It has never seen real imagery: real imagery needs a model trained on real labels "
    "(geounet chips + geounet train). Recipe: python examples/make_model.py (make model)."
)


def _merge_chips(chip_dirs: dict[int, Path], merged: Path) -> dict[str, int]:
    """Link the chips of every scene into ``merged/{train,val}/{images,masks}`` by split."""
    import csv

    counts = {"train": 0, "val": 0}
    for seed, chip_dir in chip_dirs.items():
        with open(chip_dir / "split.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        for row in rows:
            split = row["split"]
            if split not in counts:  # "buffer": training-side chips touching a val chip
                continue
            for kind in ("images", "masks"):
                target = merged / split / kind
                target.mkdir(parents=True, exist_ok=True)
                src = chip_dir / kind / f"{row['name']}.tif"
                dst = target / f"s{seed}_{row['name']}.tif"
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copy2(src, dst)
            counts[split] += 1
    return counts


def _chips(recipe: dict, work: Path) -> tuple[Path, dict[str, int]]:
    """The recipe's scenes, synthesized and cut into chips merged by split under ``work``."""
    from geounet.synth import synthesize_scene
    from geounet.training import make_chips

    log = logging.getLogger("make_model")
    work.mkdir(parents=True, exist_ok=True)
    chip_dirs: dict[int, Path] = {}
    for seed in recipe["seeds"]:
        scene_dir = work / f"scene-{seed}"
        synth = synthesize_scene(scene_dir, size=recipe["scene_size"], seed=seed, overwrite=True)
        chip_dirs[seed] = work / f"chips-{seed}"
        make_chips(synth.scene_path, synth.truth_path, chip_dirs[seed],
                   chip_size=recipe["chip_size"], split_block=recipe["split_block"],
                   val_fraction=recipe["val_fraction"], seed=seed, overwrite=True)
        log.info("scene seed %d synthesized and chipped", seed)
    merged = work / "chips"
    if merged.exists():
        shutil.rmtree(merged)
    return merged, _merge_chips(chip_dirs, merged)


def refresh_card(work: Path, out: Path) -> dict:
    """Rewrite the card of checkpoint ``out`` with the training statistics of the recipe's
    chips (same weights, same ``extra``); the mean and std must be the card's."""
    import dataclasses

    import numpy as np

    from geounet.config import PERCENTILE_LEVELS
    from geounet.model import load_checkpoint, read_checkpoint, save_checkpoint
    from geounet.training.dataset import compute_stats
    from geounet.training.layout import open_dataset

    recipe = json.loads(json.dumps(RECIPE))
    merged, counts = _chips(recipe, work)
    model, card = load_checkpoint(out)
    found = open_dataset(merged, val_fraction=recipe["val_fraction"],
                         seed=recipe["train"]["seed"])
    stats = compute_stats(list(found.records), len(card.classes))
    # the synthesizer and the chip split (buffer chips) changed since the shipped weights were
    # trained: the same kind of data, not the same bytes; refuse anything further off
    if not (np.allclose(stats.mean, card.mean, rtol=0.06) and
            np.allclose(stats.std, card.std, rtol=0.06)):
        raise RuntimeError(f"the chips' mean/std {stats.mean}/{stats.std} are not near the "
                           f"card's {card.mean}/{card.std}: not the data the model was "
                           "trained on")
    card = dataclasses.replace(card, percentile_levels=PERCENTILE_LEVELS,
                               percentiles=stats.percentiles)
    extra = read_checkpoint(out)["extra"]
    note = {"percentiles_from": "the recipe's train chips as `make_model.py --card-only` cuts "
                                "them (the card's mean/std are from the original run's chips)",
            "chips": counts, "mean": list(stats.mean), "std": list(stats.std)}
    extra["builtin"] = {**extra["builtin"], "card_refresh": note}
    save_checkpoint(out, model, card, extra=extra, overwrite=True)
    return {**note, "percentile_levels": list(PERCENTILE_LEVELS),
            "percentiles": [list(p) for p in stats.percentiles]}


def make_model(work: Path, out: Path, *, epochs: int | None = None) -> dict:
    """Run the recipe in ``work`` and write the packaged checkpoint ``out``."""
    import torch

    from geounet.model import load_checkpoint, read_checkpoint, save_checkpoint
    from geounet.training import TrainConfig, train

    log = logging.getLogger("make_model")
    recipe = json.loads(json.dumps(RECIPE))  # a copy
    if epochs is not None:
        recipe["train"]["epochs"] = epochs
    t0 = time.perf_counter()
    merged, counts = _chips(recipe, work)
    t_data = time.perf_counter() - t0
    log.info("chips: %s (%.0f s)", counts, t_data)

    torch.manual_seed(recipe["train"]["seed"])
    description = DESCRIPTION.format(seeds=recipe["seeds"], size=recipe["scene_size"])
    train_kwargs = dict(recipe["train"])
    train_kwargs["class_weights"] = tuple(train_kwargs["class_weights"])
    config = TrainConfig(**train_kwargs, description=description)

    t1 = time.perf_counter()
    result = train(merged, work / "model.pt", config=config, overwrite=True)
    t_train = time.perf_counter() - t1
    best = next((r for r in result.history if r.epoch == result.best_epoch), None)
    chips_per_s = [round(r.chips_per_s, 2) for r in result.history]

    # Re-save the best weights without the optimizer state: a small file for the package.
    model, card = load_checkpoint(result.best_path)
    raw = read_checkpoint(result.best_path)
    if card.description != description:
        raise RuntimeError("the trained model card lost its description")
    info = {
        "recipe": recipe,
        "command": "python examples/make_model.py",
        "chips": counts,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "train_seconds": round(t_train, 1),
        "data_seconds": round(t_data, 1),
        "chips_per_s": chips_per_s,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "val": None if best is None else {
            "loss": best.val_loss, "iou": dict(zip(result.classes, best.iou)),
        },
    }
    del raw
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, model, card, extra={"builtin": json.loads(json.dumps(info))},
                    overwrite=True)
    (work / "builtin.json").write_text(json.dumps(info, indent=2))
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "model",
                        help="scratch directory for scenes, chips and training logs")
    parser.add_argument("--out", type=Path, default=ROOT / "geounet" / "weights" / "builtin.pt")
    parser.add_argument("--epochs", type=int, default=None,
                        help="override the recipe's epochs (for a quick check only)")
    parser.add_argument("--card-only", action="store_true",
                        help="rewrite the card of --out with the chips' training statistics "
                        "(same weights), no training")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stdout)
    if args.card_only:
        print(json.dumps(refresh_card(args.work, args.out), indent=2))
        print(f"rewrote the card of {args.out}")
        return 0
    info = make_model(args.work, args.out, epochs=args.epochs)
    print(json.dumps(info, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
