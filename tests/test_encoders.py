"""The ResNet-encoder U-Net: registry, pretrained weights from a local file, training it,
fine-tuning any checkpoint (``--init``, frozen-encoder warm-up) and predicting with it.

Offline: every "pretrained" file is a state dict the test saves itself; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from geounet.config import ArchitectureName, choices
from geounet.errors import CheckpointError, InputError
from geounet.model import (
    ARCHITECTURES,
    ResNetUNet,
    ResNetUNetConfig,
    UNetConfig,
    load_checkpoint,
    load_encoder_weights,
    read_checkpoint,
)
from geounet.model.encoder import ResNetEncoder
from geounet.model.registry import architecture_from_dict, architecture_to_dict
from geounet.synth import synthesize_scene
from geounet.training import TrainConfig, train
from geounet.training.chips import make_chips
from geounet.training.layout import DatasetConfig

SMALL = (16, 16, 16, 8, 8)
TINY = dict(architecture="resnet-unet", encoder="resnet18", decoder_channels=SMALL,
            batch_size=4, epochs=1, max_minutes=None, device="cpu")


@pytest.fixture(scope="module")
def chips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("enc")
    scene = synthesize_scene(root / "scene", size=128, seed=1)
    make_chips(scene.scene_path, scene.truth_path, root / "chips", chip_size=64, split_block=1)
    return root / "chips"


def _pretrained_file(path: Path, encoder: str = "resnet18", seed: int = 3) -> dict[str, Any]:
    """A torchvision-style ResNet file: random trunk weights, an ``fc`` head, ``module.``
    prefixes (as saved from DataParallel). Returns the trunk's state dict."""
    torch.manual_seed(seed)
    trunk = ResNetEncoder(3, encoder)
    for module in trunk.modules():  # non-default BatchNorm statistics, as after training
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    state = trunk.state_dict()
    raw = {f"module.{k}": v for k, v in state.items()}
    raw["module.fc.weight"] = torch.randn(1000, 512)
    raw["module.fc.bias"] = torch.randn(1000)
    torch.save(raw, path)
    return state


class _FirstStep:
    """Records the parameters an optimizer holds when its first step starts (global hook)."""

    def __enter__(self) -> _FirstStep:
        self.params: list[torch.Tensor] | None = None

        def hook(optimizer: Any, args: Any, kwargs: Any) -> None:
            if self.params is None:
                self.params = [p.detach().clone() for g in optimizer.param_groups
                               for p in g["params"]]

        self.handle = register_optimizer_step_pre_hook(hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.handle.remove()


# ---- registry ----------------------------------------------------------------------------
def test_registry_round_trip_and_unknown_name() -> None:
    assert set(choices(ArchitectureName)) == set(ARCHITECTURES)  # the CLI choices = registry
    for cfg in (UNetConfig(depth=3, padding="same"),
                ResNetUNetConfig(in_channels=4, num_classes=2, encoder="resnet18",
                                 decoder_channels=SMALL)):
        data = architecture_to_dict(cfg)
        assert architecture_from_dict(data) == cfg
    assert architecture_to_dict(ResNetUNetConfig())["name"] == "resnet-unet"
    assert architecture_from_dict({"depth": 2}) == UNetConfig(depth=2)  # pre-registry cards
    with pytest.raises(InputError, match="'efficientnet-unet' is unknown.*resnet-unet"):
        architecture_from_dict({"name": "efficientnet-unet"})
    with pytest.raises(InputError, match="resnet50"):
        ResNetUNetConfig(encoder="resnet50")  # type: ignore[arg-type]


# ---- pretrained weights from a file ------------------------------------------------------
def test_encoder_weights_load_exactly_and_mismatch_names_keys(tmp_path: Path) -> None:
    state = _pretrained_file(tmp_path / "resnet18.pth")
    model = ResNetUNet(ResNetUNetConfig(encoder="resnet18", decoder_channels=SMALL))
    decoder_before = {k: v.clone() for k, v in model.state_dict().items()
                      if not k.startswith("encoder.")}
    keys = load_encoder_weights(model, tmp_path / "resnet18.pth")
    assert "conv1.weight" in keys and not any(k.startswith("fc.") for k in keys)
    loaded = model.encoder.state_dict()
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
    for key, value in decoder_before.items():  # the decoder is left alone
        assert torch.equal(model.state_dict()[key], value), key
    # a resnet34 file does not fit a resnet18 encoder: the extra blocks are named
    _pretrained_file(tmp_path / "resnet34.pth", "resnet34")
    with pytest.raises(CheckpointError, match=r"unexpected \['layer1\.2\.") as err:
        load_encoder_weights(model, tmp_path / "resnet34.pth")
    assert "resnet18" in str(err.value)
    (tmp_path / "junk.pth").write_bytes(b"not a state dict")
    with pytest.raises(CheckpointError, match="cannot read encoder weights"):
        load_encoder_weights(model, tmp_path / "junk.pth")


def test_three_band_conv1_adapted_to_four_bands(tmp_path: Path) -> None:
    state = _pretrained_file(tmp_path / "resnet18.pth")
    model = ResNetUNet(ResNetUNetConfig(in_channels=4, encoder="resnet18",
                                        decoder_channels=SMALL))
    load_encoder_weights(model, tmp_path / "resnet18.pth")
    conv3, conv4 = state["conv1.weight"], model.encoder.conv1.weight.detach()
    assert conv4.shape == (64, 4, 7, 7)
    # a flat image of value v gives the first layer the same response with 3 or 4 bands
    flat3, flat4 = torch.full((1, 3, 32, 32), 0.7), torch.full((1, 4, 32, 32), 0.7)
    out3 = torch.nn.functional.conv2d(flat3, conv3, stride=2, padding=3)
    out4 = torch.nn.functional.conv2d(flat4, conv4, stride=2, padding=3)
    torch.testing.assert_close(out4, out3, rtol=1e-5, atol=1e-5)
    for key in ("layer4.1.conv2.weight", "bn1.running_var"):
        assert torch.equal(model.encoder.state_dict()[key], state[key])


# ---- training ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def resnet_model(chips: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A resnet18 U-Net trained one epoch from a locally saved 'pretrained' encoder file."""
    folder = tmp_path_factory.mktemp("resnet")
    state = _pretrained_file(folder / "resnet18.pth")
    with _FirstStep() as first:
        result = train(chips, folder / "m.pt", config=TrainConfig(
            **TINY, encoder_weights=str(folder / "resnet18.pth")))
    # the first step started from the file's encoder weights
    fresh = ResNetUNet(ResNetUNetConfig(encoder="resnet18", decoder_channels=SMALL))
    names = [name for name, _ in fresh.named_parameters()]
    assert first.params is not None and len(first.params) == len(names)
    at_start = dict(zip(names, first.params))
    for key, value in state.items():
        if f"encoder.{key}" in at_start:
            assert torch.equal(at_start[f"encoder.{key}"], value), key
    return result.best_path


def test_train_resnet_unet_writes_its_card(resnet_model: Path) -> None:
    payload = read_checkpoint(resnet_model)
    arch = payload["card"]["architecture"]
    assert arch["name"] == "resnet-unet" and arch["encoder"] == "resnet18"
    assert arch["decoder_channels"] == list(SMALL)
    net, card = load_checkpoint(resnet_model)
    assert isinstance(net, ResNetUNet) and card.architecture.alignment == 32
    assert payload["extra"]["train_state"]["config"]["architecture"] == "resnet-unet"


def test_resnet_options_refused_for_the_unet(chips: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="resnet-unet"):
        TrainConfig(encoder_weights="x.pth")
    with pytest.raises(InputError, match="freeze_encoder_epochs 1 needs a resnet-unet"):
        train(chips, tmp_path / "u.pt", config=TrainConfig(
            depth=2, base_channels=4, epochs=1, freeze_encoder_epochs=1, max_minutes=None))
    assert not (tmp_path / "u.pt").exists()


# ---- fine-tuning -------------------------------------------------------------------------
def test_init_fine_tunes_from_the_checkpoint_weights(resnet_model: Path, chips: Path,
                                                     tmp_path: Path) -> None:
    init = read_checkpoint(resnet_model)
    with _FirstStep() as first:
        result = train(chips, tmp_path / "ft.pt", init=resnet_model,
                       config=TrainConfig(**TINY, ema=0.0, freeze_encoder_epochs=1))
    net = ResNetUNet(ResNetUNetConfig(encoder="resnet18", decoder_channels=SMALL))
    names = [n for n, _ in net.named_parameters()]
    assert first.params is not None
    # the optimizer's first step starts from the init checkpoint's weights, every tensor
    for name, value in zip(names, first.params):
        assert torch.equal(value, init["state_dict"][name]), name
    assert [h.epoch for h in result.history] == [1]  # a new run, not a continued one
    tuned = read_checkpoint(result.best_path)
    assert tuned["card"]["architecture"] == init["card"]["architecture"]
    for key in ("mean", "std", "classes", "bands", "pixel_size"):
        assert tuned["card"][key] == init["card"][key], key
    # the frozen warm-up epoch moved neither encoder weights nor its BatchNorm statistics;
    # the decoder trained
    encoder = [k for k in init["state_dict"] if k.startswith("encoder.")]
    for key in encoder:
        assert torch.equal(tuned["state_dict"][key], init["state_dict"][key]), key
    assert not torch.equal(tuned["state_dict"]["head.weight"], init["state_dict"]["head.weight"])


def test_refit_of_a_fine_tune_starts_from_the_init_weights(resnet_model: Path, chips: Path,
                                                           tmp_path: Path) -> None:
    """--refit retrains from where the run started (the --init checkpoint), not from scratch."""
    init = read_checkpoint(resnet_model)
    starts: dict[int, list[torch.Tensor]] = {}

    def hook(optimizer: Any, args: Any, kwargs: Any) -> None:
        starts.setdefault(id(optimizer), [p.detach().clone() for g in optimizer.param_groups
                                          for p in g["params"]])

    handle = register_optimizer_step_pre_hook(hook)
    try:
        result = train(chips, tmp_path / "rf.pt", init=resnet_model,
                       config=TrainConfig(**TINY, ema=0.0, refit=True))
    finally:
        handle.remove()
    assert result.refit is not None and len(starts) == 2  # the run, then the refit
    names = [n for n, _ in ResNetUNet(ResNetUNetConfig(encoder="resnet18",
                                                       decoder_channels=SMALL)).named_parameters()]
    for start in starts.values():
        for name, value in zip(names, start):
            assert torch.equal(value, init["state_dict"][name]), name


def test_init_thaws_the_encoder_after_the_warm_up(resnet_model: Path, chips: Path,
                                                  tmp_path: Path) -> None:
    init = read_checkpoint(resnet_model)
    result = train(chips, tmp_path / "ft2.pt", init=resnet_model,
                   config=TrainConfig(**dict(TINY, epochs=2), ema=0.0, freeze_encoder_epochs=1,
                                      select_from=0.0))
    tuned = read_checkpoint(result.last_path)
    assert not torch.equal(tuned["state_dict"]["encoder.conv1.weight"],
                           init["state_dict"]["encoder.conv1.weight"])


def test_init_refuses_mismatches(resnet_model: Path, chips: Path, tmp_path: Path) -> None:
    two = DatasetConfig(classes=("background", "buildings"))
    with pytest.raises(CheckpointError, match=r"classes \['background', 'buildings', 'roads'\]"
                       r".*--classes"):
        train(chips, tmp_path / "a.pt", init=resnet_model, dataset=two,
              config=TrainConfig(**TINY))
    with pytest.raises(InputError, match="--resume continues"):
        train(chips, tmp_path / "b.pt", init=resnet_model, resume=resnet_model,
              config=TrainConfig(**TINY))
    with pytest.raises(InputError, match="leave out --encoder-weights"):
        train(chips, tmp_path / "c.pt", init=resnet_model,
              config=TrainConfig(**TINY, encoder_weights=str(resnet_model)))
    # a 4-band dataset for a 3-band model
    import rasterio

    four = tmp_path / "four"
    (four / "images").mkdir(parents=True)
    (four / "masks").mkdir()
    for name in ("a", "b"):
        profile = dict(driver="GTiff", width=64, height=64, dtype="uint8",
                       transform=rasterio.Affine(0.5, 0, 0, 0, -0.5, 64), crs="EPSG:32633")
        with rasterio.open(four / "images" / f"{name}.tif", "w", count=4, **profile) as dst:
            dst.write(np.random.default_rng(0).integers(0, 255, (4, 64, 64), np.uint8))
        with rasterio.open(four / "masks" / f"{name}.tif", "w", count=1, **profile) as dst:
            dst.write(np.tile(np.arange(64) % 3, (64, 1)).astype(np.uint8)[None])
    with pytest.raises(CheckpointError, match="reads 3 bands but the chips have 4.*without "
                                              "--init"):
        train(four, tmp_path / "d.pt", init=resnet_model,
              config=TrainConfig(**TINY, val_fraction=0.0))


def test_cli_trains_and_fine_tunes_resnet_unet(chips: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from geounet.cli.main import cli

    base = ["train", str(chips), "--epochs", "1", "--batch-size", "4", "--no-time-limit",
            "--device", "cpu"]
    first = CliRunner().invoke(cli, base + [
        "--out", str(tmp_path / "m.pt"), "--architecture", "resnet-unet", "--encoder",
        "resnet18", "--decoder-channels", "16,16,16,8,8"])
    assert first.exit_code == 0, first.output
    assert read_checkpoint(tmp_path / "m.pt")["card"]["architecture"]["name"] == "resnet-unet"
    tuned = CliRunner().invoke(cli, base + ["--out", str(tmp_path / "ft.pt"), "--init",
                                            str(tmp_path / "m.pt"), "--freeze-encoder-epochs",
                                            "1"])
    assert tuned.exit_code == 0, tuned.output
    card = read_checkpoint(tmp_path / "ft.pt")["card"]
    assert card["architecture"]["decoder_channels"] == [16, 16, 16, 8, 8]
    assert "fine-tuned from m.pt" in card["description"]
    wrong = CliRunner().invoke(cli, base + ["--out", str(tmp_path / "x.pt"), "--init",
                                            str(tmp_path / "m.pt"), "--classes",
                                            "background,buildings"])
    assert wrong.exit_code == 1 and "--classes" in wrong.output
    assert "Traceback" not in wrong.output


# ---- prediction --------------------------------------------------------------------------
def test_predict_with_resnet_checkpoint_is_chunk_invariant(resnet_model: Path,
                                                           make_scene: Any,
                                                           tmp_path: Path) -> None:
    from geounet.output import open_prediction
    from geounet.run import pipeline

    scene = make_scene(150, 173)
    outs = []
    for i, chunk in enumerate((64, 128, 192)):
        out = tmp_path / f"p{i}.zarr"
        result = pipeline.predict(scene, out, model=resnet_model, chunk_size=chunk,
                                  tile_size=192, client="threads", precision="fp32",
                                  probability_dtype="float32", device="cpu")
        assert result.pixels == 150 * 173
        probs = open_prediction(out).probabilities.values
        np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
        outs.append(probs)
    # 192 covers the scene in one chunk: chunked output == whole-scene output
    for other in outs[:-1]:
        np.testing.assert_allclose(other, outs[-1], atol=1e-6, rtol=0)
    gpkg = tmp_path / "objects.gpkg"
    pipeline.segment(scene, gpkg, model=resnet_model, chunk_size=64, tile_size=192,
                     client="threads", precision="fp32", device="cpu")
    assert gpkg.exists()


def test_onnx_engine_runs_the_resnet_checkpoint(resnet_model: Path) -> None:
    pytest.importorskip("onnxruntime")
    from geounet.engine.runner import ModelRunner

    net, card = load_checkpoint(resnet_model)
    x = np.random.default_rng(0).normal(size=(2, 3, 96, 128)).astype(np.float32)
    torch_out = ModelRunner(net, card, device="cpu", precision="fp32").forward(x)
    onnx_out = ModelRunner(net, card, device="cpu", precision="fp32", engine="onnxruntime",
                           checkpoint=resnet_model).forward(x)
    np.testing.assert_allclose(onnx_out, torch_out, atol=1e-4, rtol=0)


def test_training_tiles_follow_the_resnet_size_rules() -> None:
    from geounet.errors import TileSizeError
    from geounet.training.dataset import SampleSpec
    from geounet.training.prepare import sample_spec

    arch = ResNetUNetConfig(encoder="resnet18")
    assert sample_spec(arch, 100, None) == SampleSpec(128, 128, 0)  # rounded up to 32s
    assert sample_spec(arch, 64, None) == SampleSpec(64, 64, 0)
    with pytest.raises(TileSizeError, match="multiples of 32.*96 or 128"):
        sample_spec(arch, 64, 100)
