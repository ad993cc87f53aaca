"""Test-time augmentation (``tta``): flips and quarter turns of every tile, probabilities
averaged; exact and chunk-invariant like the plain forward (ARCHITECTURE invariants 1 and 2)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from geounet.cli.main import cli
from geounet.engine.inference import compute_chunk, predict_array, predict_tiled
from geounet.engine.runner import TTA_TRANSFORMS, apply_transform, undo_transform
from geounet.engine.tiling import plan_tiles
from geounet.errors import InputError
from geounet.raster import mirror_pad, open_scene, read_window
from tests.test_inference import make_runner


def _scene_side(runner: object, near: int) -> int:
    """A scene side S for which S + 2 halo is a valid input size: the whole mirrored scene is
    then padded alike on every side, so transforming the raw image commutes with the padding."""
    cfg = runner.config  # type: ignore[attr-defined]
    return cfg.valid_input_sizes(near + 2 * cfg.halo, near + 2 * cfg.halo + cfg.alignment)[0] \
        - 2 * cfg.halo


def test_transforms_are_the_d4_group_and_undo_inverts() -> None:
    """flips: 4 distinct transforms, d4: 8 (every symmetry of the square); undo inverts apply."""
    x = np.arange(2 * 5 * 5, dtype=np.float32).reshape(1, 2, 5, 5)
    images = {name: {apply_transform(x, t).tobytes() for t in ts}
              for name, ts in TTA_TRANSFORMS.items()}
    assert [len(images[n]) for n in ("none", "flips", "d4")] == [1, 4, 8]
    assert images["flips"] == {x.tobytes(), x[..., ::-1].tobytes(), x[..., ::-1, :].tobytes(),
                               x[..., ::-1, ::-1].tobytes()}
    assert images["flips"] < images["d4"]
    for t in TTA_TRANSFORMS["d4"]:
        np.testing.assert_array_equal(undo_transform(apply_transform(x, t), t), x)


@pytest.mark.parametrize("tta", ["flips", "d4"])
@pytest.mark.parametrize("depth", [2, 3])
def test_tta_is_the_average_over_the_transformed_scene(make_scene: Callable[..., Path],
                                                       tta: str, depth: int) -> None:
    """Tiled TTA == the manual average: transform the whole image, run the model on it
    (whole-scene reference, no TTA), undo, average; 1e-5 as the exactness tests."""
    runner = make_runner(depth=depth, seed=3)
    side = _scene_side(runner, 90)
    info = open_scene(make_scene(side, side))
    pixels, valid = read_window(info, 0, 0, side, side, bands=runner.card.bands)
    manual = np.mean([undo_transform(predict_array(apply_transform(pixels, t), runner,
                                                   apply_transform(valid, t)), t)
                      for t in TTA_TRANSFORMS[tta]], axis=0)
    plain = predict_array(pixels, runner, valid)
    a = runner.config.alignment
    for chunk_size in (4 * a, 9 * a):
        grid = plan_tiles(runner.config, side, side, chunk_size=chunk_size, tile_size=None)
        probs, valid_t = predict_tiled(info, grid, runner, tta=tta)  # type: ignore[arg-type]
        assert valid_t.all()
        np.testing.assert_allclose(probs, manual, atol=1e-5, rtol=0)
    # TTA changes the answer of a random model (so the comparison above can fail)
    assert np.abs(manual - plain).max() > 1e-3
    whole_tta = predict_array(pixels, runner, valid, tta=tta)  # type: ignore[arg-type]
    np.testing.assert_allclose(whole_tta, manual, atol=1e-5, rtol=0)


@pytest.mark.parametrize("tta", ["flips", "d4"])
def test_tta_chunked_equals_whole_on_a_non_square_scene(make_scene: Callable[..., Path],
                                                        tta: str) -> None:
    """Any scene shape, chunk and batch size: tiled TTA == whole-scene TTA (the transformed
    padded array), and each tile is computed once per transform."""
    runner = make_runner(depth=2, seed=1)
    path = make_scene(150, 131)
    info = open_scene(path)
    pixels, valid = read_window(info, 0, 0, info.height, info.width, bands=runner.card.bands)
    whole = predict_array(pixels, runner, valid, tta=tta)  # type: ignore[arg-type]
    n = len(TTA_TRANSFORMS[tta])
    for chunk_size, batch in [(32, 1), (64, 3), (256, 2)]:
        grid = plan_tiles(runner.config, info.height, info.width, chunk_size=chunk_size,
                          tile_size=72)
        before = runner.tiles
        probs, _ = predict_tiled(info, grid, runner, batch_size=batch,
                                 tta=tta)  # type: ignore[arg-type]
        np.testing.assert_allclose(probs, whole, atol=1e-5, rtol=0)
        np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
        assert runner.tiles - before == n * grid.tile_rows * grid.tile_cols


def test_same_padding_tta_is_chunk_invariant(make_scene: Callable[..., Path]) -> None:
    """Same padding (blended tiles): TTA per tile keeps chunk-size invariance bit for bit."""
    runner = make_runner(depth=2, padding="same")
    info = open_scene(make_scene(230, 205))
    outs = []
    for chunk_size in (64, 128, 256):
        grid = plan_tiles(runner.config, info.height, info.width, chunk_size=chunk_size,
                          tile_size=128)
        outs.append(predict_tiled(info, grid, runner, tta="d4")[0])
    for out in outs[1:]:
        np.testing.assert_allclose(out, outs[0], atol=1e-6, rtol=0)


def _symmetrize(model: torch.nn.Module) -> None:
    """Make every spatial kernel invariant under the 8 symmetries of the square: the U-Net
    (valid convolutions, 2x2 pooling, 2x2 transposed convolutions, centre crops) is then
    exactly equivariant to flips and quarter turns."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                w = module.weight
                turns = [torch.rot90(v, k, dims=(-2, -1)) for v in (w, w.flip(-1))
                         for k in range(4)]
                w.copy_(torch.stack(turns).mean(0))


def test_equivariant_model_gives_the_same_output_with_and_without_tta(
        make_scene: Callable[..., Path]) -> None:
    """Sanity: a model that is exactly D4-equivariant gives the same output with TTA."""
    runner = make_runner(depth=2, seed=5)
    _symmetrize(runner.model)
    info = open_scene(make_scene(150, 131))
    grid = plan_tiles(runner.config, info.height, info.width, chunk_size=64, tile_size=72)
    plain, _ = predict_tiled(info, grid, runner)
    assert plain.std(axis=(1, 2)).min() > 1e-4  # not a constant output
    for tta in ("flips", "d4"):
        probs, _ = predict_tiled(info, grid, runner, tta=tta)  # type: ignore[arg-type]
        np.testing.assert_allclose(probs, plain, atol=1e-5, rtol=0)


def test_bad_tta_value_is_refused(make_scene: Callable[..., Path]) -> None:
    runner = make_runner(depth=2)
    info = open_scene(make_scene(100, 100))
    grid = plan_tiles(runner.config, info.height, info.width, chunk_size=64)
    with pytest.raises(InputError, match=r"tta 'd8' is not one of none, flips, d4"):
        compute_chunk(info, grid.chunks()[0], grid, runner, tta="d8")  # type: ignore[arg-type]
    x = runner.normalize(mirror_pad(np.zeros((3, 8, 8), np.uint8), (0, 0), (0, 0)))
    with pytest.raises(InputError, match="tta"):
        runner.forward(x[None], tta="rot")  # type: ignore[arg-type]


def _checkpoint(tmp_path: Path) -> Path:
    from geounet.model import save_checkpoint

    runner = make_runner(depth=2, seed=2)
    return save_checkpoint(tmp_path / "m.pt", runner.model, runner.card)


def test_predict_tta_option_end_to_end(make_scene: Callable[..., Path], tmp_path: Path) -> None:
    """`geounet predict --tta d4` writes the tiled TTA result; the run record names it."""
    import zarr

    scene = make_scene(150, 131)
    model = _checkpoint(tmp_path)
    out = tmp_path / "pred.zarr"
    result = CliRunner().invoke(cli, ["predict", str(scene), "--out", str(out), "--model",
                                      str(model), "--tta", "d4", "--in-process",
                                      "--probability-dtype", "float32", "--chunk-size", "64",
                                      "--device", "cpu", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    probs = np.asarray(zarr.open_group(str(out), mode="r")["probabilities"])
    runner = make_runner(depth=2, seed=2)
    info = open_scene(scene)
    pixels, valid = read_window(info, 0, 0, info.height, info.width, bands=runner.card.bands)
    np.testing.assert_allclose(probs, predict_array(pixels, runner, valid, tta="d4"),
                               atol=1e-5, rtol=0)
    assert np.abs(probs - predict_array(pixels, runner, valid)).max() > 1e-3


@pytest.mark.parametrize("command", ["predict", "segment", "batch"])
def test_cli_refuses_a_bad_tta_value(make_scene: Callable[..., Path], tmp_path: Path,
                                     command: str) -> None:
    scene = str(make_scene(64, 64))
    target = ["--out-dir", str(tmp_path / "b")] if command == "batch" else \
        ["--out", str(tmp_path / ("o.gpkg" if command == "segment" else "o.zarr"))]
    result = CliRunner().invoke(cli, [command, scene, *target, "--tta", "d8"])
    assert result.exit_code == 2
    assert "'d8' is not one of 'none', 'flips', 'd4'" in result.output


def test_library_refuses_a_bad_tta_value(make_scene: Callable[..., Path],
                                         tmp_path: Path) -> None:
    import geounet
    from geounet.batch.job import run_batch

    scene = make_scene(64, 64)
    with pytest.raises(InputError, match="tta 'x' is not one of"):
        geounet.predict(scene, tmp_path / "p.zarr", tta="x")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="tta 'x' is not one of"):
        run_batch([str(scene)], tmp_path / "b", tta="x")  # type: ignore[arg-type]
    assert not (tmp_path / "p.zarr").exists() and not (tmp_path / "b").exists()


def test_resume_with_another_tta_is_refused(make_scene: Callable[..., Path],
                                            tmp_path: Path) -> None:
    """The run record names tta: a resume with another setting would mix outputs."""
    from geounet import output
    from geounet.run.planning import plan_prediction

    scene, model = make_scene(64, 64), _checkpoint(tmp_path)
    plain = plan_prediction(scene, model=model, check_device=False)
    d4 = plan_prediction(scene, model=model, check_device=False, tta="d4")
    assert (plain.runner.tta, d4.runner.tta) == ("none", "d4")
    assert output.changed_settings(plain.run, d4.run) == ["tta"]


def test_batch_runs_every_scene_with_tta(make_scene: Callable[..., Path], tmp_path: Path) -> None:
    """run_batch(tta=) reaches the chunk tasks: its Zarr equals the whole-scene TTA result."""
    import zarr

    from geounet.batch.job import run_batch

    scene, model = make_scene(150, 131, name="s.tif"), _checkpoint(tmp_path)
    result = run_batch([str(scene)], tmp_path / "out", model=model, raster="zarr", tta="flips",
                       probability_dtype="float32", chunk_size=64, client="threads",
                       workers=1, device="cpu", precision="fp32")
    assert result.ok
    probs = np.asarray(zarr.open_group(str(tmp_path / "out" / "s.zarr"),
                                       mode="r")["probabilities"])
    runner = make_runner(depth=2, seed=2)
    pixels, valid = read_window(open_scene(scene), 0, 0, 150, 131, bands=runner.card.bands)
    np.testing.assert_allclose(probs, predict_array(pixels, runner, valid, tta="flips"),
                               atol=1e-5, rtol=0)
