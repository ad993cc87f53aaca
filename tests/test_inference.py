"""Tests for geounet.engine.inference: exact tiled inference, blending, nodata, runner, precision."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from geounet.engine.inference import (
    ModelRunner,
    classify,
    clear_runner_cache,
    compute_chunk,
    get_runner,
    measure_seam_error,
    predict_array,
    predict_chunk,
    predict_tiled,
    resolve_device,
    resolve_precision,
    runner_load_count,
)
from geounet.engine.tiling import plan_tiles
from geounet.errors import DeviceError, EngineError, InputError
from geounet.model import ModelCard, UNet, UNetConfig, save_checkpoint
from geounet.raster import open_scene, read_window

CLASSES = ("background", "buildings", "roads")


def make_runner(
    depth: int = 2,
    padding: str = "valid",
    base: int = 4,
    dtype: str = "uint8",
    seed: int = 0,
    precision: str = "fp32",
    batch_norm: bool = False,
) -> ModelRunner:
    config = UNetConfig(depth=depth, base_channels=base, padding=padding,  # type: ignore[arg-type]
                        batch_norm=batch_norm)
    torch.manual_seed(seed)
    model = UNet(config)
    if batch_norm:  # non-trivial statistics and affine terms, as after training
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.data.uniform_(0.5, 1.5)
                module.bias.data.uniform_(-0.2, 0.2)
    top = 255.0 if dtype == "uint8" else 4095.0
    card = ModelCard(
        architecture=config,
        bands=(1, 2, 3),
        mean=(0.45 * top, 0.5 * top, 0.55 * top),
        std=(0.2 * top, 0.25 * top, 0.3 * top),
        classes=CLASSES,
        pixel_size=0.5,
        dtype=dtype,
        value_range=(0.0, top),
    )
    return ModelRunner(model, card, device="cpu", precision=precision)  # type: ignore[arg-type]


def _whole(path: Path, runner: ModelRunner) -> tuple[np.ndarray, np.ndarray]:
    info = open_scene(path)
    pixels, valid = read_window(info, 0, 0, info.height, info.width, bands=runner.card.bands)
    return predict_array(pixels, runner, valid), valid


@pytest.mark.parametrize("depth", [2, 3])
def test_valid_tiling_is_exact(make_scene: Callable[..., Path], depth: int) -> None:
    """ARCHITECTURE invariant 2: tiled output == whole-scene inference on the mirrored scene."""
    path = make_scene(301, 257)
    runner = make_runner(depth=depth)
    whole, _ = _whole(path, runner)
    info = open_scene(path)
    a = runner.config.alignment
    for chunk_size in (8 * a, 16 * a, 24 * a):
        grid = plan_tiles(runner.config, info.height, info.width, chunk_size=chunk_size)
        probs, valid = predict_tiled(info, grid, runner)
        assert valid.all() and probs.dtype == np.float32
        np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
        np.testing.assert_allclose(probs, whole, atol=1e-5, rtol=0)


@pytest.mark.parametrize("depth", [2, 3])
def test_batch_norm_model_keeps_valid_tiling_exact(make_scene: Callable[..., Path],
                                                   depth: int) -> None:
    """The default training recipe's batch norm (eval mode: a per-channel affine map) keeps
    ARCHITECTURE invariant 2: tiled output == whole-scene inference, for any chunk and batch size."""
    path = make_scene(301, 257)
    runner = make_runner(depth=depth, batch_norm=True, seed=depth)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in runner.model.modules())
    whole, _ = _whole(path, runner)
    info = open_scene(path)
    a = runner.config.alignment
    for chunk_size, batch in [(8 * a, 1), (16 * a, 3), (24 * a, 2)]:
        grid = plan_tiles(runner.config, info.height, info.width, chunk_size=chunk_size)
        probs, valid = predict_tiled(info, grid, runner, batch_size=batch)
        assert valid.all()
        np.testing.assert_allclose(probs, whole, atol=1e-5, rtol=0)


def test_valid_tiling_independent_of_chunk_and_batch(make_scene: Callable[..., Path]) -> None:
    """ARCHITECTURE invariant 1 with one tile grid: chunk size and batch size change nothing."""
    path = make_scene(150, 131)
    runner = make_runner(depth=2)
    info = open_scene(path)
    cfg = runner.config
    outs = []
    for chunk_size, batch in [(32, 1), (64, 3), (96, 2), (256, 4)]:
        grid = plan_tiles(cfg, info.height, info.width, chunk_size=chunk_size, tile_size=72)
        outs.append(predict_tiled(info, grid, runner, batch_size=batch)[0])
    for out in outs[1:]:
        np.testing.assert_allclose(out, outs[0], atol=1e-6, rtol=0)


def test_same_padding_blend_independent_of_chunk_size(make_scene: Callable[..., Path]) -> None:
    """ARCHITECTURE invariants 1 and 3: blended same-padding output ignores the chunk size."""
    path = make_scene(301, 257)
    runner = make_runner(depth=2, padding="same")
    info = open_scene(path)
    outs = []
    for chunk_size in (96, 160, 320):
        grid = plan_tiles(runner.config, info.height, info.width, chunk_size=chunk_size,
                          tile_size=128)
        probs, valid = predict_tiled(info, grid, runner)
        assert valid.all()
        np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
        outs.append(probs)
    for out in outs[1:]:
        np.testing.assert_allclose(out, outs[0], atol=1e-6, rtol=0)


def _holey_scene(tmp_path: Path, height: int, width: int) -> Path:
    """A scene with nodata: one whole 64-px chunk, a band across a seam and a corner."""
    from geounet.testing import write_scene

    return write_scene(tmp_path / "holey.tif", height, width, nodata=0, seed=3,
                       holes=[np.s_[64:128, 64:128], np.s_[150:170, :90], np.s_[-30:, -40:]])


def test_same_padding_seam_exchange_is_bit_identical(tmp_path: Path) -> None:
    """Issue 11: each tile run once (seam exchange between chunks) gives bit for bit what
    blending every tile touching each chunk gives, for every chunk size, nodata included."""
    path = _holey_scene(tmp_path, 230, 205)
    runner = make_runner(depth=2, padding="same")
    info = open_scene(path)
    outs = []
    for chunk_size in (64, 128, 192, 256):
        grid = plan_tiles(runner.config, info.height, info.width, chunk_size=chunk_size,
                          tile_size=128)
        assert grid.chunk_size == chunk_size and grid.stride == 64
        probs, valid = predict_tiled(info, grid, runner)
        alone = np.zeros_like(probs)
        alone_valid = np.zeros_like(valid)
        for chunk in grid.chunks():
            result = predict_chunk(info, chunk, grid, runner)
            if result is not None:
                alone[:, chunk.y0 : chunk.y1, chunk.x0 : chunk.x1] = result[0]
                alone_valid[chunk.y0 : chunk.y1, chunk.x0 : chunk.x1] = result[1]
        np.testing.assert_array_equal(probs, alone)
        np.testing.assert_array_equal(valid, alone_valid)
        outs.append(probs)
    assert 0 < valid.mean() < 1
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])


def test_same_padding_runs_each_tile_once(tmp_path: Path) -> None:
    """Compute-once: over all chunks the model sees each tile of the grid once (the chunks
    around the nodata chunk still get their seams from it: see the bit-identity test)."""
    path = _holey_scene(tmp_path, 230, 205)
    runner = make_runner(depth=2, padding="same")
    info = open_scene(path)
    grid = plan_tiles(runner.config, info.height, info.width, chunk_size=64, tile_size=128)
    seen: list[tuple[int, ...]] = []
    forward = runner.forward

    def counting(batch: np.ndarray, tta: str = "none") -> np.ndarray:
        seen.extend([tuple(batch.shape)] * batch.shape[0])
        return forward(batch, tta)  # type: ignore[arg-type]

    runner.forward = counting  # type: ignore[method-assign]
    pieces = {}
    for chunk in grid.chunks():
        result = compute_chunk(info, chunk, grid, runner)
        pieces[(chunk.row, chunk.col)] = () if result is None else result.pieces
    assert len(seen) == grid.tile_rows * grid.tile_cols  # no tile of this scene is all nodata
    before = len(seen)
    predict_tiled(info, grid, runner)
    assert len(seen) - before == grid.tile_rows * grid.tile_cols
    # the chunk whose core is all nodata still ran its tiles and gave its neighbours pieces
    assert pieces[(1, 1)]


def test_same_padding_seam_error_is_measured(make_scene: Callable[..., Path]) -> None:
    path = make_scene(200, 190)
    runner = make_runner(depth=2, padding="same")
    info = open_scene(path)
    grid = plan_tiles(runner.config, info.height, info.width, chunk_size=128, tile_size=128)
    hann = measure_seam_error(info, grid, runner, window="hann")
    uniform = measure_seam_error(info, grid, runner, window="uniform")
    assert 0 < hann.max_abs_diff < 0.1 and hann.class_agreement > 0.99
    # the taper is what removes seams: a flat window is clearly worse
    assert hann.mean_abs_diff < 0.5 * uniform.mean_abs_diff
    # a valid-padding net has no seam at all
    valid_runner = make_runner(depth=2)
    vgrid = plan_tiles(valid_runner.config, info.height, info.width, chunk_size=64)
    assert measure_seam_error(info, vgrid, valid_runner).max_abs_diff < 1e-5


def test_nodata_is_invalid_and_probability_zero(make_scene: Callable[..., Path]) -> None:
    path = make_scene(140, 150, nodata=0, nodata_border=9)
    runner = make_runner(depth=2)
    info = open_scene(path)
    grid = plan_tiles(runner.config, info.height, info.width, chunk_size=64)
    probs, valid = predict_tiled(info, grid, runner)
    assert not valid[:9].any() and not valid[:, -9:].any() and valid[9:-9, 9:-9].all()
    assert (probs[:, ~valid] == 0).all()
    whole, _ = _whole(path, runner)
    np.testing.assert_allclose(probs, whole, atol=1e-5, rtol=0)
    mask = classify(probs, valid=valid)
    assert (mask[~valid] == 255).all() and (mask[valid] < 3).all()


def test_all_nodata_chunk_skips_model(tmp_path: Path) -> None:
    import rasterio

    data = np.full((3, 100, 100), 120, np.uint8)
    data[:, :64, :64] = 0  # chunk (0, 0) is entirely nodata
    path = tmp_path / "holes.tif"
    with rasterio.open(path, "w", driver="GTiff", height=100, width=100, count=3,
                       dtype="uint8", nodata=0) as dst:
        dst.write(data)
    runner = make_runner(depth=2)
    info = open_scene(path)
    grid = plan_tiles(runner.config, 100, 100, chunk_size=64)
    before = runner.calls
    assert predict_chunk(info, grid.chunk(0, 0), grid, runner) is None
    assert runner.calls == before
    result = predict_chunk(info, grid.chunk(0, 1), grid, runner)
    assert result is not None and runner.calls > before


def test_uint16_normalization_from_card(make_scene: Callable[..., Path]) -> None:
    path = make_scene(80, 90, dtype="uint16")
    runner = make_runner(depth=2, dtype="uint16")
    info = open_scene(path)
    pixels, valid = read_window(info, 0, 0, 80, 90)
    x = runner.normalize(pixels, valid)
    want = (pixels.astype(np.float64) - np.array(runner.card.mean)[:, None, None]) / np.array(
        runner.card.std
    )[:, None, None]
    np.testing.assert_allclose(x, want, rtol=1e-5, atol=1e-5)
    assert x.dtype == np.float32
    # not rescaled per tile: the same pixel gives the same input wherever it is
    x2 = runner.normalize(pixels[:, :10, :10])
    np.testing.assert_array_equal(x2, x[:, :10, :10])
    with pytest.raises(InputError, match="bands"):
        runner.normalize(pixels[:2])


def test_get_runner_loads_once(tmp_path: Path) -> None:
    runner = make_runner(depth=2)
    path = save_checkpoint(tmp_path / "m.pt", runner.model.float(), runner.card)
    clear_runner_cache()
    start = runner_load_count()
    first = get_runner(path, "cpu", "fp32")
    for _ in range(3):
        assert get_runner(path, "cpu", "fp32") is first
    assert runner_load_count() == start + 1
    other = get_runner(path, "cpu", "bf16")
    assert other is not first and runner_load_count() == start + 2
    assert other.precision == "bf16"
    clear_runner_cache()


def test_get_runner_bands_share_the_loaded_model(tmp_path: Path,
                                                make_scene: Callable[..., Path]) -> None:
    """Other bands give a runner reading those bands from the one loaded model (no reload)."""
    runner = make_runner(depth=2)
    path = save_checkpoint(tmp_path / "m.pt", runner.model.float(), runner.card)
    clear_runner_cache()
    start = runner_load_count()
    base = get_runner(path, "cpu", "fp32")
    swapped = get_runner(path, "cpu", "fp32", bands=(3, 2, 1))
    assert runner_load_count() == start + 1
    assert swapped.model is base.model and swapped.card.bands == (3, 2, 1)
    assert base.card.bands == (1, 2, 3)  # the cached base runner is not changed
    assert get_runner(path, "cpu", "fp32", bands=(3, 2, 1)) is swapped
    assert get_runner(path, "cpu", "fp32", bands=(1, 2, 3)) is base
    info = open_scene(make_scene(40, 40))
    grid = plan_tiles(base.config, 40, 40, chunk_size=64)
    chunk = grid.chunks()[0]
    a, _ = predict_chunk(info, chunk, grid, base)
    b, _ = predict_chunk(info, chunk, grid, swapped)
    assert not np.allclose(a, b)  # it really reads other bands
    clear_runner_cache()


def test_default_model_is_the_builtin_checkpoint(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from geounet.engine import inference
    from geounet.engine import runner as runner_module
    monkeypatch.setattr(runner_module, "BUILTIN_MODEL", tmp_path / "weights" / "builtin.pt")
    with pytest.raises(InputError, match="--model"):
        inference.default_model_path()
    runner = make_runner(depth=2)
    (tmp_path / "weights").mkdir()
    path = save_checkpoint(tmp_path / "weights" / "builtin.pt", runner.model.float(), runner.card)
    assert inference.default_model_path() == path
    clear_runner_cache()
    assert get_runner(None, "cpu", "fp32").card == runner.card
    clear_runner_cache()


def test_bf16_close_to_fp32(make_scene: Callable[..., Path]) -> None:
    """bf16 autocast changes probabilities little on a small random net (max abs diff noted)."""
    path = make_scene(96, 96)
    fp32 = make_runner(depth=2, base=8, precision="fp32")
    bf16 = ModelRunner(fp32.model, fp32.card, device="cpu", precision="bf16")
    info = open_scene(path)
    pixels, valid = read_window(info, 0, 0, 96, 96)
    a = predict_array(pixels, fp32, valid)
    b = predict_array(pixels, bf16, valid)
    diff = float(np.abs(a - b).max())
    assert 0 < diff < 0.05, diff
    assert (a.argmax(0) == b.argmax(0)).mean() > 0.97


def test_device_and_precision_resolution() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="cuda:N"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA"):
            resolve_device("cuda:0")
    else:
        with pytest.raises(DeviceError, match="does not exist"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("auto", cpu) in ("fp32", "bf16")
    with pytest.raises(DeviceError, match="CUDA"):
        resolve_precision("fp16", cpu)
    with pytest.raises(InputError):
        resolve_precision("int4", cpu)  # type: ignore[arg-type]
    with pytest.raises(EngineError, match="not 'torch'"):
        resolve_precision("int8", cpu)  # torch runs no int8 (tests/test_int8.py: the engines)


def test_classify_threshold_and_nodata() -> None:
    p = np.array(
        [
            [[0.6, 0.2, 0.0]],
            [[0.3, 0.1, 0.0]],
            [[0.1, 0.7, 0.0]],
        ],
        np.float32,
    )
    assert classify(p).tolist() == [[0, 2, 255]]
    assert classify(p, threshold=0.25).tolist() == [[1, 2, 255]]
    assert classify(p, threshold=0.8).tolist() == [[0, 0, 255]]
    as_uint8 = np.round(p * 255).astype(np.uint8)
    assert classify(as_uint8, threshold=0.25).tolist() == [[1, 2, 255]]
    assert classify(p).dtype == np.uint8
    with pytest.raises(InputError):
        classify(p, threshold=1.5)


def test_grid_must_fit_model(make_scene: Callable[..., Path]) -> None:
    runner = make_runner(depth=2)
    info = open_scene(make_scene(64, 64))
    wrong = plan_tiles(UNetConfig(depth=2, padding="same"), 64, 64, chunk_size=32, tile_size=96)
    with pytest.raises(InputError, match="plan_tiles"):
        predict_chunk(info, wrong.chunks()[0], wrong, runner)


@pytest.mark.slow
def test_valid_tiling_exact_on_issue_scene(make_scene: Callable[..., Path]) -> None:
    """The issue's 2999 x 2111 case with a tiny depth-3 net and three chunk sizes."""
    path = make_scene(2999, 2111)
    runner = make_runner(depth=3, base=4)
    whole, _ = _whole(path, runner)
    info = open_scene(path)
    for chunk_size in (256, 512, 1024):
        grid = plan_tiles(runner.config, info.height, info.width, chunk_size=chunk_size)
        probs, _ = predict_tiled(info, grid, runner)
        np.testing.assert_allclose(probs, whole, atol=1e-5, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_runner_matches_cpu(make_scene: Callable[..., Path]) -> None:
    """CUDA path (pinned memory, batching, autocast) gives the CPU probabilities."""
    path = make_scene(150, 131)
    cpu = make_runner(depth=2, base=8)
    info = open_scene(path)
    grid = plan_tiles(cpu.config, info.height, info.width, chunk_size=64, tile_size=72)
    want = predict_tiled(info, grid, cpu)[0]
    import copy

    # fp32 on CUDA may use TF32 convolutions, hence the looser tolerance
    for precision, tol in (("fp32", 1e-2), ("auto", 0.06)):
        gpu = ModelRunner(copy.deepcopy(cpu.model), cpu.card, device="cuda", precision=precision)
        got = predict_tiled(info, grid, gpu, batch_size=8)[0]
        assert np.abs(got - want).max() < tol
