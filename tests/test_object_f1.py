"""Building object F1 at IoU 0.5 next to pixel IoU in the training log and report."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from affine import Affine

from geounet.evaluation import match_objects
from geounet.model import load_checkpoint
from geounet.synth import synthesize_scene
from geounet.training import TrainConfig, train
from geounet.training.chips import make_chips
from geounet.training.dataset import ChipDataset
from geounet.training.layout import open_dataset
from geounet.training.metrics import ObjectCounter, object_counts
from geounet.training.prepare import sample_spec


def _constructed():
    """Four true buildings; predictions: an exact hit, an offset one (IoU 0.4, a miss), two
    touching buildings predicted as one blob (IoU 0.5 with the larger: a hit), one false
    positive."""
    truth = np.zeros((40, 40), bool)
    pred = np.zeros((40, 40), bool)
    truth[2:8, 2:8] = pred[2:8, 2:8] = True  # exact
    truth[2:12, 20:25] = True  # 50 px
    pred[2:12, 22:27] = True  # 30 px overlap, IoU 30 / 70 = 0.43
    truth[20:30, 2:8] = True  # 60 px  } a pair of buildings
    truth[20:30, 9:11] = True  # 20 px  } a one-pixel gap keeps them apart
    pred[20:30, 2:11] = True  # 90 px blob: IoU 60/90 with the first, 20/90 with the second
    pred[34:38, 34:38] = True  # false positive
    return pred, truth


def test_object_counts_on_a_constructed_case():
    pred, truth = _constructed()
    tp, fp, fn = object_counts(pred, truth)
    # hits: exact and the blob with the 60 px building; misses: offset, small neighbour
    assert (tp, fp, fn) == (2, 2, 2)
    counter = ObjectCounter(1)
    counter.update(pred.astype(np.uint8), truth.astype(np.uint8))
    assert counter.f1 == pytest.approx(0.5)
    # the polygon matcher of geounet evaluate agrees on the traced outlines
    from rasterio.features import shapes
    from shapely.geometry import shape

    def polygons(mask):
        return [shape(g) for g, v in shapes(mask.astype(np.uint8), mask=mask, connectivity=4,
                                            transform=Affine.identity())]

    scores = match_objects(polygons(pred), polygons(truth))
    assert (scores.tp, scores.fp, scores.fn) == (tp, fp, fn)
    # nodata truth hides predictions there: the false positive goes away
    labels = truth.astype(np.uint8)
    labels[30:, 30:] = 255
    hidden = ObjectCounter(1)
    hidden.update(pred.astype(np.uint8), labels)
    assert (hidden.tp, hidden.fp, hidden.fn) == (2, 1, 2)
    assert math.isnan(ObjectCounter(1).f1)


@pytest.fixture(scope="module")
def building_chips(tmp_path_factory):
    root = tmp_path_factory.mktemp("objects")
    scene = synthesize_scene(root / "scene", size=256, seed=5)
    make_chips(scene.scene_path, scene.truth_path, root / "chips", chip_size=64,
               class_layers={"buildings": "buildings"}, split_block=2)
    return root / "chips"


def test_epoch_record_and_log_carry_the_building_object_f1(building_chips, tmp_path):
    config = TrainConfig(depth=2, base_channels=4, batch_size=4, lr=3e-3, epochs=3, ema=0.0,
                         max_minutes=None, select_from=0.0)
    result = train(building_chips, tmp_path / "m.pt", config=config)
    with open(result.log_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["object_f1_buildings"]) for r in rows] == pytest.approx(
        [h.object_f1 for h in result.history], nan_ok=True)
    last = result.history[-1]
    assert 0.0 <= last.object_f1 <= 1.0
    assert f"object F1 buildings {result.best.object_f1:.3f}" in result.summary()
    # the last epoch's figure is the object F1 of the last weights on the validation windows
    model, card = load_checkpoint(result.last_path)
    found = open_dataset(building_chips)
    spec = sample_spec(card.architecture, 64, None)
    val = ChipDataset([r for r in found.records if r.split == "val"], spec, mean=card.mean,
                      std=card.std, num_classes=2, train=False)
    counter = ObjectCounter(1)
    with torch.no_grad():
        for image, target, _ in val:
            pred = model(image[None]).argmax(1)[0].numpy().astype(np.uint8)
            counter.update(pred, target.clamp(max=255).numpy().astype(np.uint8))
    assert counter.tp + counter.fn > 0
    assert counter.f1 == pytest.approx(last.object_f1, nan_ok=True)
