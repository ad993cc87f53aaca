"""Tests for geounet.model: U-Net shapes, size rules, receptive field, checkpoints, model card."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from geounet.errors import (
    CheckpointError,
    IncompatibleSceneError,
    InputError,
    OutputExistsError,
    TileSizeError,
)
from geounet.model import (
    ModelCard,
    UNet,
    UNetConfig,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)

CLASSES = ("background", "buildings", "roads")


def make_card(config: UNetConfig, **overrides: object) -> ModelCard:
    fields: dict[str, object] = {
        "architecture": config,
        "bands": tuple(range(1, config.in_channels + 1)),
        "mean": (100.0,) * config.in_channels,
        "std": (50.0,) * config.in_channels,
        "classes": CLASSES[: config.num_classes]
        if config.num_classes <= 3
        else tuple(f"c{i}" for i in range(config.num_classes)),
        "pixel_size": 0.5,
        "dtype": "uint8",
        "value_range": (0.0, 255.0),
        "description": "test card",
    }
    fields.update(overrides)
    return ModelCard(**fields)  # type: ignore[arg-type]


# ---- shapes and size rules -----------------------------------------------------------


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("steps", [(0, 1), (2, 0), (3, 5)])
def test_valid_output_shape(depth: int, steps: tuple[int, int]) -> None:
    config = UNetConfig(depth=depth, base_channels=2, num_classes=3)
    height = config.min_input_size + steps[0] * config.alignment
    width = config.min_input_size + steps[1] * config.alignment
    net = UNet(config).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, height, width))
    assert out.shape == (1, 3, config.output_size(height), config.output_size(width))
    assert height - out.shape[-2] == 2 * config.halo == 12 * 2**depth - 8


def test_parameter_count_matches_original_unet() -> None:
    """Ronneberger et al.'s net (1 band in, 2 classes, depth 4, 64 base) has 31,030,658 weights."""
    with torch.device("meta"):
        net = UNet(UNetConfig(in_channels=1, num_classes=2))
    assert sum(p.numel() for p in net.parameters()) == 31_030_658


def test_seed_design_572_to_388() -> None:
    config = UNetConfig(depth=4, base_channels=2)
    assert config.halo == 92
    assert config.alignment == 16
    assert config.output_size(572) == 388
    with torch.no_grad():
        out = UNet(config).eval()(torch.rand(1, 3, 572, 572))
    assert out.shape == (1, 3, 388, 388)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_same_output_shape(depth: int) -> None:
    config = UNetConfig(depth=depth, base_channels=2, padding="same", batch_norm=True)
    size = config.alignment * (3 if depth < 4 else 2)
    net = UNet(config).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, size, size + config.alignment))
    assert out.shape == (2, 3, size, size + config.alignment)
    assert config.output_size(size) == size
    assert config.halo % config.alignment == 0 and config.halo >= 32


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_valid_input_sizes_are_valid(depth: int, padding: str) -> None:
    config = UNetConfig(depth=depth, padding=padding)  # type: ignore[arg-type]
    sizes = config.valid_input_sizes(1, 1200)
    assert sizes[0] == config.min_input_size
    assert all(b - a == config.alignment for a, b in zip(sizes, sizes[1:]))
    for size in sizes:
        config.check_input_size(size)
        assert config.output_size(size) >= 1
    invalid = set(range(1, 1201)) - set(sizes)
    for size in list(invalid)[:: max(1, len(invalid) // 50)]:
        with pytest.raises(TileSizeError):
            config.check_input_size(size)


@pytest.mark.parametrize(
    ("depth", "padding", "size", "expected"),
    [
        (4, "valid", 500, ("492", "508")),
        (4, "valid", 572 + 1, ("572", "588")),
        (4, "valid", 100, ("188",)),
        (3, "valid", 101, ("100", "108")),
        (4, "same", 500, ("496", "512")),
        (2, "same", 7, ("4", "8")),
    ],
)
def test_invalid_size_message_names_nearest(
    depth: int, padding: str, size: int, expected: tuple[str, ...]
) -> None:
    config = UNetConfig(depth=depth, padding=padding)  # type: ignore[arg-type]
    with pytest.raises(TileSizeError) as info:
        config.output_size(size)
    message = str(info.value)
    assert str(size) in message
    for text in expected:
        assert text in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("want", [1, 100, 388, 500, 517])
def test_input_size_for_output(depth: int, padding: str, want: int) -> None:
    config = UNetConfig(depth=depth, padding=padding)  # type: ignore[arg-type]
    size = config.input_size_for_output(want)
    assert config.output_size(size) >= want
    smaller = [s for s in config.valid_input_sizes(1, size - 1) if config.output_size(s) >= want]
    assert not smaller


def test_seed_message_wording() -> None:
    with pytest.raises(TileSizeError, match=r"16k\+12, at least 188\); use 492 or 508"):
        UNetConfig(depth=4).check_input_size(500)


@pytest.mark.parametrize("size", [572.0, "572", None, True])
def test_non_integer_size_names_a_fix(size: object) -> None:
    with pytest.raises(TileSizeError, match=r"not an integer .*give a whole number such as 252"):
        UNetConfig(depth=4).check_input_size(size)  # type: ignore[arg-type]


def test_forward_rejects_invalid_size_and_channels() -> None:
    net = UNet(UNetConfig(depth=2, base_channels=2))
    with pytest.raises(TileSizeError):
        net(torch.rand(1, 3, 46, 44))
    with pytest.raises(InputError):
        net(torch.rand(1, 4, 44, 44))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"depth": 0},
        {"depth": 7},
        {"base_channels": 0},
        {"in_channels": -1},
        {"num_classes": 0},
        {"padding": "reflect"},
        {"depth": 2.0},
    ],
)
def test_config_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(InputError):
        UNetConfig(**kwargs)  # type: ignore[arg-type]


# ---- receptive field, halo and overlap-tile exactness ------------------------------------


def _dependence(config: UNetConfig, height: int, width: int) -> list[tuple[int, int, int]]:
    """For each output column j, the (j, first, last) input column that changes it.

    All weights are made positive and the input positive, so every ReLU passes and a large
    bump at an input column raises every output it can reach (also through max-pools).
    """
    torch.manual_seed(0)
    net = UNet(config).double().eval()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.abs_()
        x = torch.rand(1, config.in_channels, height, width, dtype=torch.float64) + 0.5
        batch = x.repeat(width, 1, 1, 1)
        for column in range(width):
            batch[column, :, :, column] += 1e3
        changed = (net(batch) != net(x)).any(dim=1).any(dim=1)  # (input col, output col)
    spans = []
    for j in range(changed.shape[1]):
        cols = torch.nonzero(changed[:, j]).flatten()
        spans.append((j, int(cols.min()), int(cols.max())))
    return spans


@pytest.mark.parametrize("depth", [2, 3])
def test_receptive_field_valid_matches_empirical(depth: int) -> None:
    config = UNetConfig(in_channels=1, num_classes=1, depth=depth, base_channels=2)
    width = config.min_input_size + 3 * config.alignment
    spans = _dependence(config, config.min_input_size, width)
    assert len(spans) == config.output_size(width)
    assert max(last - first + 1 for _, first, last in spans) == config.receptive_field
    a = config.alignment
    for j, first, last in spans:
        # pools are aligned to the tile: pixel j only sees inputs from its aligned block on
        origin = j - j % a
        assert first >= origin
        assert last <= origin + config.receptive_field - 1


def test_receptive_field_same_matches_empirical() -> None:
    config = UNetConfig(in_channels=1, num_classes=1, depth=2, base_channels=2, padding="same")
    width = 24 * config.alignment
    spans = _dependence(config, 4 * config.alignment, width)
    inner = [(j, f, last) for j, f, last in spans if f > 0 and last < width - 1]
    assert inner
    assert max(last - first + 1 for _, first, last in inner) == config.receptive_field


@pytest.mark.parametrize("depth", [2, 3])
def test_valid_tiles_equal_whole_input(depth: int) -> None:
    """Overlap-tile at the model level: an aligned sub-window's output is a crop of the whole."""
    config = UNetConfig(depth=depth, base_channels=4, batch_norm=True)
    net = UNet(config).double().eval()
    a, halo = config.alignment, config.halo
    size = config.min_input_size + 6 * a
    x = torch.rand(1, 3, size, size, dtype=torch.float64)
    tile = config.min_input_size + 2 * a
    with torch.no_grad():
        whole = net(x)
        for y0, x0 in [(0, 0), (a, 2 * a), (3 * a, 4 * a)]:
            part = net(x[..., y0 : y0 + tile, x0 : x0 + tile])
            out = config.output_size(tile)
            expected = whole[..., y0 : y0 + out, x0 : x0 + out]
            torch.testing.assert_close(part, expected, rtol=0, atol=1e-10)
    assert whole.shape[-1] == size - 2 * halo


def test_unaligned_tile_differs() -> None:
    """The alignment is real: a window shifted by less than 2**depth gives other values."""
    config = UNetConfig(depth=2, base_channels=4)
    net = UNet(config).double().eval()
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    tile = config.min_input_size
    with torch.no_grad():
        whole = net(x)
        part = net(x[..., 1 : 1 + tile, 0:tile])
    out = config.output_size(tile)
    assert not torch.allclose(part, whole[..., 1 : 1 + out, 0:out])


def test_channels_last_and_bf16_autocast() -> None:
    config = UNetConfig(depth=2, base_channels=4)
    net = UNet(config).eval()
    x = torch.rand(2, 3, 52, 52)
    with torch.no_grad():
        reference = net(x)
        net_cl = net.to(memory_format=torch.channels_last)
        out_cl = net_cl(x.to(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out_bf16 = net_cl(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out_cl, reference, rtol=1e-4, atol=1e-5)
    assert out_bf16.dtype == torch.bfloat16
    assert (out_bf16.float() - reference).abs().max() < 0.05 * reference.abs().max() + 0.05


# ---- checkpoints ---------------------------------------------------------------------


def _trained_like(config: UNetConfig) -> UNet:
    """A net whose BatchNorm running statistics differ from the defaults."""
    torch.manual_seed(1)
    net = UNet(config)
    net.train()
    with torch.no_grad():
        net(torch.rand(2, config.in_channels, 52, 52) * 3)
    return net.eval()


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_checkpoint_round_trip(tmp_path: Path, padding: str) -> None:
    config = UNetConfig(in_channels=4, depth=2, base_channels=4, batch_norm=True)
    config = dataclasses.replace(config, padding=padding)  # type: ignore[arg-type]
    net = _trained_like(config)
    card = make_card(config, dtype="uint16", value_range=(0.0, 4095.0))
    extra = {"epoch": 3, "optimizer": {"lr": 0.01, "moments": torch.ones(3)}}
    path = save_checkpoint(tmp_path / "model.pt", net, card, extra=extra)
    assert path == tmp_path / "model.pt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temp file left

    loaded, loaded_card = load_checkpoint(path)
    assert loaded_card == card
    assert not loaded.training
    x = torch.rand(1, 4, 52, 52)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))

    raw = read_checkpoint(path)
    assert raw["format"] == "geounet-checkpoint" and raw["format_version"] == 1
    assert raw["extra"]["epoch"] == 3
    assert torch.equal(raw["extra"]["optimizer"]["moments"], torch.ones(3))
    assert raw["card"]["receptive_field"] == config.receptive_field


def test_checkpoint_refuses_existing_then_overwrites(tmp_path: Path) -> None:
    config = UNetConfig(depth=1, base_channels=2)
    card = make_card(config)
    path = save_checkpoint(tmp_path / "m.pt", UNet(config), card)
    other = UNet(config)
    with pytest.raises(OutputExistsError):
        save_checkpoint(path, other, card)
    save_checkpoint(path, other, card, overwrite=True)
    loaded, _ = load_checkpoint(path)
    pairs = zip(loaded.state_dict().values(), other.state_dict().values())
    assert all(torch.equal(a, b) for a, b in pairs)


def test_save_to_a_directory_is_refused(tmp_path: Path) -> None:
    config = UNetConfig(depth=1, base_channels=2)
    (tmp_path / "models").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        save_checkpoint(tmp_path / "models", UNet(config), make_card(config), overwrite=True)
    assert not list((tmp_path / "models").iterdir())


def test_save_refuses_card_of_other_architecture(tmp_path: Path) -> None:
    net = UNet(UNetConfig(depth=1, base_channels=2))
    card = make_card(UNetConfig(depth=2, base_channels=2))
    with pytest.raises(InputError):
        save_checkpoint(tmp_path / "m.pt", net, card)
    assert not list(tmp_path.iterdir())


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    config = UNetConfig(depth=1, base_channels=2)
    net = UNet(config)
    good = save_checkpoint(tmp_path / "good.pt", net, make_card(config))
    files = {}
    files["state_dict"] = tmp_path / "plain.pt"
    torch.save(net.state_dict(), files["state_dict"])
    files["random"] = tmp_path / "random.pt"
    files["random"].write_bytes(np.random.default_rng(0).bytes(4096))
    data = good.read_bytes()
    files["truncated"] = tmp_path / "truncated.pt"
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["cut_tail"] = tmp_path / "cut_tail.pt"
    files["cut_tail"].write_bytes(data[:-10])
    files["cut_head"] = tmp_path / "cut_head.pt"
    files["cut_head"].write_bytes(data[:10])
    files["empty"] = tmp_path / "empty.pt"
    files["empty"].write_bytes(b"")
    files["missing"] = tmp_path / "missing.pt"
    payload = read_checkpoint(good)
    payload["card"]["architecture"]["base_channels"] = 4
    files["mismatch"] = tmp_path / "mismatch.pt"
    torch.save(payload, files["mismatch"])
    payload = read_checkpoint(good)
    payload["card"]["bands"] = [1, 2]
    files["bad_card"] = tmp_path / "bad_card.pt"
    torch.save(payload, files["bad_card"])
    payload = read_checkpoint(good)
    payload["format_version"] = 99
    files["future"] = tmp_path / "future.pt"
    torch.save(payload, files["future"])
    files["pickle"] = tmp_path / "pickle.pt"
    torch.save({"format": "geounet-checkpoint", "thing": Path("x")}, files["pickle"])
    return files


@pytest.mark.parametrize(
    "kind",
    [
        "state_dict",
        "random",
        "truncated",
        "cut_tail",
        "cut_head",
        "empty",
        "missing",
        "mismatch",
        "bad_card",
        "future",
        "pickle",
    ],
)
def test_load_bad_checkpoints(tmp_path: Path, kind: str) -> None:
    path = _bad_files(tmp_path)[kind]
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


# ---- model card ------------------------------------------------------------------------


def test_card_dict_round_trip_is_json() -> None:
    card = make_card(UNetConfig(depth=3, base_channels=8, padding="same"), pixel_size=None)
    text = json.dumps(card.to_dict())
    assert ModelCard.from_dict(json.loads(text)) == card
    assert card.receptive_field == UNetConfig(depth=3, padding="same").receptive_field


@pytest.mark.parametrize(
    "overrides",
    [
        {"bands": (1, 2)},
        {"bands": (0, 1, 2)},
        {"mean": (0.0, 0.0)},
        {"std": (1.0, 0.0, 1.0)},
        {"std": (1.0, 1.0)},
        {"classes": ("background", "buildings")},
        {"pixel_size": -1.0},
        {"dtype": "not-a-type"},
        {"value_range": (10.0, 0.0)},
    ],
)
def test_card_validation(overrides: dict[str, object]) -> None:
    with pytest.raises(InputError):
        make_card(UNetConfig(), **overrides)


def test_card_from_dict_rejects_unknown_and_missing() -> None:
    data = make_card(UNetConfig()).to_dict()
    with pytest.raises(InputError, match="unknown"):
        ModelCard.from_dict({**data, "colour": "red"})
    data.pop("mean")
    with pytest.raises(InputError, match="missing"):
        ModelCard.from_dict(data)


def test_check_scene_accepts_matching_real_scene(make_scene) -> None:
    import rasterio

    card = make_card(UNetConfig())
    with rasterio.open(make_scene(64, 80, count=4, pixel_size=0.5)) as src:
        count, dtype, pixel_size = src.count, src.dtypes[0], src.res[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        card.check_scene(count, dtype, pixel_size)


def test_check_scene_band_count(make_scene) -> None:
    import rasterio

    card = make_card(UNetConfig(), bands=(1, 2, 4))
    with rasterio.open(make_scene(40, 40, count=3)) as src:
        count = src.count
    with pytest.raises(IncompatibleSceneError, match=r"band 4 .*3 bands.*--bands to choose 3"):
        card.check_scene(count, "uint8", 0.5)


def test_check_scene_dtype_range(make_scene) -> None:
    import rasterio

    card = make_card(UNetConfig(), dtype="uint16", value_range=(0.0, 4095.0))
    with rasterio.open(make_scene(40, 40, dtype="uint8")) as src:
        dtype = src.dtypes[0]
    with pytest.raises(IncompatibleSceneError, match=r"uint8.*4095"):
        card.check_scene(3, dtype, 0.5)
    card.check_scene(3, "uint16", 0.5)
    # a wider type that still holds the training range: refused too (its values would be
    # normalised with the card's statistics), naming --rescale
    with pytest.raises(IncompatibleSceneError, match=r"uint16 differs.*--rescale"):
        make_card(UNetConfig()).check_scene(3, "uint16", 0.5)


def test_check_scene_beyond_the_auto_factor_names_resample_always() -> None:
    """A scene more than 4x off is refused by --resample auto too: the fix is `always`."""
    card = make_card(UNetConfig(), pixel_size=0.5)
    with pytest.raises(IncompatibleSceneError, match="--resample always") as info:
        card.check_scene(3, "uint8", 30.0)
    assert "--resample auto (" not in str(info.value)


@pytest.mark.parametrize(
    ("scene_pixel", "outcome"),
    [(0.5, "ok"), (0.6, "ok"), (0.75, "warn"), (0.3, "warn"), (1.0, "warn"), (1.5, "error"),
     (0.2, "error"), (None, "ok")],
)
def test_check_scene_pixel_size(scene_pixel: float | None, outcome: str) -> None:
    card = make_card(UNetConfig(), pixel_size=0.5)
    if outcome == "error":
        with pytest.raises(IncompatibleSceneError, match="within a factor 2.*--resample auto"):
            card.check_scene(3, "uint8", scene_pixel)
    elif outcome == "warn":
        with pytest.warns(UserWarning, match="pixel size"):
            card.check_scene(3, "uint8", scene_pixel)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            card.check_scene(3, "uint8", scene_pixel)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_load_and_bf16(tmp_path: Path) -> None:
    config = UNetConfig(depth=3, base_channels=8, batch_norm=True)
    net = _trained_like(config)
    path = save_checkpoint(tmp_path / "m.pt", net, make_card(config))
    gpu_net, _ = load_checkpoint(path, map_location="cuda")
    assert next(gpu_net.parameters()).is_cuda
    x = torch.rand(2, 3, 108, 108)
    with torch.no_grad():
        reference = net(x)
        out = gpu_net(x.cuda())
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out_bf16 = gpu_net(x.cuda().to(memory_format=torch.channels_last))
    torch.testing.assert_close(out.cpu(), reference, rtol=1e-3, atol=1e-3)
    assert out_bf16.dtype == torch.bfloat16
    assert (out_bf16.float().cpu() - reference).abs().max() < 0.05 * reference.abs().max() + 0.05
