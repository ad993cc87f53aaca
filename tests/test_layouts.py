"""Dataset layouts: every supported layout gives the same samples; classes; splits; mistakes."""

from __future__ import annotations

import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.transform import from_origin
from shapely.geometry import box

from geounet.cli.main import cli
from geounet.errors import InputError, LabelError
from geounet.model import load_checkpoint
from geounet.training import TrainConfig, train
from geounet.training.dataset import ChipDataset, SampleSpec
from geounet.training.layout import DatasetConfig, open_dataset

SIZE = 48
TINY = dict(depth=2, base_channels=4, batch_size=4, lr=3e-3, patience=None, epochs=1)
# ~7.5 cm web tiles in EPSG:4326 near 52 N, like the published building dataset
GEOGRAPHIC = dict(crs="EPSG:4326", origin=(13.4, 52.5), pixel=(1.1e-6, 6.7e-7))
PROJECTED = dict(crs="EPSG:32633", origin=(500_000.0, 5_000_000.0), pixel=(0.5, 0.5))


def _chips(rows: int = 3, cols: int = 3, *, seed: int = 0, grid: dict = GEOGRAPHIC) -> dict:
    """Chips on a contiguous grid: name -> (image (3, S, S) uint8, 0/1 mask, transform, boxes).

    Buildings are rectangles on pixel edges, so burning their polygons gives the mask exactly.
    """
    rng = np.random.default_rng(seed)
    out = {}
    x0, y0 = grid["origin"]
    px, py = grid["pixel"]
    for r in range(rows):
        for c in range(cols):
            transform = from_origin(x0 + c * SIZE * px, y0 - r * SIZE * py, px, py)
            mask = np.zeros((SIZE, SIZE), np.uint8)
            shapes = []
            for _ in range(int(rng.integers(1, 4))):
                top, left = (int(v) for v in rng.integers(0, SIZE - 12, 2))
                height, width = (int(v) for v in rng.integers(5, 12, 2))
                mask[top:top + height, left:left + width] = 1
                (west, north), (east, south) = (transform * (left, top),
                                                transform * (left + width, top + height))
                shapes.append(box(west, south, east, north))
            noise = rng.integers(0, 40, (3, SIZE, SIZE))
            image = (noise + 60 + mask[None] * np.array([120, 90, 60])[:, None, None])
            out[f"tile_{r}_{c}"] = (image.astype(np.uint8), mask, transform, shapes)
    return out


def _write(path: Path, data: np.ndarray, transform=None, crs=None, nodata=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = data if data.ndim == 3 else data[None]
    driver = {".png": "PNG", ".jpg": "JPEG"}.get(path.suffix, "GTiff")
    profile = dict(driver=driver, height=data.shape[1], width=data.shape[2],
                   count=data.shape[0], dtype=data.dtype.name)
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def _layout(root: Path, kind: str, chips: dict, crs: str = "EPSG:4326") -> DatasetConfig:
    """Write ``chips`` in layout ``kind`` under ``root``; return the config that reads it."""
    for name, (image, mask, transform, shapes) in chips.items():
        geo = dict(transform=transform, crs=crs)
        if kind == "identical":
            _write(root / "images" / f"{name}.tif", image, **geo)
            _write(root / "masks" / f"{name}.tif", mask, **geo)
        elif kind in ("dot_mask", "underscore_mask", "dash_label", "gt"):
            suffix = {"dot_mask": ".mask", "underscore_mask": "_mask", "dash_label": "-label",
                      "gt": "_gt"}[kind]
            _write(root / f"{name}.tif", image, **geo)
            _write(root / f"{name}{suffix}.tif", mask, **geo)
        elif kind == "img_gt":
            _write(root / "img" / f"{name}.tif", image, **geo)
            _write(root / "gt" / f"{name}.tif", mask, **geo)
        elif kind == "binarymasks":
            _write(root / "rgb_tiles" / f"{name}.tif", image, **geo)
            _write(root / "binarymasks" / f"{name}.tif", mask, **geo)
        elif kind == "sat_mask":
            _write(root / f"{name}_sat.tif", image, **geo)
            _write(root / f"{name}_mask.tif", mask, **geo)
        elif kind == "png_sat_mask":  # DeepGlobe-like: PNGs, 3-band 0/255 masks, world files
            _write(root / f"{name}_sat.png", image, **geo)
            _write(root / f"{name}_mask.png", np.repeat(mask[None] * 255, 3, axis=0), **geo)
        elif kind == "mask_255_no_georef":  # images/ + masks/, 0/255 masks without a grid
            _write(root / "images" / f"{name}.tif", image, **geo)
            _write(root / "masks" / f"{name}.tif", (mask * 255).astype(np.uint8))
        elif kind == "pattern":
            _write(root / f"{name}.tif", image, **geo)
            _write(root / f"lbl_{name}.tif", mask, **geo)
        elif kind == "geojson":
            _write(root / f"{name}.tif", image, **geo)
            gpd.GeoDataFrame(geometry=shapes, crs=crs).to_file(root / f"{name}.geojson")
        elif kind == "one_file":
            _write(root / "images" / f"{name}.tif", image, **geo)
        else:
            raise AssertionError(kind)
    if kind == "one_file":
        shapes = [s for *_, group in chips.values() for s in group]
        gpd.GeoDataFrame(geometry=shapes, crs=crs).to_file(root / "labels.gpkg",
                                                           layer="buildings")
        return DatasetConfig(labels=str(root / "labels.gpkg"))
    if kind == "pattern":
        return DatasetConfig(mask_pattern="lbl_{stem}.tif")
    return DatasetConfig()


LAYOUTS = ["identical", "dot_mask", "underscore_mask", "dash_label", "gt", "img_gt",
           "binarymasks", "sat_mask", "png_sat_mask", "mask_255_no_georef", "pattern", "geojson",
           "one_file"]


def _samples(dataset) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """What reaches the model: normalized, padded image and target of each chip, by name."""
    spec = SampleSpec(input_size=SIZE + 40, output_size=SIZE, offset=20)
    records = sorted(dataset.records, key=lambda r: r.name)
    ds = ChipDataset(records, spec, mean=(100, 100, 100), std=(50, 50, 50),
                     num_classes=len(dataset.classes), train=False)
    return {r.name: (ds[i][0].numpy(), ds[i][1].numpy()) for i, r in enumerate(records)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    chips = _chips()
    root = tmp_path_factory.mktemp("ref")
    _layout(root, "identical", chips)
    dataset = open_dataset(root, val_fraction=0.0)
    return chips, _samples(dataset)


@pytest.mark.parametrize("kind", LAYOUTS)
def test_each_layout_gives_identical_samples_and_trains(kind, reference, tmp_path):
    chips, expected = reference
    root = tmp_path / "data"
    config = _layout(root, kind, chips)
    dataset = open_dataset(root, config, val_fraction=0.0)
    assert dataset.classes == ("background", "buildings")
    assert sorted(r.name.removesuffix("_sat") for r in dataset.records) == sorted(chips)
    # a label file is never also taken as an image
    assert all(not r.image.stem.endswith(("mask", "label", "_gt")) for r in dataset.records)
    assert not dataset.unpaired
    got = _samples(dataset)
    for name, (image, target) in got.items():
        ref_image, ref_target = expected[name.removesuffix("_sat")]
        np.testing.assert_array_equal(target, ref_target)
        np.testing.assert_array_equal(image, ref_image)
    result = train(root, tmp_path / "m.pt", config=TrainConfig(**TINY), dataset=config)
    _, card = load_checkpoint(result.best_path)
    assert card.classes == ("background", "buildings")
    assert np.isfinite(result.history[-1].train_loss)
    # geographic chips: the card records the pixel size in metres (~7.5 cm), geodesic
    assert card.pixel_size == pytest.approx(0.0747, rel=0.03)


def test_validation_chips_pass_the_cards_scene_check(tmp_path):
    """A model trained on EPSG:4326 chips accepts the same data's validation chips."""
    root = tmp_path / "data"
    _layout(root, "dot_mask", _chips(seed=4))
    result = train(root, tmp_path / "m.pt", config=TrainConfig(**TINY))
    _, card = load_checkpoint(result.best_path)
    val = [r for r in open_dataset(root).records if r.split == "val"]
    assert val
    for rec in val:
        with rasterio.open(rec.image) as src:
            from geounet.georef import pixel_size_m

            size = pixel_size_m(src.crs, tuple(src.transform)[:6], src.width, src.height)
            card.check_scene(src.count, src.dtypes[0], size)  # raises if it does not fit


def test_layout_rule_is_logged_and_detected_class_names(tmp_path, caplog):
    root = tmp_path / "data"
    _layout(root, "dot_mask", _chips())
    with caplog.at_level("INFO", logger="geounet"):
        dataset = open_dataset(root)
    assert "NAME.tif + NAME.mask.tif" in dataset.pairing
    assert "NAME.mask.tif" in caplog.text and "0/1 masks" in caplog.text
    roads = open_dataset(root, DatasetConfig(classes=("roads",)))
    assert roads.classes == ("background", "roads")
    explicit = open_dataset(root, DatasetConfig(classes=("background", "buildings")))
    assert explicit.classes == ("background", "buildings")


@pytest.mark.parametrize("seed,rows,cols,val_fraction", [(0, 3, 3, 0.2), (1, 6, 8, 0.2),
                                                        (2, 10, 12, 0.25), (3, 5, 5, 0.4)])
def test_spatial_split_no_validation_chip_touches_a_training_chip(
        tmp_path, seed, rows, cols, val_fraction):
    root = tmp_path / "data"
    chips = _chips(rows, cols, seed=seed)
    # a second, separate patch of chips far away: whole groups can go to validation
    far = {f"far_{k}": v for k, v in
           _chips(2, 2, seed=seed + 10, grid=dict(GEOGRAPHIC, origin=(14.0, 52.0))).items()}
    _layout(root, "identical", {**chips, **far})
    dataset = open_dataset(root, val_fraction=val_fraction, seed=seed)
    bounds = {}
    for rec in dataset.records:
        with rasterio.open(rec.image) as src:
            bounds[rec.name] = (src.bounds, rec.split, src.res)
    val = [b for b, s, _ in bounds.values() if s == "val"]
    train_ = [(b, res) for b, s, res in bounds.values() if s == "train"]
    assert val and train_
    for b, res in train_:
        for v in val:  # shares an edge (positive length) or overlaps = touches
            ox = min(b.right, v.right) - max(b.left, v.left)
            oy = min(b.top, v.top) - max(b.bottom, v.bottom)
            tol = min(res) / 2
            assert not (ox > -tol and oy > -tol and max(ox, oy) > tol), (b, v)
    total = rows * cols + 4
    assert len(dataset.records) + dataset.n_buffer == total
    n_val = len(val)
    assert abs(n_val - val_fraction * total) <= max(4, 0.1 * total)
    assert dataset.n_buffer <= 0.35 * total  # the best draw keeps the buffer small
    # seeded: the same call gives the same split
    again = open_dataset(root, val_fraction=val_fraction, seed=seed)
    assert [(r.name, r.split) for r in again.records] == [(r.name, r.split)
                                                          for r in dataset.records]


def test_chips_without_georeferencing_get_a_random_split(tmp_path):
    root = tmp_path / "data"
    for name, (image, mask, *_rest) in _chips(2, 3).items():
        _write(root / f"{name}.tif", image)
        _write(root / f"{name}_mask.tif", mask)
    dataset = open_dataset(root, val_fraction=0.34, seed=2)
    assert "random" in dataset.split_rule and dataset.n_buffer == 0
    assert sum(r.split == "val" for r in dataset.records) == 2 and len(dataset.records) == 6


def test_unpaired_files_are_listed_and_nothing_paired_is_an_error(tmp_path):
    root = tmp_path / "data"
    _layout(root, "underscore_mask", _chips())
    for extra in ("lonely_a.tif", "lonely_b.tif"):
        _write(root / extra, np.zeros((3, 8, 8), np.uint8))
    (root / "tile_0_0_mask.tif").unlink()
    with pytest.warns(UserWarning, match=r"3 file\(s\) without a partner.*lonely_a.tif"):
        dataset = open_dataset(root)
    assert {p.name for p in dataset.unpaired} == {"lonely_a.tif", "lonely_b.tif", "tile_0_0.tif"}
    assert len(dataset.records) + dataset.n_buffer == 8
    empty = tmp_path / "nothing"
    for name in ("a.tif", "b.tif"):
        _write(empty / name, np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(LabelError, match=r"no chip pairs.*2 unpaired.*--mask-pattern"):
        open_dataset(empty)


@pytest.mark.parametrize("values,match", [((0, 128, 255), "--mask-values"),
                                          ((0, 3, 7, 9), "--mask-values")])
def test_ambiguous_mask_values_name_the_option(tmp_path, values, match):
    root = tmp_path / "data"
    chips = _chips(1, 2)
    for i, (name, (image, mask, transform, _)) in enumerate(chips.items()):
        coded = np.where(mask > 0, values[1 + i % (len(values) - 1)], values[0]).astype(np.uint8)
        _write(root / "images" / f"{name}.tif", image, transform, "EPSG:4326")
        _write(root / "masks" / f"{name}.tif", coded, transform, "EPSG:4326")
    with pytest.raises(LabelError, match=match):
        open_dataset(root)
    # saying what the values mean fixes it
    config = DatasetConfig(mask_values=values, classes=tuple(f"c{i}" for i in
                                                             range(1, len(values))))
    dataset = open_dataset(root, config, val_fraction=0.0)
    assert dataset.classes[0] == "background" and len(dataset.classes) == len(values)


def test_mask_values_override_and_bad_options(tmp_path):
    root = tmp_path / "data"
    _layout(root, "mask_255_no_georef", _chips(1, 2))
    dataset = open_dataset(root, DatasetConfig(mask_values=(0, 255)), val_fraction=0.0)
    assert dataset.records[0].mask_values == (0, 255)
    with pytest.raises(InputError, match="stem"):
        DatasetConfig(mask_pattern="mask.tif")
    with pytest.raises(InputError, match="one value per class"):
        DatasetConfig(mask_values=(0, 255), classes=("buildings", "roads"))


def test_cli_train_layout_and_user_mistakes(tmp_path):
    root = tmp_path / "data"
    _layout(root, "dot_mask", _chips())
    runner = CliRunner()
    ok = runner.invoke(cli, ["train", str(root), "--out", str(tmp_path / "m.pt"), "--epochs", "1",
                             "--depth", "2", "--base-channels", "4", "--classes", "buildings"])
    assert ok.exit_code == 0, ok.output
    assert "NAME.mask.tif" in ok.output and "background,buildings" in ok.output
    for args, needle in (
        (["--mask-values", "0,x"], "--mask-values"),
        (["--mask-pattern", "nostem.tif"], "{stem}"),
        (["--classes", "buildings,background"], "background"),
    ):
        res = runner.invoke(cli, ["train", str(root), "--out", str(tmp_path / "x.pt"), *args])
        assert res.exit_code != 0
        assert "Traceback" not in res.output and needle in res.output, res.output
        assert [line for line in res.output.splitlines() if line.startswith("Error")]
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    res = runner.invoke(cli, ["train", str(nothing), "--out", str(tmp_path / "y.pt")])
    assert res.exit_code == 1 and res.output.count("Error:") == 1
    assert "Traceback" not in res.output


def _segment_layers(tmp_path: Path, classes: tuple[str, ...]) -> list[str]:
    import pyogrio

    from geounet import segment
    from geounet.testing import write_scene

    root = tmp_path / "data"
    _layout(root, "identical", _chips(2, 3, grid=PROJECTED), crs=PROJECTED["crs"])
    result = train(root, tmp_path / "m.pt", config=TrainConfig(**dict(TINY, epochs=2)),
                   dataset=DatasetConfig(classes=classes))
    _, card = load_checkpoint(result.best_path)
    assert card.classes == ("background", *classes)
    scene = write_scene(tmp_path / "scene.tif", 97, 103, pixel_size=0.5)
    segment(scene, tmp_path / "out.gpkg", model=str(result.best_path))
    return sorted(str(row[0]) for row in pyogrio.list_layers(tmp_path / "out.gpkg"))


def test_building_only_model_writes_only_buildings(tmp_path):
    assert _segment_layers(tmp_path, ("buildings",)) == ["buildings"]


def test_road_only_model_writes_only_roads(tmp_path):
    layers = _segment_layers(tmp_path, ("roads",))
    assert "buildings" not in layers and "roads" in layers
    assert set(layers) <= {"roads", "road_centerlines", "road_edges", "road_nodes"}


def test_chips_dir_with_buffer_rows_in_split_file(tmp_path):
    """split.csv rows marked buffer are left out of both sides."""
    root = tmp_path / "data"
    _layout(root, "identical", _chips(2, 2))
    names = sorted(p.stem for p in (root / "images").iterdir())
    (root / "split.csv").write_text("name,split\n" + "\n".join(
        f"{n},{s}" for n, s in zip(names, ["train", "buffer", "val", "train"])) + "\n")
    dataset = open_dataset(root)
    assert [r.split for r in dataset.records] == ["train", "val", "train"]
    assert dataset.n_buffer == 1
    shutil.rmtree(root / "masks")
    with pytest.raises(LabelError, match="no chip pairs"):
        open_dataset(root)


def test_cli_chips_rewrites_a_dataset_as_a_chips_directory(tmp_path):
    """`geounet chips DATASET_DIR` fixes pairing, values, classes and split once; training on
    the result sees the same samples as training on the original layout."""
    chips = _chips(3, 3, seed=5)
    root = tmp_path / "data"
    _layout(root, "mask_255_no_georef", chips)
    runner = CliRunner()
    res = runner.invoke(cli, ["chips", str(root), "--out", str(tmp_path / "chips"),
                              "--classes", "buildings", "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert "classes background,buildings" in res.output
    out = open_dataset(tmp_path / "chips")
    original = open_dataset(root, val_fraction=0.2, seed=1)
    assert out.split_rule == "split.csv" and out.classes == ("background", "buildings")
    assert [(r.name, r.split) for r in out.records] == [(r.name, r.split)
                                                        for r in original.records]
    for (name, (image, target)), (_, (image2, target2)) in zip(
            sorted(_samples(out).items()), sorted(_samples(original).items())):
        np.testing.assert_array_equal(target, target2)
        np.testing.assert_array_equal(image, image2)
    with rasterio.open(out.records[0].mask) as src:  # masks now on the image grid
        assert src.crs is not None and src.nodata == 255 and src.tags()["classes"]
    again = runner.invoke(cli, ["chips", str(root), "--out", str(tmp_path / "chips")])
    assert again.exit_code == 1 and "--overwrite" in again.output
    assert "Traceback" not in again.output


def test_mask_nodata_that_is_really_the_class_is_an_error(tmp_path):
    """0/255 masks that declare nodata=255 would train on background only: stop and say so."""
    root = tmp_path / "data"
    for name, (image, mask, transform, _) in _chips(1, 2).items():
        _write(root / f"{name}.tif", image, transform, "EPSG:4326")
        _write(root / f"{name}.mask.tif", (mask * 255).astype(np.uint8), transform,
               "EPSG:4326", nodata=255)
    with pytest.raises(LabelError, match="--mask-values"):
        open_dataset(root)
    dataset = open_dataset(root, DatasetConfig(mask_values=(0, 255)), val_fraction=0.0)
    assert dataset.classes == ("background", "buildings")
    chips = _samples(dataset)
    assert all((target == 1).any() for _, target in chips.values())


def test_mixed_01_and_0255_masks_are_ambiguous(tmp_path):
    root = tmp_path / "data"
    for i, (name, (image, mask, transform, _)) in enumerate(_chips(1, 2).items()):
        _write(root / "images" / f"{name}.tif", image, transform, "EPSG:4326")
        _write(root / "masks" / f"{name}.tif", (mask * (1 if i == 0 else 255)).astype(np.uint8),
               transform, "EPSG:4326")
    with pytest.raises(LabelError, match="mix 0/1 masks and 0/255.*--mask-values"):
        open_dataset(root)


def test_0255_masks_with_three_named_classes_are_ambiguous_not_binary(tmp_path):
    """0/255 masks under three class names: 255 is a foreground or nodata; reading it as
    class 1 would train nodata as buildings. Stop and name --mask-values."""
    root = tmp_path / "data"
    _layout(root, "mask_255_no_georef", _chips(1, 2))
    with pytest.raises(LabelError, match="only 0 and 255.*3 classes.*--mask-values"):
        open_dataset(root, DatasetConfig(classes=("buildings", "roads")))
    # two named classes keep the documented 0/255 rule
    assert open_dataset(root, DatasetConfig(classes=("buildings",)),
                        val_fraction=0.0).records[0].mask_values == (0, 255)


def test_unnamed_three_class_masks_need_class_names(tmp_path):
    """0/1/2 masks say nothing of what 1 and 2 are: no guessed names in the model card."""
    root = tmp_path / "data"
    for i, (name, (image, mask, transform, _)) in enumerate(_chips(1, 2).items()):
        _write(root / "images" / f"{name}.tif", image, transform, "EPSG:4326")
        _write(root / "masks" / f"{name}.tif", (mask * (1 + i)).astype(np.uint8), transform,
               "EPSG:4326")
    with pytest.raises(LabelError, match="class indices but no class names.*--classes"):
        open_dataset(root)
    named = open_dataset(root, DatasetConfig(classes=("roads", "buildings")), val_fraction=0.0)
    assert named.classes == ("background", "roads", "buildings")


def test_float_masks_with_nan_nodata_read(tmp_path):
    root = tmp_path / "data"
    for name, (image, mask, transform, _) in _chips(1, 2).items():
        coded = mask.astype(np.float32)
        coded[0, :4] = np.nan
        _write(root / "images" / f"{name}.tif", image, transform, "EPSG:4326")
        _write(root / "masks" / f"{name}.tif", coded, transform, "EPSG:4326", nodata=np.nan)
    dataset = open_dataset(root, val_fraction=0.0)
    assert dataset.classes == ("background", "buildings")
    for _, target in _samples(dataset).values():
        assert (target[0, :4] == 255).all() and (target == 1).any()


def test_chips_out_inside_or_around_the_input_is_refused(tmp_path):
    """--overwrite must never delete the dataset it reads."""
    root = tmp_path / "data"
    _layout(root, "dot_mask", _chips(1, 2))
    before = sorted(p.name for p in root.rglob("*"))
    runner = CliRunner()
    for out in (root, tmp_path, root / "chips"):
        res = runner.invoke(cli, ["chips", str(root), "--out", str(out), "--overwrite"])
        assert res.exit_code != 0 and "overlap" in res.output, res.output
        assert "Traceback" not in res.output
    assert sorted(p.name for p in root.rglob("*")) == before


def test_cli_chips_names_options_of_the_other_mode(tmp_path):
    root = tmp_path / "data"
    _layout(root, "dot_mask", _chips(1, 2))
    runner = CliRunner()
    res = runner.invoke(cli, ["chips", str(root), "--out", str(tmp_path / "c"),
                              "--chip-size", "128", "--min-labelled", "0.1"])
    assert res.exit_code == 2 and "--chip-size, --min-labelled" in res.output, res.output
    scene = next(root.glob("*[0-9].tif"))
    labels = tmp_path / "l.gpkg"
    gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)], crs="EPSG:4326").to_file(labels,
                                                                          layer="buildings")
    res = runner.invoke(cli, ["chips", str(scene), str(labels), "--out", str(tmp_path / "d"),
                              "--mask-pattern", "{stem}.mask.tif"])
    assert res.exit_code == 2 and "--mask-pattern" in res.output, res.output


def test_jpeg_images_with_png_masks_pair_and_export_as_geotiff(tmp_path):
    """NAME.jpg + NAME_mask.png (lossy images, as many published datasets): paired, trained
    on, and `geounet chips` rewrites the images as GeoTIFF with the same decoded pixels and
    georeferencing."""
    chips = _chips(2, 2, seed=3)
    root = tmp_path / "data"
    for name, (image, mask, transform, _) in chips.items():
        _write(root / f"{name}.jpg", image, transform, "EPSG:4326")
        _write(root / f"{name}_mask.png", mask, transform, "EPSG:4326")
    dataset = open_dataset(root, val_fraction=0.0)
    assert "NAME.jpg + NAME_mask.png" in dataset.pairing
    assert sorted(r.name for r in dataset.records) == sorted(chips)
    res = CliRunner().invoke(cli, ["chips", str(root), "--out", str(tmp_path / "chips")])
    assert res.exit_code == 0, res.output
    out = open_dataset(tmp_path / "chips")
    for rec in out.records:
        with rasterio.open(rec.image) as got, rasterio.open(root / f"{rec.name}.jpg") as src:
            assert got.driver == "GTiff" and got.crs == src.crs
            assert got.transform.almost_equals(src.transform)
            np.testing.assert_array_equal(got.read(), src.read())
    result = train(root, tmp_path / "m.pt", config=TrainConfig(**TINY))
    assert np.isfinite(result.history[-1].train_loss)
