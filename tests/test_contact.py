"""The boundary/contact classes for touching buildings (``TrainConfig.contact_class``, issue
21 item 2): the labels they are trained on, the card that records them, and prediction that
folds them back so touching buildings come out as separate objects in one buildings layer."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from shapely.geometry import box

from geounet.errors import CheckpointError, InputError
from geounet.model import ModelCard, UNetConfig, read_checkpoint, save_checkpoint
from geounet.model.registry import build_model
from geounet.synth import synthesize_scene
from geounet.training import TrainConfig, train
from geounet.training.chips import make_chips
from geounet.training.contact import BOUNDARY_PX, CONTACT_PX, multimask
from geounet.training.dataset import ChipDataset, SampleSpec
from geounet.training.layout import open_dataset

INTERIOR, BOUNDARY, CONTACT = 1, 2, 3
CRS = "EPSG:32633"


def _two_squares(gap: int) -> np.ndarray:
    """Two 12 x 12 px buildings side by side, ``gap`` px apart (0: touching, one component)."""
    mask = np.zeros((20, 34), np.uint8)
    mask[4:16, 4:16] = 1
    mask[4:16, 16 + gap:28 + gap] = 1
    return mask


def test_a_gap_between_buildings_is_contact_and_their_rims_are_boundary():
    target = multimask(_two_squares(2), 1, BOUNDARY, CONTACT)
    assert (target[4:16, 16:18] == CONTACT).all()  # the whole 2 px gap between them
    assert not (target[_two_squares(2) == 1] == CONTACT).any()  # no wall: they do not touch
    left = target[4:16, 4:16]
    rim = np.ones((12, 12), bool)
    rim[BOUNDARY_PX:-BOUNDARY_PX, BOUNDARY_PX:-BOUNDARY_PX] = False
    assert (left[rim] == BOUNDARY).all() and (left[~rim] == INTERIOR).all()
    # background away from any two buildings stays background; nodata stays nodata
    assert (target[:, :2] == 0).all() and target[0, 0] == 0
    masked = _two_squares(2)
    masked[0, :] = 255
    assert (multimask(masked, 1, BOUNDARY, CONTACT)[0] == 255).all()
    # a gap wider than twice the contact distance leaves background between
    wide = multimask(_two_squares(2 * CONTACT_PX + 2), 1, BOUNDARY, CONTACT)
    assert (wide[4:16, 16 + CONTACT_PX] == CONTACT).sum() == 0
    assert (wide[4:16, 16 + CONTACT_PX] == 0).all()


def test_touching_buildings_in_a_raster_mask_are_one_building():
    """A raster mask cannot tell touching buildings apart: one component, no contact."""
    target = multimask(_two_squares(0), 1, BOUNDARY, CONTACT)
    assert not (target == CONTACT).any()
    assert (target[6:14, 15:17] == INTERIOR).all()  # the shared edge is inside one building


def _vector_chip(tmp_path, squares) -> list:
    """A 40 x 40 px chip (0.5 m) with per-chip GeoJSON labels of the given pixel boxes."""
    transform = from_origin(500000.0, 4000020.0, 0.5, 0.5)
    image = np.random.default_rng(0).integers(0, 255, (3, 40, 40), dtype=np.uint8)
    with rasterio.open(tmp_path / "a.tif", "w", driver="GTiff", width=40, height=40, count=3,
                       dtype="uint8", crs=CRS, transform=transform) as dst:
        dst.write(image)
    geoms = [box(*(transform * (c0, r1)), *(transform * (c1, r0))) for r0, c0, r1, c1 in squares]
    gpd.GeoDataFrame(geometry=geoms, crs=CRS).to_file(tmp_path / "a.geojson")
    return list(open_dataset(tmp_path).records)


def test_touching_polygons_get_contact_pixels_between_them(tmp_path):
    """Vector labels keep touching buildings apart: the pixels on both sides of their shared
    wall are contact, read through the training dataset."""
    records = _vector_chip(tmp_path, [(8, 6, 24, 20), (8, 20, 24, 34)])  # share x = 20 px
    ds = ChipDataset(records, SampleSpec(40, 40, 0), mean=(0,) * 3, std=(1,) * 3,
                     num_classes=2, train=False, border_class=1, contact=True)
    image, target, weights, mask = (t.numpy() for t in ds[0])
    assert ds.outputs == 4 and mask.shape == target.shape == (40, 40)
    assert (mask[8:24, 6:34] == 1).all()  # the class mask: one block of building
    assert (target[8:24, 19:21] == CONTACT).all()  # the columns either side of the wall
    assert not (target[8:24, 6:18] == CONTACT).any()
    assert not (target[8:24, 22:34] == CONTACT).any()
    assert (target[8:24, 6] == BOUNDARY).all() and (target[12:20, 10:16] == INTERIOR).all()
    assert set(np.unique(target)) == {0, INTERIOR, BOUNDARY, CONTACT}
    # border weights (on by default) see the two polygons as two buildings, the mask alone
    # as one: the weight map peaks just outside the wall only with the polygons
    with_ids = ChipDataset(records, SampleSpec(40, 40, 0), mean=(0,) * 3, std=(1,) * 3,
                           num_classes=2, train=False, border_class=1, contact=True,
                           border_weight=10.0)[0][2].numpy()
    assert with_ids[7, 19] > 5.0 and weights.max() == 1.0


def _contact_checkpoint(path) -> None:
    arch = UNetConfig(in_channels=1, num_classes=4, depth=2, base_channels=2, padding="same")
    card = ModelCard(arch, (1,), (0.0,), (1.0,), ("background", "buildings"), 0.5, "uint8",
                     (0.0, 3.0), extra_outputs=(("building_boundary", 1),
                                                ("building_contact", 0)))
    save_checkpoint(path, build_model(arch), card)


def test_predict_with_a_contact_card_separates_touching_buildings(tmp_path, monkeypatch):
    """A contact-class card makes predict fold boundary into buildings and contact into
    background, so two roofs separated only by contact pixels are two objects in the one
    buildings layer (no extra layer, no extra flag)."""
    from geounet.engine.runner import clear_runner_cache
    from geounet.model.network import UNet
    from geounet.run.pipeline import segment

    # the "model" reads the class off the scene: value v -> output v (one-hot logits)
    def forward(self, x):
        classes = x[:, 0].round().clamp(0, 3).long()
        return 20.0 * torch.nn.functional.one_hot(classes, 4).permute(0, 3, 1, 2).float()

    monkeypatch.setattr(UNet, "forward", forward)
    clear_runner_cache()
    scene = np.zeros((1, 64, 64), np.uint8)
    scene[0, 10:40, 8:30] = INTERIOR
    scene[0, 10:40, 30:52] = INTERIOR
    scene[0, 10:40, 8] = scene[0, 10:40, 51] = BOUNDARY
    scene[0, 10:40, 29:31] = CONTACT  # the shared wall
    with rasterio.open(tmp_path / "s.tif", "w", driver="GTiff", width=64, height=64, count=1,
                       dtype="uint8", crs=CRS,
                       transform=from_origin(500000.0, 4000032.0, 0.5, 0.5)) as dst:
        dst.write(scene)
    _contact_checkpoint(tmp_path / "m.pt")
    try:
        segment(tmp_path / "s.tif", tmp_path / "o.gpkg", model=tmp_path / "m.pt",
                raster_out=tmp_path / "o.tif", client="synchronous", precision="fp32",
                engine="torch")
    finally:
        clear_runner_cache()
    assert [name for name, _ in pyogrio.list_layers(tmp_path / "o.gpkg")] == ["buildings"]
    buildings = gpd.read_file(tmp_path / "o.gpkg", layer="buildings")
    assert len(buildings) == 2
    assert sorted(buildings.area) == pytest.approx([30 * 21 * 0.25] * 2, rel=0.05)
    with rasterio.open(tmp_path / "o.tif") as src:
        assert src.count == 3  # class + the two classes' probabilities
        cls = src.read(1)
    assert (cls[10:40, 29:31] == 0).all() and (cls[10:40, 8] == 1).all()


@pytest.fixture(scope="module")
def building_chips(tmp_path_factory):
    root = tmp_path_factory.mktemp("contact")
    scene = synthesize_scene(root / "scene", size=256, seed=3)
    make_chips(scene.scene_path, scene.truth_path, root / "chips", chip_size=64,
               class_layers={"buildings": "buildings"}, split_block=2)
    return root / "chips"


def test_contact_class_trains_and_the_card_records_it(building_chips, tmp_path):
    config = TrainConfig(depth=2, base_channels=4, batch_size=4, epochs=2, max_minutes=None,
                         contact_class=True, border_weight=0.0)
    result = train(building_chips, tmp_path / "m.pt", config=config)
    card = read_checkpoint(result.best_path)["card"]
    assert card["classes"] == ["background", "buildings"]
    assert card["extra_outputs"] == [["building_boundary", 1], ["building_contact", 0]]
    assert card["architecture"]["num_classes"] == 4
    assert result.classes == ("background", "buildings")
    assert all(len(h.iou) == 2 and np.isfinite(h.val_loss) for h in result.history)
    plain = ModelCard.from_dict({k: v for k, v in card.items() if k != "extra_outputs"}
                                | {"architecture": card["architecture"] | {"num_classes": 2}})
    assert "extra_outputs" not in plain.to_dict()  # other cards are written as before
    assert ModelCard.from_dict(card).to_dict()["extra_outputs"] == card["extra_outputs"]
    # --init from it keeps its outputs; --contact-class from a plain model is refused
    again = train(building_chips, tmp_path / "ft.pt", init=result.best_path,
                  config=TrainConfig(depth=2, base_channels=4, batch_size=4, epochs=1,
                                     max_minutes=None))
    assert read_checkpoint(again.best_path)["card"]["extra_outputs"] == card["extra_outputs"]
    base = train(building_chips, tmp_path / "plain.pt", config=TrainConfig(
        depth=2, base_channels=4, batch_size=4, epochs=1, max_minutes=None))
    with pytest.raises(CheckpointError, match="no boundary/contact outputs"):
        train(building_chips, tmp_path / "x.pt", init=base.best_path, config=config)


def test_contact_class_needs_a_buildings_class_and_a_valid_card(tmp_path):
    root = tmp_path / "roads"
    scene = synthesize_scene(root / "scene", size=128, seed=1)
    make_chips(scene.scene_path, scene.truth_path, root / "chips", chip_size=64,
               class_layers={"roads": "roads"}, split_block=1)
    assert json.loads((root / "chips" / "chips.json").read_text())["classes"][1] == "roads"
    with pytest.raises(InputError, match="no 'buildings'"):
        train(root / "chips", tmp_path / "m.pt", config=TrainConfig(
            depth=2, base_channels=4, epochs=1, contact_class=True))
    arch = UNetConfig(in_channels=1, num_classes=4, depth=2, base_channels=2)
    common = dict(architecture=arch, bands=(1,), mean=(0.0,), std=(1.0,), pixel_size=None,
                  dtype="uint8", value_range=(0.0, 1.0), classes=("background", "buildings"))
    with pytest.raises(InputError, match="4 outputs"):
        ModelCard(**common, extra_outputs=(("building_boundary", 1),))
    with pytest.raises(InputError, match="class index"):
        ModelCard(**common, extra_outputs=(("building_boundary", 1), ("buildings", 0)))
    with pytest.raises(InputError, match="class index"):
        ModelCard(**common, extra_outputs=(("building_boundary", 1), ("contact", 2)))
