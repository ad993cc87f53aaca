"""Resolution-aware training: one training resolution for chips at several pixel sizes."""

from __future__ import annotations

import csv
import json
import logging

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geounet.model import read_checkpoint
from geounet.training import TrainConfig, train
from geounet.training.dataset import ChipDataset, SampleSpec, compute_stats
from geounet.training.layout import open_dataset
from geounet.training.resolution import choose_resolution

GROUND = 6.4  # metres per chip side
HOUSE = (1.6, 4.0)  # metres: a square building from 1.6 m to 4.0 m on both axes


def _write_chip(root, name, pixel, x0, georef=True):
    """A chip of GROUND metres at ``pixel`` m: a bright square building on dark ground."""
    size = int(round(GROUND / pixel))
    lo, hi = (int(round(v / pixel)) for v in HOUSE)
    mask = np.zeros((size, size), np.uint8)
    mask[lo:hi, lo:hi] = 1
    image = np.where(mask[None] == 1, 200, 40).astype(np.uint8).repeat(3, axis=0)
    profile = dict(driver="GTiff", width=size, height=size, dtype="uint8")
    if georef:
        profile.update(crs="EPSG:32631", transform=from_origin(500000 + x0, 5000000, pixel,
                                                               pixel))
    for sub, data in (("images", image), ("masks", mask[None])):
        (root / sub).mkdir(parents=True, exist_ok=True)
        with rasterio.open(root / sub / f"{name}.tif", "w", count=data.shape[0],
                           **profile) as dst:
            dst.write(data)


def _chips(root, chips, val=()):
    for name, pixel, x0, *rest in chips:
        _write_chip(root, name, pixel, x0, *rest)
    (root / "chips.json").write_text(json.dumps({"classes": ["background", "buildings"]}))
    with open(root / "split.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["name", "split"])
        for name, *_ in chips:
            writer.writerow([name, "val" if name in val else "train"])
    return root


@pytest.fixture()
def mixed(tmp_path):
    """Three chips at 0.1 m (one of them 0.105 m: within the tolerance), two at 0.2 m."""
    return _chips(tmp_path / "mixed", [("f1", 0.1, 0), ("f2", 0.1, 100), ("f3", 0.105, 200),
                                        ("c1", 0.2, 300), ("c2", 0.2, 400)], val=("c2",))


def test_rule_most_common_within_tolerance_ties_finest():
    r = choose_resolution([0.3, 0.15, 0.075, 0.076, 0.15])
    assert r.pixel_size == pytest.approx(0.0755) and r.chosen_by == "most common"
    assert r.found == ((pytest.approx(0.0755), 2), (0.15, 2), (0.3, 1))
    assert r.factors == (0.3 / 0.0755, 0.15 / 0.0755, 1.0, 1.0, 0.15 / 0.0755)
    assert choose_resolution([0.3, 0.3, 0.15]).pixel_size == 0.3  # most common beats finest
    given = choose_resolution([0.1, 0.2], pixel_size=0.2)
    assert given.factors == (0.5, 1.0) and given.chosen_by == "given"
    none = choose_resolution([None, None])
    assert none.pixel_size is None and none.factors == (1.0, 1.0)
    assert "without georeferencing" in none.describe()


def test_card_pixel_size_follows_the_rule_and_the_log_says_what_was_done(mixed, tmp_path,
                                                                         caplog):
    config = TrainConfig(depth=2, base_channels=4, batch_size=4, epochs=1, max_minutes=None,
                         ema=0.0)
    with caplog.at_level(logging.INFO, logger="geounet.training"):
        train(mixed, tmp_path / "m.pt", config=config)
    card = read_checkpoint(tmp_path / "m.pt")["card"]
    assert card["pixel_size"] == pytest.approx(0.1)
    line = next(r.getMessage() for r in caplog.records if "training at" in r.getMessage())
    assert line == ("chips at 0.1 m (3), 0.2 m (2): training at 0.1 m (most common); "
                    "2 chips resampled")


def test_a_coarse_chip_is_seen_at_the_card_scale(mixed):
    found = open_dataset(mixed)
    stats = compute_stats(found.records, 2)
    assert stats.pixel_size == pytest.approx(0.1)
    assert stats.max_size == 64  # the fine chips' side, not the resampled coarse one's
    spec = SampleSpec(64, 64, 0)
    val = ChipDataset([r for r in found.records if r.name == "c2"], spec, mean=(0,) * 3,
                      std=(1,) * 3, num_classes=2, train=False, pixel_size=stats.pixel_size)
    fine = ChipDataset([r for r in found.records if r.name == "f1"], spec, mean=(0,) * 3,
                       std=(1,) * 3, num_classes=2, train=False, pixel_size=stats.pixel_size)
    (_, coarse_target, _), (_, fine_target, _) = val[0], fine[0]
    assert len(val) == 1 and coarse_target.shape == fine_target.shape == (64, 64)
    # the 32 px chip became 64 px: its 12 px building is 24 px, as on the fine chip
    assert (coarse_target.numpy() == 1).sum() == (fine_target.numpy() == 1).sum() == 24 * 24
    assert np.array_equal(coarse_target.numpy(), fine_target.numpy())
    train_set = ChipDataset([r for r in found.records if r.name == "c1"], spec, mean=(0,) * 3,
                            std=(1,) * 3, num_classes=2, train=True, pixel_size=0.1)
    image, target, _ = train_set[0]
    assert image.shape == (3, 64, 64) and (target.numpy() == 1).sum() == 24 * 24
    # without the training resolution the chip is read as it is (32 px, padded with nodata)
    raw = ChipDataset([r for r in found.records if r.name == "c2"], spec, mean=(0,) * 3,
                      std=(1,) * 3, num_classes=2, train=False)
    assert (raw[0][1].numpy() == 1).sum() == 12 * 12


def test_a_resampled_chip_is_read_once_and_samples_do_not_change_it(mixed):
    found = open_dataset(mixed)
    spec = SampleSpec(64, 64, 0)
    val = ChipDataset([r for r in found.records if r.name == "c2"], spec, mean=(0,) * 3,
                      std=(1,) * 3, num_classes=2, train=False, pixel_size=0.1)
    first_image, first_target, _ = val[0]
    first_image.add_(100.0)  # a caller (or an augmentation) changing its sample in place
    again_image, again_target, _ = val[0]
    assert len(val.reader.chips) == 1  # resampled once, kept for the next samples
    assert np.array_equal(again_target.numpy(), first_target.numpy())
    assert float((first_image - again_image).min()) == pytest.approx(100.0)


def test_given_pixel_size_and_chips_without_georeferencing(tmp_path):
    root = _chips(tmp_path / "c", [("a", 0.1, 0), ("b", 0.2, 100), ("n", 0.1, 0, False)],
                  val=("b",))
    stats = compute_stats(open_dataset(root).records, 2, pixel_size=0.2)
    assert stats.pixel_size == 0.2 and stats.resolution.factors == (0.5, 1.0, 1.0)
    assert stats.max_size == 64  # the unreferenced chip is read as it is
    assert stats.resolution.describe() == (
        "chips at 0.1 m (1), 0.2 m (1): training at 0.2 m (given); 1 chips resampled; "
        "1 chips without georeferencing are trained as they are")
