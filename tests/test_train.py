"""train(): learning on synthetic chips, model card, resume, outputs and bad inputs."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from geounet.errors import CheckpointError, LabelError, OutputExistsError
from geounet.model import load_checkpoint, read_checkpoint
from geounet.synth import synthesize_scene
from geounet.training import TrainConfig, train
from geounet.training.augment import dihedral, elastic
from geounet.training.chips import make_chips
from geounet.training.dataset import ChipDataset, SampleSpec, find_chips
from geounet.training.losses import border_weights, segmentation_loss
from geounet.training.speed import native_bf16

TINY = dict(depth=2, base_channels=8, batch_size=4, lr=3e-3, patience=None)


@pytest.fixture(scope="module")
def chips(tmp_path_factory) -> Path:
    """25 chips of 64 px from a 320 px synthetic scene, 2x2-chip split blocks (the training
    chips that touch a validation chip are buffer chips, used by neither side)."""
    root = tmp_path_factory.mktemp("synth")
    scene = synthesize_scene(root / "scene", size=320, seed=0)
    make_chips(scene.scene_path, scene.truth_path, root / "chips", chip_size=64, split_block=2)
    return root / "chips"


@pytest.fixture(scope="module")
def small_chips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small")
    scene = synthesize_scene(root / "scene", size=128, seed=1)
    make_chips(scene.scene_path, scene.truth_path, root / "chips", chip_size=64, split_block=1)
    return root / "chips"


def test_short_run_learns_and_writes_card(chips, tmp_path):
    result = train(chips, tmp_path / "m.pt", config=TrainConfig(epochs=10, **TINY))
    first, last = result.history[0], result.history[-1]
    # validation loss falls and road IoU rises well above the all-background baseline (0):
    # roads cover ~19% of the scene, so a model that only learnt "background" scores 0 and a
    # random guess scores about 0.19 / (1 + 0.19 * 2) ~ 0.14 at best.
    assert last.val_loss < 0.85 * first.val_loss
    roads = result.classes.index("roads")
    assert last.iou[roads] > 0.4
    assert last.iou[0] > 0.6
    _, card = load_checkpoint(result.best_path)
    assert card.classes == ("background", "buildings", "roads")
    assert card.bands == (1, 2, 3) and card.dtype == "uint8" and card.pixel_size == 0.5
    # normalization = stats of the labelled training pixels
    names = [r.name for r in find_chips(chips) if r.split == "train"]
    pixels = []
    for name in names:
        with rasterio.open(chips / "images" / f"{name}.tif") as src:
            pixels.append(src.read().reshape(3, -1))
    pixels = np.concatenate(pixels, axis=1).astype(np.float64)
    np.testing.assert_allclose(card.mean, pixels.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(card.std, pixels.std(axis=1), rtol=1e-5)
    assert card.value_range == (pixels.min(), pixels.max())
    # and their percentiles, for --rescale match (exact: uint8 histograms)
    from geounet.config import PERCENTILE_LEVELS

    assert card.percentile_levels == PERCENTILE_LEVELS
    np.testing.assert_allclose(card.percentiles,
                               np.percentile(pixels, PERCENTILE_LEVELS, axis=1).T, atol=1e-9)
    # log and plot next to the checkpoint
    with open(result.log_path) as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 11))
    assert {"iou_buildings", "f1_roads", "val_loss", "chips_per_s"} <= set(rows[0])
    assert result.plot_path is not None and result.plot_path.read_bytes()[:4] == b"\x89PNG"
    assert result.last_path.exists()
    with pytest.raises(OutputExistsError):
        train(chips, tmp_path / "m.pt", config=TrainConfig(epochs=1, **TINY))


def test_resume_continues_with_same_optimizer_state(small_chips, tmp_path):
    config = dict(TINY, base_channels=4)
    whole = train(small_chips, tmp_path / "whole.pt", config=TrainConfig(epochs=3, **config))
    # the same 3-epoch run killed after epoch 2 (the schedule spans the 3 epochs)

    class Killed(Exception):
        pass

    def kill_after_2(event):
        if event.record is not None and event.record.epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        train(small_chips, tmp_path / "part.pt", config=TrainConfig(epochs=3, **config),
              progress=kill_after_2)
    part_last = tmp_path / "part.last.pt"
    saved = read_checkpoint(part_last)["extra"]["train_state"]
    assert saved["epoch"] == 2
    resumed = train(small_chips, tmp_path / "part.pt", config=TrainConfig(epochs=3, **config),
                    resume=part_last)
    assert [h.epoch for h in resumed.history] == [1, 2, 3]
    # the resumed run restarted from the saved optimizer state: after its one epoch it is
    # where the uninterrupted run is (weights and Adam moments)
    a = read_checkpoint(whole.last_path)
    b = read_checkpoint(resumed.last_path)
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=1e-5, atol=1e-6)
    opt_a = a["extra"]["train_state"]["optimizer"]["state"]
    opt_b = b["extra"]["train_state"]["optimizer"]["state"]
    assert opt_a.keys() == opt_b.keys()
    for key in opt_a:
        assert int(opt_a[key]["step"]) == int(opt_b[key]["step"]) == 3
        torch.testing.assert_close(opt_b[key]["exp_avg"], opt_a[key]["exp_avg"],
                                   rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("precision", [
    "fp32", pytest.param("bf16", marks=pytest.mark.skipif(
        not native_bf16(), reason="bf16 autocast is the default only on a native-bf16 CPU"))])
def test_same_seed_gives_bit_identical_weights(small_chips, tmp_path, precision):
    """A run is a function of its settings and chips: the same seed gives the same weights,
    optimizer state and history bit for bit (refit included), another seed other weights;
    with every speed switch at its default, in fp32 and (on a CPU with native bf16, where it
    is the default) under bf16 autocast."""
    config = dict(TINY, base_channels=4, epochs=2, max_minutes=None, select_from=0.0,
                  refit=True, seed=5, precision=precision)

    def run(name: str, **changes):
        result = train(small_chips, tmp_path / f"{name}.pt",
                       config=TrainConfig(**{**config, **changes}))
        return result, [read_checkpoint(p) for p in (result.best_path, result.last_path,
                                                     result.selected_path)]

    first, saved = run("a")
    again, saved_again = run("b")
    for one, other in zip(saved, saved_again):
        assert one["state_dict"].keys() == other["state_dict"].keys()
        assert all(torch.equal(v, other["state_dict"][k]) for k, v in one["state_dict"].items())
    opt, opt_again = (s["extra"]["train_state"]["optimizer"]["state"] for s in
                      (saved[1], saved_again[1]))
    assert all(torch.equal(opt[k]["exp_avg"], opt_again[k]["exp_avg"]) for k in opt)
    assert [(h.train_loss, h.val_loss, h.lr) for h in first.history] == \
        [(h.train_loss, h.val_loss, h.lr) for h in again.history]
    _, other_seed = run("c", seed=6)
    assert any(not torch.equal(v, other_seed[0]["state_dict"][k])
               for k, v in saved[0]["state_dict"].items())


def test_corrupt_checkpoint_for_resume(small_chips, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(CheckpointError):
        train(small_chips, tmp_path / "m.pt", config=TrainConfig(epochs=1, **TINY), resume=bad)


def test_unpaired_and_empty_chips(small_chips, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LabelError, match="no chip pairs|does not exist"):
        train(empty, tmp_path / "new" / "m.pt", config=TrainConfig(epochs=1, **TINY))
    assert not (tmp_path / "new").exists()  # a failed run leaves nothing behind
    # an unpaired file is listed and left out, not fatal (split.csv still names it: fine)
    broken = tmp_path / "broken"
    shutil.copytree(small_chips, broken)
    lost = sorted((broken / "masks").glob("*.tif"))[0]
    lost.unlink()
    with pytest.warns(UserWarning, match=rf"1 file\(s\) without a partner.*{lost.stem}"):
        records = find_chips(broken)
    assert lost.stem not in {r.name for r in records} and records


def test_masks_with_classes_outside_the_model(small_chips, tmp_path):
    odd = tmp_path / "odd"
    shutil.copytree(small_chips, odd)
    mask = next((odd / "masks").glob("*.tif"))
    with rasterio.open(mask, "r+") as dst:
        data = dst.read(1)
        data[0, 0] = 7
        dst.write(data, 1)
    with pytest.raises(LabelError, match="class 7"):
        train(odd, tmp_path / "m.pt", config=TrainConfig(epochs=1, **TINY))


def test_small_chips_are_mirror_padded_and_fully_labelled(small_chips):
    records = find_chips(small_chips)
    # output 68 covers a 64 px chip; the valid depth-2 net adds a 20 px halo per side
    spec = SampleSpec(input_size=108, output_size=68, offset=20)
    ds = ChipDataset(records, spec, mean=(0, 0, 0), std=(1, 1, 1), num_classes=3, train=False,
                     brightness=0, contrast=0)
    image, target, weights = ds[0]
    assert image.shape == (3, 108, 108) and target.shape == (68, 68)
    with rasterio.open(records[0].image) as src:
        raw = src.read().astype(np.float32)
    with rasterio.open(records[0].mask) as src:
        mask = src.read(1)
    # the chip sits under output pixel (0, 0) = input pixel (20, 20); mirrored around it
    np.testing.assert_array_equal(image[:, 20:84, 20:84].numpy(), raw)
    np.testing.assert_array_equal(image[:, 19, 20:84].numpy(), raw[:, 1])
    np.testing.assert_array_equal(target[:64, :64].numpy(), mask)
    assert (target[64:] == 255).all() and (weights[64:] == 0).all()


def test_dihedral_covers_eight_distinct_transforms():
    mask = np.arange(12).reshape(3, 4)
    outs = {dihedral(mask[None], mask, k)[1].tobytes() for k in range(8)}
    assert len(outs) == 8


def test_border_weights_peak_between_touching_objects():
    mask = np.zeros((20, 30), np.uint8)
    mask[5:15, 3:13] = 1
    mask[5:15, 15:27] = 1  # 2 px gap at columns 13-14
    w = border_weights(mask, 1, w0=10, sigma=5)
    assert w[10, 13] > 8 and w[10, 14] > 8  # d1 + d2 = 3 px: 10 exp(-9/50) ~ 8.4
    assert w[0, 0] < w[10, 13] and (w[mask == 1] == 0).all()


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_loss_ignores_unlabelled_pixels(loss):
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 8, 8)
    target = torch.randint(0, 3, (1, 8, 8))
    weights = torch.ones(1, 8, 8)
    base = segmentation_loss(logits, target, weights, loss=loss)
    target2 = target.clone()
    target2[:, :, 4:] = 255
    logits2 = logits.clone()
    logits2[:, :, :, 4:] = 100.0  # garbage where unlabelled
    weights2 = weights.clone()
    weights2[:, :, 4:] = 0
    a = segmentation_loss(logits2, target2, weights2, loss=loss)
    b = segmentation_loss(logits[..., :4], target[..., :4], weights[..., :4], loss=loss)
    torch.testing.assert_close(a, b)
    assert not torch.isclose(a, base)
    # confident correct logits give a loss near 0, confident wrong ones a large loss
    right = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 40 - 20
    assert segmentation_loss(right, target, weights, loss=loss) < 1e-3
    assert segmentation_loss(-right, target, weights, loss=loss) > 5


def test_cli_train_and_resume(small_chips, tmp_path):
    from click.testing import CliRunner

    from geounet.cli.main import cli

    out = tmp_path / "m.pt"
    base = ["train", str(small_chips), "--out", str(out), "--depth", "2", "--base-channels",
            "4", "--batch-size", "4", "--loss", "bce", "--dice-weight", "0.5"]
    result = CliRunner().invoke(cli, base + ["--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert "epoch 1/1" in result.output and out.exists()
    saved = read_checkpoint(out)["extra"]["train_state"]["config"]
    assert (saved["loss"], saved["dice_weight"]) == ("bce", 0.5)
    wrong = CliRunner().invoke(cli, base[:-4] + ["--loss", "focal"])
    assert wrong.exit_code == 2 and "ce" in wrong.output and "bce" in wrong.output
    more = CliRunner().invoke(cli, base + ["--epochs", "2", "--resume",
                                           str(tmp_path / "m.last.pt")])
    assert more.exit_code == 0, more.output
    assert "epoch 2/2" in more.output and "epoch 1/2" not in more.output
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    failed = CliRunner().invoke(cli, base + ["--epochs", "3", "--resume", str(bad)])
    assert failed.exit_code == 1 and "Error:" in failed.output
    assert "Traceback" not in failed.output


def test_uint16_scene_trained_and_segmented_end_to_end(tmp_path):
    """The card holds the uint16 normalization and classes; segment applies them exactly."""
    import zarr

    import geounet
    from geounet.model import load_checkpoint

    scene = synthesize_scene(tmp_path / "scene", size=128, seed=5, dtype="uint16")
    make_chips(scene.scene_path, scene.truth_path, tmp_path / "chips", chip_size=64,
               split_block=1)
    result = train(tmp_path / "chips", tmp_path / "m.pt",
                   config=TrainConfig(epochs=1, **dict(TINY, base_channels=4)))
    model, card = load_checkpoint(result.best_path)
    assert card.dtype == "uint16" and card.classes == ("background", "buildings", "roads")
    assert card.value_range[1] > 255 and min(card.mean) > 255  # raw 12-bit units, not /255
    gpkg, store = tmp_path / "o.gpkg", tmp_path / "pred.zarr"
    geounet.segment(scene.scene_path, gpkg, raster_out=store, model=result.best_path,
                    chunk_size=64, tile_size=104, probability_dtype="float32",
                    precision="fp32", client="synchronous")  # fp32 like the reference below
    assert gpkg.exists()
    probs = np.asarray(zarr.open_group(str(store), mode="r")["probabilities"][:])
    # manual whole-scene forward on (x - mean) / std, mirrored by the valid net's halo
    with rasterio.open(scene.scene_path) as src:
        raw = src.read().astype(np.float32)
    mean = np.asarray(card.mean, np.float32)[:, None, None]
    std = np.asarray(card.std, np.float32)[:, None, None]
    halo = card.architecture.halo

    def forward(image):
        padded = np.pad(image, ((0, 0), (halo, halo), (halo, halo)), mode="symmetric")
        with torch.no_grad():
            return model(torch.from_numpy(padded[None])).softmax(1)[0].numpy()

    expected = forward((raw - mean) / std)
    assert probs.shape == expected.shape == (3, 128, 128)
    np.testing.assert_allclose(probs, expected, atol=1e-4)
    # and the normalization matters: the raw uint16 values give other probabilities
    assert np.abs(forward(raw) - expected).max() > 0.1


def test_elastic_moves_image_and_mask_together():
    rng = np.random.default_rng(0)
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 12:40] = 1
    mask[40:60, 5:60] = 2
    mask[:, :3] = 255
    image = np.stack([mask.astype(np.float32), np.zeros_like(mask, np.float32)])
    warped, warped_mask = elastic(image, mask, rng)
    assert warped.shape == image.shape and warped_mask.shape == mask.shape
    assert set(np.unique(warped_mask)) <= {0, 1, 2, 255}  # nearest: no blended classes
    assert (warped_mask != mask).mean() > 0.01  # it did deform
    # where the bilinear image is flat (inside a region) it equals the nearest-sampled mask
    flat = np.isin(warped[0], (0.0, 1.0, 2.0, 255.0))
    assert flat.mean() > 0.8
    np.testing.assert_array_equal(warped[0][flat], warped_mask[flat])


def _touching_buildings_chip(folder: Path, name: str = "touching") -> None:
    """A 64 px uint8 chip pair with two buildings 2 px apart (and a road), as training data."""
    from rasterio.transform import from_origin

    mask = np.zeros((64, 64), np.uint8)
    mask[10:40, 8:30] = 1
    mask[10:40, 32:56] = 1
    mask[50:58, :] = 2
    image = np.stack([mask * 60 + 20, mask * 40 + 30, np.full_like(mask, 90)]).astype(np.uint8)
    profile = dict(driver="GTiff", height=64, width=64, crs="EPSG:32633",
                   transform=from_origin(500_000.0, 5_000_000.0, 0.5, 0.5))
    for kind, data, extra in (("images", image, {"count": 3, "dtype": "uint8"}),
                              ("masks", mask[None], {"count": 1, "dtype": "uint8",
                                                     "nodata": 255})):
        (folder / kind).mkdir(parents=True, exist_ok=True)
        with rasterio.open(folder / kind / f"{name}.tif", "w", **profile, **extra) as dst:
            dst.write(data)
    (folder / "chips.json").write_text('{"classes": ["background", "buildings", "roads"]}')


def test_samples_carry_class_and_border_weights(tmp_path):
    _touching_buildings_chip(tmp_path)
    records = find_chips(tmp_path, val_fraction=0.0)
    spec = SampleSpec(input_size=108, output_size=68, offset=20)
    common = dict(mean=(0, 0, 0), std=(1, 1, 1), num_classes=3, train=False, brightness=0,
                  contrast=0, class_weights=(1.0, 2.0, 3.0))
    _, target, w_plain = ChipDataset(records, spec, **common)[0]
    _, _, w_border = ChipDataset(records, spec, border_weight=10, border_sigma=5, **common)[0]
    labelled = target != 255
    expected = torch.tensor([1.0, 2.0, 3.0])[target[labelled]]
    torch.testing.assert_close(w_plain[labelled], expected)  # class weight per pixel
    assert (w_plain[~labelled] == 0).all()
    extra = w_border - w_plain
    # the border term is on non-building labelled pixels only
    assert (extra[target == 1] == 0).all() and (extra[~labelled] == 0).all()
    # the 2 px gap between the buildings: d1 + d2 = 3 px, 10 exp(-9 / 50) ~ 8.4
    assert extra[25, 30] > 8 and extra[25, 31] > 8
    assert extra[5, 60] < 1  # far from both buildings


def test_subfolder_layout_with_elastic_border_and_bce(small_chips, tmp_path):
    """train/ + val/ folders are the split; elastic, border weights and BCE run in training."""
    layout = tmp_path / "layout"
    records = find_chips(small_chips)
    for i, rec in enumerate(records):
        split = "val" if i == 0 else "train"
        for kind, path in (("images", rec.image), ("masks", rec.mask)):
            (layout / split / kind).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, layout / split / kind / path.name)
    _touching_buildings_chip(layout / "train")  # the border term is active in this run
    found = find_chips(layout)
    assert {r.name: r.split for r in found} == {
        "touching": "train", **{r.name: ("val" if i == 0 else "train")
                                for i, r in enumerate(records)}}
    config = TrainConfig(epochs=2, elastic=True, border_weight=10.0, loss="bce",
                         class_weights=(1.0, 2.0, 2.0), **dict(TINY, base_channels=4))
    result = train(layout, tmp_path / "m.pt", config=config)
    assert [h.epoch for h in result.history] == [1, 2]
    assert all(np.isfinite([h.train_loss, h.val_loss]).all() for h in result.history)
    saved = read_checkpoint(result.last_path)["extra"]["train_state"]["config"]
    assert (saved["elastic"], saved["border_weight"], saved["loss"]) == (True, 10.0, "bce")
    # the elastic training samples differ from the plain ones with the same seed
    spec = SampleSpec(input_size=108, output_size=68, offset=20)
    common = dict(mean=(0, 0, 0), std=(1, 1, 1), num_classes=3, train=True, brightness=0,
                  contrast=0)
    a = ChipDataset(found, spec, elastic=True, **common)[1][1]
    b = ChipDataset(found, spec, elastic=False, **common)[1][1]
    assert (a != b).any()
    # val/ without train/: a clear error
    only_val = tmp_path / "only_val"
    shutil.copytree(layout / "val", only_val / "val")
    with pytest.raises(LabelError, match="no training chips"):
        find_chips(only_val)


def test_plain_pairs_get_a_seeded_split(small_chips, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(small_chips / "images", plain / "images")
    shutil.copytree(small_chips / "masks", plain / "masks")  # no split.csv, no chips.json
    first = find_chips(plain, val_fraction=0.25, seed=1)
    assert [r.split for r in first] == [r.split for r in find_chips(plain, val_fraction=0.25,
                                                                        seed=1)]
    # georeferenced 2x2 chips: spatial split; the val chip's two edge neighbours are buffer,
    # the diagonal one (corner contact only) trains
    assert [r.split for r in first].count("val") == 1 and len(first) == 2
    rows = {r.name[-11:]: r.split for r in first}
    assert {"r0000_c0000", "r0001_c0001"} == set(rows) or {"r0000_c0001",
                                                             "r0001_c0000"} == set(rows)


def test_early_stopping_and_progress(small_chips, tmp_path):
    events = []
    # lr 1e-12 leaves float32 weights unchanged, so the validation loss never improves
    # (no batch norm: its running statistics would move even with a frozen learning rate;
    # fp32: under bf16 a zero bias moved by 1e-12 can flip a rounding)
    config = TrainConfig(epochs=6, **dict(TINY, base_channels=4, lr=1e-12, patience=2,
                                          batch_norm=False, precision="fp32"))
    result = train(small_chips, tmp_path / "m.pt", config=config, progress=events.append)
    assert result.stopped_early and [h.epoch for h in result.history] == [1, 2, 3]
    assert result.best_epoch == 1
    steps = [e for e in events if e.record is None]
    ends = [e.record.epoch for e in events if e.record is not None]
    assert ends == [1, 2, 3] and steps and all(1 <= e.step <= e.steps for e in steps)
