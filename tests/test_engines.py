"""Tests for geounet.engine.backends and geounet.engine.export: the ONNX Runtime / OpenVINO engines behind
ModelRunner, the export cache and the ``auto`` rule. Exactness (ARCHITECTURE invariant 2) is checked for every engine
installed; an engine whose package is missing skips its cases (say so in the report)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from geounet.engine import backends as engines
from geounet.engine import export
from geounet.engine.inference import (
    clear_runner_cache,
    get_runner,
    predict_array,
    predict_tiled,
    runner_load_count,
)
from geounet.engine.tiling import plan_tiles
from geounet.errors import EngineError, InputError
from geounet.model import save_checkpoint
from geounet.raster import open_scene, read_window
from tests.test_inference import make_runner

ENGINES = [  # torch's own exactness tests are in test_inference.py / test_pipeline.py
    pytest.param(name, marks=pytest.mark.skipif(
        not engines.engine_installed(name), reason=f"{name} is not installed"))
    for name in ("onnxruntime", "openvino")
]


def _checkpoint(folder: Path, padding: str = "valid", depth: int = 2, seed: int = 0) -> Path:
    runner = make_runner(depth=depth, padding=padding, seed=seed)
    return save_checkpoint(folder / f"{padding}{depth}-{seed}.pt", runner.model.float(),
                           runner.card)


@pytest.fixture(autouse=True)
def _fresh_runners() -> None:
    clear_runner_cache()
    yield
    clear_runner_cache()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("depth", [2, 3])
def test_valid_tiling_is_exact_with_every_engine(
    make_scene: Callable[..., Path], tmp_path: Path, engine: str, depth: int
) -> None:
    """ARCHITECTURE invariant 2 per engine: tiled == whole-scene inference with that engine
    (1e-5, as the torch tests), at chunk sizes that are and are not whole tile cores."""
    path = make_scene(150, 173)
    runner = get_runner(_checkpoint(tmp_path, depth=depth), "cpu", "fp32", engine=engine)
    assert runner.engine == engine
    info = open_scene(path)
    pixels, valid = read_window(info, 0, 0, info.height, info.width, bands=runner.card.bands)
    whole = predict_array(pixels, runner, valid)
    a = runner.config.alignment
    for chunk_size in (8 * a, 13 * a):
        grid = plan_tiles(runner.config, info.height, info.width, chunk_size=chunk_size)
        calls = runner.tiles
        probs, valid_t = predict_tiled(info, grid, runner)
        assert valid_t.all()
        np.testing.assert_allclose(probs, whole, atol=1e-5, rtol=0)
        assert runner.tiles - calls == grid.tile_rows * grid.tile_cols  # each tile once
    # the same network as PyTorch's, to rounding
    reference = get_runner(tmp_path / f"valid{depth}-0.pt", "cpu", "fp32", engine="torch")
    np.testing.assert_allclose(predict_array(pixels, reference, valid), whole, atol=1e-4)


@pytest.mark.parametrize("engine", ENGINES)
def test_same_padding_invariant_to_chunk_size_with_every_engine(
    make_scene: Callable[..., Path], tmp_path: Path, engine: str
) -> None:
    """ARCHITECTURE invariant 1 per engine: same padding, blended, independent of chunk size."""
    path = make_scene(190, 170)
    runner = get_runner(_checkpoint(tmp_path, padding="same"), "cpu", "fp32", engine=engine)
    info = open_scene(path)
    results = [
        predict_tiled(info, plan_tiles(runner.config, info.height, info.width,
                                       chunk_size=c, tile_size=96), runner)[0]
        for c in (64, 128, 192)
    ]
    for other in results[1:]:
        np.testing.assert_allclose(other, results[0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("engine", ENGINES)
def test_export_is_cached_next_to_the_checkpoint_and_reused(tmp_path: Path, engine: str) -> None:
    """First load exports (count), a second load in a fresh runner cache reuses the file."""
    checkpoint = _checkpoint(tmp_path, seed=3)
    before = export.export_count()
    loads = runner_load_count()
    first = get_runner(checkpoint, "cpu", "fp32", engine=engine)
    exported = export.export_count() - before
    assert exported >= 1
    assert first.backend.path.parent == tmp_path / export.CACHE_DIR_NAME
    assert first.backend.path.is_file()
    assert not [p for p in first.backend.path.parent.iterdir() if p.name.startswith(".part-")]
    clear_runner_cache()
    second = get_runner(checkpoint, "cpu", "fp32", engine=engine)
    assert second is not first and runner_load_count() == loads + 2
    assert export.export_count() - before == exported  # no re-export
    assert second.backend.path == first.backend.path
    # a changed checkpoint (new hash) is exported again
    _checkpoint(tmp_path, seed=4).replace(checkpoint)
    clear_runner_cache()
    third = get_runner(checkpoint, "cpu", "fp32", engine=engine)
    assert third.backend.path != first.backend.path
    assert export.export_count() - before == 2 * exported


@pytest.mark.skipif(not engines.engine_installed("onnxruntime"), reason="onnxruntime missing")
def test_read_only_checkpoint_folder_uses_the_user_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    checkpoint = _checkpoint(folder)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    real = export.writable_dir  # root may write into a 0o555 folder: refuse it here too
    monkeypatch.setattr(export, "writable_dir",
                        lambda f: f.parent != folder.resolve() and real(f))
    folder.chmod(0o555)
    try:
        runner = get_runner(checkpoint, "cpu", "fp32", engine="onnxruntime")
    finally:
        folder.chmod(0o755)
    assert runner.backend.path.parent == tmp_path / "cache" / "geounet"
    assert not (folder / export.CACHE_DIR_NAME).exists()


def test_auto_rule_reads_the_cpu_and_the_installed_packages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    installed = {"torch", "onnxruntime", "openvino"}
    monkeypatch.setattr(engines, "engine_installed", lambda name: name in installed)
    avx2 = frozenset({"sse4_2", "avx", "avx2", "fma"})
    avx512 = avx2 | {"avx512f", "avx512bw"}
    arm = frozenset({"fp", "asimd", "neon"})
    assert engines.resolve_engine("auto", "cpu", arm) == "torch"
    assert engines.resolve_engine("auto", "cpu", avx2) == "openvino"
    assert engines.resolve_engine("auto", "cpu", avx512) == "openvino"
    assert engines.resolve_engine("auto", "cuda", avx512) == "torch"
    amx = avx512 | {"amx_bf16", "avx512_bf16"}
    assert engines.resolve_engine("auto", "cpu", amx, precision="bf16") == "openvino"
    installed.discard("openvino")
    assert engines.resolve_engine("auto", "cpu", avx2) == "onnxruntime"
    assert engines.resolve_engine("auto", "cpu", amx, precision="bf16") == "torch"
    with pytest.raises(EngineError, match="fp32 and int8 only"):
        engines.resolve_engine("onnxruntime", "cpu", amx, precision="bf16")
    installed.discard("onnxruntime")
    assert engines.resolve_engine("auto", "cpu", avx512) == "torch"
    with pytest.raises(EngineError, match=r"pip install geounet\[openvino\]"):
        engines.resolve_engine("openvino", "cpu", avx512)
    with pytest.raises(InputError, match="'tensorrt' is not one of"):
        engines.resolve_engine("tensorrt", "cpu")  # type: ignore[arg-type]
    installed.add("onnxruntime")
    with pytest.raises(EngineError, match="CPU only"):
        engines.resolve_engine("onnxruntime", "cuda")


def test_cpu_flags_are_read_at_run_time() -> None:
    flags = engines.cpu_flags()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            line = next(x for x in handle if x.startswith("flags"))
        assert flags == frozenset(line.split(":", 1)[1].split())


@pytest.mark.skipif(not engines.engine_installed("onnxruntime"), reason="onnxruntime missing")
def test_onnxruntime_refuses_bf16(tmp_path: Path) -> None:
    # the engine refuses bf16 before any precision rule runs, so the same error comes on
    # every CPU (an AVX2 machine gets no "bf16 would be emulated" warning first)
    with pytest.raises(EngineError, match="fp32 and int8 only"):
        get_runner(_checkpoint(tmp_path), "cpu", "bf16", engine="onnxruntime")


@pytest.mark.parametrize("engine", ENGINES)
def test_predict_with_engine_equals_whole_scene(
    make_scene: Callable[..., Path], tmp_path: Path, engine: str
) -> None:
    """The pipeline runs the engine on its workers (library keyword ``engine``), with a chunk
    size that is no whole number of tile cores (rounded), and still equals whole-scene
    inference (ARCHITECTURE invariants 1 and 2)."""
    from geounet.output import open_prediction
    from geounet.run import pipeline, planning
    from tests.test_pipeline import whole_scene_reference

    scene = make_scene(150, 173)
    checkpoint = _checkpoint(tmp_path)
    plan = planning.plan_prediction(scene, model=checkpoint, chunk_size=100, tile_size=116,
                                    precision="fp32", engine=engine)
    assert plan.grid.stride == 76 and plan.grid.chunk_size == 76  # 100 -> one 76 px core
    pipeline.predict(scene, tmp_path / "p.zarr", model=checkpoint, chunk_size=100,
                     tile_size=116, client="threads", precision="fp32",
                     probability_dtype="float32", engine=engine)
    got = open_prediction(tmp_path / "p.zarr").probabilities.values
    np.testing.assert_allclose(got, whole_scene_reference(scene, checkpoint), atol=1e-5, rtol=0)


@pytest.mark.parametrize("engine", ["torch", *ENGINES])
def test_forwards_from_several_threads_at_once_equal_one_at_a_time(
    tmp_path: Path, engine: str
) -> None:
    """The default local run calls one runner from several Dask threads at once (issue 11):
    every engine gives each thread its own batch's result, as one call at a time would."""
    from concurrent.futures import ThreadPoolExecutor

    runner = get_runner(_checkpoint(tmp_path, padding="same"), "cpu", "fp32", engine=engine)
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(1, 3, 64, 64)).astype(np.float32) for _ in range(12)]
    alone = [runner.forward(b) for b in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(runner.forward, batches))
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(a, b)
    assert runner.calls == 24


@pytest.mark.parametrize("engine", ENGINES)
def test_tta_is_exact_with_every_engine(make_scene: Callable[..., Path], tmp_path: Path,
                                        engine: str) -> None:
    """TTA transforms the numpy batch around the engine call: tiled d4 == whole-scene d4 with
    that engine (1e-5), and equals torch's d4 to rounding."""
    path = make_scene(150, 173)
    runner = get_runner(_checkpoint(tmp_path), "cpu", "fp32", engine=engine)
    info = open_scene(path)
    pixels, valid = read_window(info, 0, 0, info.height, info.width, bands=runner.card.bands)
    whole = predict_array(pixels, runner, valid, tta="d4")
    grid = plan_tiles(runner.config, info.height, info.width, chunk_size=32)
    before = runner.tiles
    probs, _ = predict_tiled(info, grid, runner, tta="d4")
    np.testing.assert_allclose(probs, whole, atol=1e-5, rtol=0)
    assert runner.tiles - before == 8 * grid.tile_rows * grid.tile_cols
    reference = get_runner(tmp_path / "valid2-0.pt", "cpu", "fp32", engine="torch")
    np.testing.assert_allclose(predict_array(pixels, reference, valid, tta="d4"), whole,
                               atol=1e-4)


def test_runner_cache_keeps_at_most_its_limit(tmp_path: Path) -> None:
    """Issue 18, bounded state: a process that meets many checkpoints (or rewritten ones)
    keeps at most RUNNER_CACHE_SIZE runners; the least recently used is loaded again."""
    from geounet.engine import runner as runner_module

    limit = runner_module.RUNNER_CACHE_SIZE
    paths = [_checkpoint(tmp_path, seed=i) for i in range(limit + 3)]
    start = runner_load_count()
    first = get_runner(paths[0], "cpu", "fp32")
    for path in paths[1:]:
        get_runner(path, "cpu", "fp32")
        get_runner(paths[0], "cpu", "fp32")  # kept in use: never dropped
        assert runner_module.cached_runner_count() <= limit
    assert runner_module.cached_runner_count() == limit
    assert runner_load_count() == start + len(paths)
    assert get_runner(paths[0], "cpu", "fp32") is first
    get_runner(paths[1], "cpu", "fp32")  # dropped long ago: loaded again
    assert runner_load_count() == start + len(paths) + 1


@pytest.mark.skipif(not engines.engine_installed("openvino"), reason="openvino is not installed")
def test_openvino_keeps_a_bounded_number_of_compiled_shapes(tmp_path: Path) -> None:
    runner = get_runner(_checkpoint(tmp_path, padding="same"), "cpu", "fp32", engine="openvino")
    backend = runner.backend
    rng = np.random.default_rng(0)
    for n in range(1, engines.COMPILED_SHAPES + 4):  # a new batch size each time
        batch = rng.normal(size=(n, 3, 64, 64)).astype(np.float32)
        np.testing.assert_allclose(runner.forward(batch)[:1], runner.forward(batch[:1]),
                                   atol=1e-5)
        assert len(backend._compiled) <= engines.COMPILED_SHAPES
        assert len(backend._local.requests) <= engines.COMPILED_SHAPES
    assert len(backend._compiled) == engines.COMPILED_SHAPES


@pytest.mark.parametrize("engine", ENGINES)
def test_export_of_a_model_in_memory_leaves_no_temporary_folder(engine: str) -> None:
    """A runner of a model without a checkpoint file exports it to a temporary folder, which
    is removed once the runner (and its backend) is gone."""
    import gc

    from geounet.engine.runner import ModelRunner

    model = make_runner(depth=2)
    runner = ModelRunner(model.model, model.card, device="cpu", precision="fp32", engine=engine)
    folder = Path(runner.backend.path).parents[1]
    assert folder.name.startswith("geounet-export-") and folder.is_dir()
    probs = runner.forward(np.zeros((1, 3, 92, 92), np.float32))
    assert probs.shape[1] == runner.num_classes
    del runner
    gc.collect()
    assert not folder.exists()


def test_every_engine_is_a_registered_backend() -> None:
    """One registry: every --engine choice but the ``auto`` rule has a backend class, under
    its own name, with the one constructor (``open(spec)``) and the forward of the protocol;
    torch first (always installed)."""
    from geounet.config import Engine, choices

    assert set(engines.BACKENDS) == set(choices(Engine)) - {"auto"}
    assert list(engines.BACKENDS)[0] == "torch"
    for name, cls in engines.BACKENDS.items():
        assert cls.name == name
        assert callable(cls.open) and callable(cls.probabilities)
        assert cls.exported == (name != "torch")
    assert engines.available_engines()[0] == "torch"
    assert engines.engine_installed("torch") and not engines.engine_installed("tensorrt")
    with pytest.raises(InputError, match="has no backend"):
        engines.make_backend("auto", None)  # type: ignore[arg-type]


def test_the_runner_opens_its_engine_from_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner has no per-engine code: the backend registered under the engine's name is
    opened with the runner's resolved spec and computes every forward (here a stand-in for
    onnxruntime), and torch's own backend is the registered TorchBackend."""
    from geounet.engine.runner import ModelRunner

    opened: list[engines.BackendSpec] = []

    class Constant:
        name, package, extra, exported = "onnxruntime", "onnxruntime", "onnx", False

        @classmethod
        def open(cls, spec: engines.BackendSpec) -> Constant:
            opened.append(spec)
            return cls()

        def probabilities(self, batch: np.ndarray) -> np.ndarray:
            return np.full((batch.shape[0], 3, 4, 4), 0.25, np.float32)

    base = make_runner(depth=2, base=8)
    assert isinstance(base.backend, engines.TorchBackend) and base.backend.module is base.model
    monkeypatch.setitem(engines.BACKENDS, "onnxruntime", Constant)
    monkeypatch.setattr(engines, "engine_installed", lambda name: True)
    runner = ModelRunner(base.model, base.card, device="cpu", precision="fp32",
                         engine="onnxruntime")
    assert isinstance(runner.backend, Constant) and runner.engine == "onnxruntime"
    (spec,) = opened
    assert (spec.device.type, spec.precision, spec.channels) == ("cpu", "fp32", 3)
    assert spec.model is base.model and spec.calibration is None
    probs = runner.forward(np.zeros((2, 3, 92, 92), np.float32))
    np.testing.assert_array_equal(probs, np.full((2, 3, 4, 4), 0.25, np.float32))
