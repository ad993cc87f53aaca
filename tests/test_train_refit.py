"""--refit: after the run, retrain on every chip (train, val, buffer) for the selected steps."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from geounet.model import load_checkpoint, read_checkpoint
from geounet.synth import synthesize_scene
from geounet.training import TrainConfig, train
from geounet.training.chips import make_chips
from geounet.training.layout import open_dataset


@pytest.fixture(scope="module")
def chips(tmp_path_factory):
    root = tmp_path_factory.mktemp("refit")
    scene = synthesize_scene(root / "scene", size=256, seed=4)
    make_chips(scene.scene_path, scene.truth_path, root / "chips", chip_size=64,
               class_layers={"buildings": "buildings"}, split_block=2)
    return root / "chips"


def test_refit_trains_on_every_chip_and_writes_a_valid_checkpoint(chips, tmp_path, caplog):
    found = open_dataset(chips)
    n_val = sum(r.split == "val" for r in found.records)
    n_train = len(found.records) - n_val
    assert found.n_buffer > 0 and n_val > 0  # the test needs all three splits
    config = TrainConfig(depth=2, base_channels=4, batch_size=4, lr=3e-3, epochs=3,
                         max_minutes=None, select_from=0.0, refit=True)
    seen = []
    with caplog.at_level(logging.INFO, logger="geounet.training"):
        result = train(chips, tmp_path / "m.pt", config=config,
                       progress=lambda p: seen.append(p))
    info = result.refit
    total = n_train + n_val + found.n_buffer
    assert info["chips"] == total and info["splits"] == {
        "train": n_train, "val": n_val, "buffer": found.n_buffer}
    # the selected epoch's steps, rounded up to whole epochs over all chips
    selected_steps = result.best_epoch * math.ceil(n_train / 4)
    assert info["selected_steps"] == selected_steps
    assert info["epochs"] == math.ceil(selected_steps / math.ceil(total / 4))
    assert info["samples"] == info["epochs"] * total  # every chip, every refit epoch
    assert info["steps"] == info["epochs"] * math.ceil(total / 4)
    # the final model is the refit one, with the run's card; the selected one is kept
    payload = read_checkpoint(result.best_path)
    selected = read_checkpoint(result.selected_path)
    assert payload["extra"]["refit"]["chips"] == total
    assert payload["card"] == selected["card"]
    assert any(not torch.equal(payload["state_dict"][k], selected["state_dict"][k])
               for k in payload["state_dict"])
    model, card = load_checkpoint(result.best_path)
    assert card.pixel_size == pytest.approx(selected["card"]["pixel_size"])
    assert torch.isfinite(model(torch.zeros(1, 3, 92, 92))).all()
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"refit: retraining on all {total} chips") for m in messages)
    assert "refit on all" in result.summary()


def test_refit_is_off_by_default(chips, tmp_path):
    assert TrainConfig().refit is False
    result = train(chips, tmp_path / "m.pt", config=TrainConfig(
        depth=2, base_channels=4, batch_size=4, epochs=1, max_minutes=None))
    assert result.refit is None and result.selected_path is None
    assert "refit" not in read_checkpoint(result.best_path)["extra"]
