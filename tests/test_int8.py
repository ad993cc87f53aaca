"""Tests for int8 inference (geounet.engine.quantize), the CPU rules that pick it
(geounet.environment, geounet.engine.execution) and ``engine auto``'s fallback to torch.

Exactness per precision (ARCHITECTURE invariants 1 and 2): an int8 model's tiled output equals
its whole-scene output, each tile runs once, and chunk sizes change nothing. int8 differs from
fp32 (that is the point), so it is compared with fp32 only by a bound."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from geounet import environment
from geounet.engine import backends as engines
from geounet.engine import quantize
from geounet.engine.execution import INT8_AUTO_MIN_PIXELS
from geounet.engine.inference import (
    ModelRunner,
    clear_runner_cache,
    get_runner,
    predict_array,
    predict_tiled,
)
from geounet.engine.runner import resolve_execution, resolve_precision
from geounet.engine.tiling import plan_tiles
from geounet.errors import EngineError, InputError
from geounet.model import save_checkpoint
from geounet.raster import open_scene, read_window
from tests.test_inference import make_runner

INT8_ENGINES = [
    pytest.param(name, marks=pytest.mark.skipif(
        not (engines.engine_installed(name) and engines.engine_installed("onnxruntime")),
        reason=f"{name} (or onnxruntime's quantizer) is not installed"))
    for name in ("onnxruntime", "openvino")
]

AVX2 = "fpu sse4_2 avx avx2 fma bmi2"
CPUINFO = {  # /proc/cpuinfo "flags" lines of real CPU families (trimmed): (line, VNNI, AMX, bf16)
    "Zen 2 / Skylake client (AVX2)": (AVX2, False, False, False),
    "Skylake-SP (AVX-512, no VNNI)": (AVX2 + " avx512f avx512bw avx512vl", False, False, False),
    "Cascade Lake (AVX512-VNNI)": (AVX2 + " avx512f avx512bw avx512_vnni", True, False, False),
    "Zen 4 (VNNI, bf16; this machine)": (AVX2 + " avx512f avx512_vnni avx_vnni avx512_bf16",
                                         True, False, True),
    "Alder Lake (AVX-VNNI only)": (AVX2 + " avx_vnni", True, False, False),
    "Sapphire Rapids (AMX)": (AVX2 + " avx512f avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16",
                              True, True, True),
    "Graviton (ARM)": (None, False, False, False),
}


def _flags(name: str) -> frozenset[str]:
    line = CPUINFO[name][0]
    if line is None:
        text = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 asimddp\n"
    else:
        text = (f"processor\t: 0\nvendor_id\t: X\nflags\t\t: {line}\n\nprocessor\t: 1\n"
                f"flags\t: {line}\n")
    return environment.parse_cpu_flags(text)


@pytest.fixture(autouse=True)
def _fresh_runners() -> None:
    clear_runner_cache()
    yield
    clear_runner_cache()


def _checkpoint(folder: Path, padding: str = "valid", depth: int = 2, seed: int = 0,
                batch_norm: bool = False) -> Path:
    runner = make_runner(depth=depth, padding=padding, seed=seed, base=8, batch_norm=batch_norm)
    return save_checkpoint(folder / f"{padding}{depth}-{seed}-{batch_norm}.pt",
                           runner.model.float(), runner.card)


# ---- the CPU rules --------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CPUINFO))
def test_cpu_flags_and_the_int8_rule_per_cpu(name: str) -> None:
    """VNNI/AMX are read from cpuinfo text, and int8 is 'faster' exactly where one is present."""
    flags = _flags(name)
    line, vnni, amx, bf16 = CPUINFO[name]
    assert environment.has_vnni(flags) == vnni
    assert environment.has_amx(flags) == amx
    assert environment.int8_is_faster(flags) == (vnni or amx)
    assert environment.native_bf16(flags) == bf16
    assert ("AVX2" in environment.cpu_features(flags)) == (line is not None)
    assert ("NEON" in environment.cpu_features(flags)) == (line is None)


@pytest.mark.parametrize("name", list(CPUINFO))
def test_precision_auto_per_cpu_and_engine(name: str) -> None:
    """``auto``: int8 on VNNI/AMX for an int8 engine on a scene large enough; else bf16
    where native and the engine runs it (not ONNX Runtime); else fp32."""
    import torch

    flags = _flags(name)
    cpu = torch.device("cpu")
    int8 = environment.int8_is_faster(flags)
    bf16 = environment.native_bf16(flags)
    big, small = INT8_AUTO_MIN_PIXELS, INT8_AUTO_MIN_PIXELS - 1
    for engine in ("openvino", "onnxruntime"):
        got = resolve_precision("auto", cpu, engine, big, flags=flags)
        assert got == ("int8" if int8 else "bf16" if bf16 and engine == "openvino" else "fp32")
        for pixels in (0, small):  # no scene, or one too small for calibration to pay off
            assert resolve_precision("auto", cpu, engine, pixels, flags=flags) == (
                "bf16" if bf16 and engine == "openvino" else "fp32")
        assert resolve_precision("int8", cpu, engine, 0, flags=flags) == "int8"  # asked for
    torch_choice = resolve_precision("auto", cpu, "torch", big, flags=flags)
    assert torch_choice == ("bf16" if bf16 else "fp32")  # torch never runs int8


def test_engine_auto_and_int8_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = {"torch", "onnxruntime", "openvino"}
    monkeypatch.setattr(engines, "engine_installed", lambda name: name in installed)
    flags = _flags("Cascade Lake (AVX512-VNNI)")
    assert engines.resolve_engine("auto", "cpu", flags, precision="int8") == "openvino"
    assert engines.resolve_engine("auto", "cpu", flags, precision="auto") == "openvino"
    # the scene's size: below ENGINE_AUTO_MIN_PIXELS torch starts faster (int8 asked: no)
    small, big = engines.ENGINE_AUTO_MIN_PIXELS - 1, engines.ENGINE_AUTO_MIN_PIXELS
    assert engines.resolve_engine("auto", "cpu", flags, "auto", scene_pixels=small) == "torch"
    assert engines.resolve_engine("auto", "cpu", flags, "fp32", scene_pixels=big) == "openvino"
    assert engines.resolve_engine("auto", "cpu", flags, "int8", scene_pixels=small) == "openvino"
    installed.discard("openvino")
    assert engines.resolve_engine("auto", "cpu", flags, precision="int8") == "onnxruntime"
    assert engines.resolve_engine("onnxruntime", "cpu", flags, precision="int8") == "onnxruntime"
    with pytest.raises(EngineError, match="not 'torch'; use --engine auto"):
        engines.resolve_engine("torch", "cpu", flags, precision="int8")
    with pytest.raises(EngineError, match="runs on the CPU"):
        engines.resolve_engine("auto", "cuda", flags, precision="int8")
    installed.discard("onnxruntime")
    with pytest.raises(EngineError, match=r"pip install geounet\[onnx\]"):
        engines.resolve_engine("auto", "cpu", flags, precision="int8")


def test_onnxruntime_with_precision_auto_runs_on_a_bf16_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: ``--engine onnxruntime`` with the default precision failed on a bf16 CPU
    (auto -> bf16, which ONNX Runtime refuses); now auto resolves per engine."""
    if not engines.engine_installed("onnxruntime"):
        pytest.skip("onnxruntime is not installed")
    bf16_no_vnni = frozenset({"avx2", "avx512f", "avx512_bf16"})
    monkeypatch.setattr(environment, "cpu_flags", lambda: bf16_no_vnni)
    choice = resolve_execution("onnxruntime", "auto", "cpu", INT8_AUTO_MIN_PIXELS)
    assert (choice.engine, choice.precision) == ("onnxruntime", "fp32")
    choice = resolve_execution("auto", "auto", "cpu", INT8_AUTO_MIN_PIXELS)
    assert choice.precision == ("bf16" if choice.engine in ("openvino", "torch") else "fp32")
    assert "engine auto ->" in choice.reason and "precision auto ->" in choice.reason


# ---- calibration ------------------------------------------------------------------------------
def test_calibration_windows_are_a_fixed_lattice_inside_the_scene() -> None:
    windows = quantize.calibration_windows(1000, 700, 284, 16)
    assert windows == quantize.calibration_windows(1000, 700, 284, 16)
    assert len(windows) == quantize.CALIBRATION_GRID ** 2
    assert len(set(windows)) == len(windows)
    for y0, x0, size in windows:
        assert size == 284 and y0 % 16 == 0 and x0 % 16 == 0
        assert 0 <= y0 <= 1000 - 284 and 0 <= x0 <= 700 - 284
    # a scene smaller than a crop: every crop starts at 0 (the reader mirrors the rest)
    assert set(quantize.calibration_windows(100, 90, 284, 16)) == {(0, 0, 284)}


@pytest.mark.parametrize("engine", INT8_ENGINES)
@pytest.mark.parametrize("depth, batch_norm", [(2, False), (3, True)])
def test_int8_valid_tiling_is_exact(make_scene: Callable[..., Path], tmp_path: Path,
                                    engine: str, depth: int, batch_norm: bool) -> None:
    """ARCHITECTURE invariant 2 at int8: tiled == whole-scene inference with the same int8
    model (1e-5) at chunk sizes that are and are not whole tile cores, each tile once; and it
    really is another computation than fp32 (differs, but boundedly)."""
    path = make_scene(150, 173)
    checkpoint = _checkpoint(tmp_path, depth=depth, batch_norm=batch_norm)
    info = open_scene(path)
    runner = get_runner(checkpoint, "cpu", "int8", engine=engine, calibration=info)
    assert (runner.engine, runner.precision) == (engine, "int8")
    pixels, valid = read_window(info, 0, 0, info.height, info.width, bands=runner.card.bands)
    whole = predict_array(pixels, runner, valid)
    a = runner.config.alignment
    for chunk_size in (8 * a, 13 * a):
        grid = plan_tiles(runner.config, info.height, info.width, chunk_size=chunk_size)
        before = runner.tiles
        probs, _ = predict_tiled(info, grid, runner)
        np.testing.assert_allclose(probs, whole, atol=1e-5, rtol=0)
        assert runner.tiles - before == grid.tile_rows * grid.tile_cols  # each tile once
    fp32 = predict_array(pixels, get_runner(checkpoint, "cpu", "fp32", engine="torch"), valid)
    diff = np.abs(whole - fp32)
    assert 1e-4 < diff.max() < 0.5
    assert (whole.argmax(0) == fp32.argmax(0)).mean() > 0.9


@pytest.mark.parametrize("engine", INT8_ENGINES)
def test_int8_same_padding_is_invariant_to_chunk_size(
    make_scene: Callable[..., Path], tmp_path: Path, engine: str
) -> None:
    path = make_scene(190, 170)
    info = open_scene(path)
    runner = get_runner(_checkpoint(tmp_path, padding="same"), "cpu", "int8", engine=engine,
                        calibration=info)
    results = [predict_tiled(info, plan_tiles(runner.config, info.height, info.width,
                                              chunk_size=c, tile_size=96), runner)[0]
               for c in (64, 128, 192)]
    for other in results[1:]:
        np.testing.assert_allclose(other, results[0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("engine", INT8_ENGINES)
def test_int8_pipeline_chunked_equals_whole(make_scene: Callable[..., Path], tmp_path: Path,
                                            engine: str) -> None:
    """``predict(precision="int8")`` calibrates on the scene it predicts: two chunk sizes give
    the same probabilities, equal to whole-scene inference with that scene's int8 model."""
    from geounet.output import open_prediction
    from geounet.run import pipeline

    scene = make_scene(150, 173)
    checkpoint = _checkpoint(tmp_path)
    outs = []
    for chunk in (40, 100):
        out = tmp_path / f"p{chunk}.zarr"
        pipeline.predict(scene, out, model=checkpoint, chunk_size=chunk, client="threads",
                         precision="int8", engine=engine, probability_dtype="float32")
        outs.append(open_prediction(out).probabilities.values)
    np.testing.assert_allclose(outs[1], outs[0], atol=1e-6, rtol=0)
    info = open_scene(scene)
    runner = get_runner(checkpoint, "cpu", "int8", engine=engine, calibration=info)
    pixels, valid = read_window(info, 0, 0, info.height, info.width, bands=runner.card.bands)
    np.testing.assert_allclose(outs[0], predict_array(pixels, runner, valid), atol=1e-5, rtol=0)


@pytest.mark.parametrize("engine", INT8_ENGINES)
def test_int8_model_is_cached_per_calibration_and_bounded(
    make_scene: Callable[..., Path], tmp_path: Path, engine: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One quantization per (checkpoint, calibration pixels): a second process-level load of
    the same scene reuses the file; another scene makes another; at most MAX_CACHED are kept;
    no temporary file or folder is left."""
    checkpoint = _checkpoint(tmp_path, seed=5)
    scenes = [open_scene(make_scene(120 + 10 * i, 130, seed=i)) for i in range(3)]
    before = quantize.quantize_count()
    first = get_runner(checkpoint, "cpu", "int8", engine=engine, calibration=scenes[0])
    assert get_runner(checkpoint, "cpu", "int8", engine=engine, calibration=scenes[0]) is first
    clear_runner_cache()
    again = get_runner(checkpoint, "cpu", "int8", engine=engine, calibration=scenes[0])
    assert again is not first and again.backend.path == first.backend.path
    assert quantize.quantize_count() - before == 1
    monkeypatch.setattr(quantize, "MAX_CACHED", 2)
    paths = {first.backend.path}
    for info in scenes[1:]:
        paths.add(get_runner(checkpoint, "cpu", "int8", engine=engine,
                             calibration=info).backend.path)
    assert len(paths) == 3 and quantize.quantize_count() - before == 3
    cache = first.backend.path.parent
    assert len(list(cache.glob("*-int8-*.onnx"))) == 2
    assert not [p for p in cache.iterdir() if p.name.startswith((".part-", ".int8-"))]


def test_int8_needs_pixels_to_calibrate_on(tmp_path: Path) -> None:
    if not engines.engine_installed("onnxruntime"):
        pytest.skip("onnxruntime is not installed")
    runner = make_runner()
    with pytest.raises(InputError, match="needs pixels to calibrate on"):
        ModelRunner(runner.model, runner.card, device="cpu", precision="int8",
                    engine="onnxruntime")
    with pytest.raises(EngineError, match="not 'torch'"):
        ModelRunner(runner.model, runner.card, device="cpu", precision="int8", engine="torch")


def test_int8_from_an_array_calibration(tmp_path: Path) -> None:
    """A model built in memory, calibrated on raw pixels (C, H, W): deterministic (two runners
    give bit-identical outputs)."""
    if not engines.engine_installed("onnxruntime"):
        pytest.skip("onnxruntime is not installed")
    base = make_runner(depth=2, base=8)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, 200, 180), dtype=np.uint8)
    runs = [ModelRunner(base.model, base.card, device="cpu", precision="int8",
                        engine="onnxruntime", calibration=pixels) for _ in range(2)]
    x = runs[0].normalize(pixels)[None]
    np.testing.assert_array_equal(runs[0].forward(x), runs[1].forward(x))


# ---- engine auto falls back --------------------------------------------------------------
def test_engine_auto_falls_back_to_torch_when_the_engine_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """An optional engine that fails to open under ``auto`` is logged and torch runs (the
    same numbers as torch); asked for by name, the failure is the error."""
    from geounet.engine import runner as runner_module

    real = engines.make_backend

    def broken(engine: str, spec: engines.BackendSpec) -> engines.Backend:
        if engine != "torch":
            raise RuntimeError("simulated export failure")
        return real(engine, spec)

    monkeypatch.setattr(environment, "cpu_flags", lambda: frozenset({"avx2"}))
    monkeypatch.setattr(engines, "engine_installed", lambda name: True)
    monkeypatch.setattr(engines, "make_backend", broken)
    base = make_runner(depth=2, base=8)
    with caplog.at_level(logging.WARNING, logger=runner_module.__name__):
        runner = ModelRunner(base.model, base.card, device="cpu", precision="fp32",
                             engine="auto")
    assert runner.engine == "torch" and isinstance(runner.backend, engines.TorchBackend)
    assert "simulated export failure" in caplog.text and "running torch" in caplog.text
    assert "failed to open" in runner.describe()
    x = np.random.default_rng(0).normal(size=(1, 3, 92, 92)).astype(np.float32)
    np.testing.assert_array_equal(runner.forward(x), base.forward(x))
    with pytest.raises(RuntimeError, match="simulated"):
        ModelRunner(base.model, base.card, device="cpu", precision="fp32", engine="openvino")


@pytest.mark.skipif(not engines.engine_installed("openvino"), reason="openvino is not installed")
def test_openvino_is_imported_without_its_telemetry(tmp_path: Path) -> None:
    """``import openvino`` sends a usage-telemetry event from its conversion tool (a forked
    process); geounet's import skips the tool: no telemetry module, no fork, the runtime
    works, and the tool can still be imported on purpose."""
    import subprocess
    import sys

    code = (
        "import os, sys; forks = []; os.register_at_fork(before=lambda: forks.append(1)); "
        "from geounet.engine.export import import_openvino; ov = import_openvino(); "
        "ov.Core().available_devices; "
        "print(len(forks), any('telemetry' in m for m in sys.modules), "
        "'openvino.tools.ovc' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120, check=True).stdout.split()
    assert out == ["0", "False", "False"], out


def test_the_log_says_which_engine_runs_and_why(make_scene: Callable[..., Path],
                                                tmp_path: Path) -> None:
    """`geounet predict` (default --engine auto) logs the engine and precision it resolved
    and the rule's reason: a small scene runs torch because other engines start slower."""
    from click.testing import CliRunner

    from geounet.cli.main import cli

    scene = make_scene(70, 60)
    result = CliRunner().invoke(cli, ["predict", str(scene), "-o", str(tmp_path / "p.zarr"),
                                      "--model", str(_checkpoint(tmp_path)), "--in-process",
                                      "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    assert "engine torch, precision fp32 on cpu" in result.output
    assert "engine auto -> torch" in result.output and "under 4.2 MP" in result.output


def test_seven_bit_weights_for_cpus_without_vnni(tmp_path: Path) -> None:
    """Without VNNI/AMX the weights are quantized to 7 bits (ONNX Runtime's advice for AVX2):
    a separate cached model (its own digest) that still runs close to the 8-bit one."""
    if not engines.engine_installed("onnxruntime"):
        pytest.skip("onnxruntime is not installed")
    assert quantize.reduce_range_for(_flags("Zen 2 / Skylake client (AVX2)"))
    assert not quantize.reduce_range_for(_flags("Cascade Lake (AVX512-VNNI)"))
    checkpoint = _checkpoint(tmp_path, seed=9)
    base = make_runner(depth=2, base=8, seed=9)
    rng = np.random.default_rng(1)
    batch = np.stack([base.normalize(rng.integers(0, 256, (3, 92, 92)).astype(np.uint8))
                      for _ in range(3)])
    paths = [quantize.int8_model(checkpoint, base.model, 3, "onnxruntime", batch,
                                 reduce_range=r) for r in (False, True)]
    assert paths[0] != paths[1] and all(p.is_file() for p in paths)
    outs = [engines.OnnxRuntimeBackend(p, 1)(batch[:1]) for p in paths]
    assert 0 < np.abs(outs[0] - outs[1]).max() < 1.0


def test_int8_with_torch_is_a_clean_error_before_torch_loads(tmp_path: Path) -> None:
    """An option mistake (int8 on the torch engine) is named, with the fix, before torch is
    imported and before the scene is opened."""
    import subprocess
    import sys

    code = (
        "import sys; from click.testing import CliRunner; from geounet.cli.main import cli; "
        "r = CliRunner().invoke(cli, ['predict', 'missing.tif', '--out', 'x.zarr', "
        "'--precision', 'int8', '--engine', 'torch']); "
        "print(r.exit_code, 'torch' in sys.modules); print(r.output)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, timeout=60).stdout
    status, torch_loaded = out.splitlines()[0].split()
    assert status == "1" and torch_loaded == "False", out
    assert "precision 'int8' runs on the onnxruntime or openvino engine" in out
    assert "--engine auto" in out and "Traceback" not in out
