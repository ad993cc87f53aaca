"""Tests for geounet.run.pipeline: exactness against whole-scene inference, chunk/scheduler
invariance, georeferencing, nodata skipping, validation before work, overwrite and resume."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from geounet.errors import (
    DeviceError,
    GeoreferenceError,
    IncompatibleSceneError,
    InputError,
    OutputExistsError,
    SceneError,
    TileSizeError,
    UnsupportedFormatError,
)
from geounet.run import pipeline, planning, tasks

CLASSES = ("background", "buildings", "roads")


def make_checkpoint(path: Path, padding: str = "valid", depth: int = 2, base: int = 4,
                    seed: int = 0) -> Path:
    """A tiny random U-Net checkpoint with a model card for 3-band uint8 scenes at 0.5 m."""
    import torch

    from geounet.model import ModelCard, UNet, UNetConfig, save_checkpoint

    torch.manual_seed(seed)
    config = UNetConfig(in_channels=3, num_classes=3, depth=depth, base_channels=base,
                        padding=padding)
    card = ModelCard(config, bands=(1, 2, 3), mean=(120.0, 125.0, 130.0),
                     std=(60.0, 55.0, 50.0), classes=CLASSES, pixel_size=0.5, dtype="uint8",
                     value_range=(0.0, 255.0))
    return save_checkpoint(path, UNet(config), card)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {
        "valid": make_checkpoint(folder / "valid.pt", "valid"),
        "same": make_checkpoint(folder / "same.pt", "same"),
    }


def whole_scene_reference(scene: Path, checkpoint: Path) -> np.ndarray:
    """Softmax of the valid-padding net run once on the whole mirrored scene (float64 check)."""
    import torch

    from geounet.model import load_checkpoint
    from geounet.raster import open_scene, read_window

    net, card = load_checkpoint(checkpoint)
    config = card.architecture
    info = open_scene(scene)
    halo = config.halo
    size_y = config.input_size_for_output(info.height)
    size_x = config.input_size_for_output(info.width)
    pixels, _ = read_window(info, 0, 0, size_y - 2 * halo, size_x - 2 * halo,
                            bands=card.bands, halo=halo)
    x = (pixels.astype(np.float32) - np.array(card.mean, np.float32)[:, None, None])
    x /= np.array(card.std, np.float32)[:, None, None]
    with torch.no_grad():
        logits = net(torch.from_numpy(x[None]))
    probs = torch.softmax(logits, dim=1)[0].numpy()
    return probs[:, : info.height, : info.width]


def run(scene: Path, out: Path, model: Path, **kwargs: Any) -> pipeline.PredictResult:
    kwargs.setdefault("client", "threads")
    kwargs.setdefault("precision", "fp32")
    kwargs.setdefault("probability_dtype", "float32")
    return pipeline.predict(scene, out, model=model, **kwargs)


def read_zarr(path: Path) -> Any:
    from geounet.output import open_prediction

    return open_prediction(path)


@pytest.mark.parametrize("chunk_size", [64, 128, 256])
def test_valid_padding_equals_whole_scene(make_scene: Callable[..., Path], tmp_path: Path,
                                          models: dict[str, Path], chunk_size: int) -> None:
    scene = make_scene(150, 173)
    result = run(scene, tmp_path / "p.zarr", models["valid"], chunk_size=chunk_size)
    ds = read_zarr(tmp_path / "p.zarr")
    got = ds.probabilities.values
    ref = whole_scene_reference(scene, models["valid"])
    assert got.shape == ref.shape == (3, 150, 173)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(ds.mask.values, ref.argmax(0))
    assert result.chunks == -(-150 // chunk_size) * -(-173 // chunk_size)
    assert result.pixels == 150 * 173 and result.chunks_skipped == 0


def test_same_padding_invariant_to_chunks_and_scheduler(
    make_scene: Callable[..., Path], tmp_path: Path, models: dict[str, Path]
) -> None:
    scene = make_scene(150, 173)
    outs = []
    for i, (chunk, client, workers) in enumerate(
        [(64, "threads", 2), (128, "synchronous", None), (256, "threads", 1)]
    ):
        out = tmp_path / f"p{i}.zarr"
        run(scene, out, models["same"], chunk_size=chunk, tile_size=96, client=client,
            workers=workers)
        outs.append(read_zarr(out).probabilities.values)
    for other in outs[1:]:
        np.testing.assert_allclose(other, outs[0], atol=1e-6, rtol=0)


@pytest.mark.cluster
def test_local_cluster_equals_threads(make_scene: Callable[..., Path], tmp_path: Path,
                                      models: dict[str, Path]) -> None:
    scene = make_scene(150, 173)
    run(scene, tmp_path / "t.zarr", models["same"], chunk_size=64, tile_size=96)
    result = run(scene, tmp_path / "c.zarr", models["same"], chunk_size=64, tile_size=96,
                 client=None, workers=2)
    assert result.chunks == 9
    np.testing.assert_allclose(read_zarr(tmp_path / "c.zarr").probabilities.values,
                               read_zarr(tmp_path / "t.zarr").probabilities.values,
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize("suffix", [".zarr", ".tif"])
def test_georeferencing_kept(make_scene: Callable[..., Path], tmp_path: Path,
                             models: dict[str, Path], suffix: str) -> None:
    scene = make_scene(130, 150, pixel_size=0.5, origin=(400_000.0, 6_000_000.0))
    out = tmp_path / f"p{suffix}"
    run(scene, out, models["valid"], chunk_size=64, probability_dtype="uint8")
    with rasterio.open(scene) as src:
        crs, transform = src.crs, src.transform
    if suffix == ".zarr":
        ds = read_zarr(out)
        assert ds.rio.crs == crs
        assert tuple(ds.rio.transform())[:6] == tuple(transform)[:6]
        assert ds.probabilities.shape == (3, 130, 150)
        assert ds.probabilities.dtype == np.uint8
        assert ds.attrs["geounet"]["model_card"]["classes"] == list(CLASSES)
    else:
        with rasterio.open(out) as dst:
            assert dst.crs == crs and dst.transform == transform
            assert (dst.count, dst.height, dst.width) == (4, 130, 150)
            assert dst.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    sidecar = [f"{out.name}.aux.xml"] if suffix == ".tif" else []  # the class band's categories
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([scene.name, out.name, *sidecar])


def _blank_corner(scene: Path, size: int, nodata: int) -> None:
    with rasterio.open(scene, "r+") as dst:
        data = dst.read()
        data[:, :size, :size] = nodata
        dst.write(data)


def test_nodata_is_nodata_and_empty_chunks_skipped(
    make_scene: Callable[..., Path], tmp_path: Path, models: dict[str, Path]
) -> None:
    scene = make_scene(150, 173, nodata=0, nodata_border=3)
    _blank_corner(scene, 64, 0)
    result = run(scene, tmp_path / "p.zarr", models["valid"], chunk_size=64)
    assert result.chunks == 9 and result.chunks_skipped == 1
    ds = read_zarr(tmp_path / "p.zarr")
    mask, probs = ds.mask.values, ds.probabilities.values
    with rasterio.open(scene) as src:
        invalid = src.read_masks(1) == 0
    assert (mask[invalid] == 255).all() and (mask[~invalid] != 255).all()
    assert (probs[:, invalid] == 0).all()
    np.testing.assert_allclose(probs[:, ~invalid].sum(0), 1.0, atol=1e-5)


def test_all_nodata_scene_never_calls_model(make_scene: Callable[..., Path], tmp_path: Path,
                                            models: dict[str, Path],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from geounet.model import UNet

    scene = make_scene(100, 90, nodata=0)
    _blank_corner(scene, 128, 0)
    calls = []
    original = UNet.forward
    monkeypatch.setattr(UNet, "forward", lambda self, x: calls.append(1) or original(self, x))
    result = run(scene, tmp_path / "p.zarr", models["valid"], chunk_size=64)
    assert result.chunks == result.chunks_skipped == 4
    assert calls == []
    assert (read_zarr(tmp_path / "p.zarr").mask.values == 255).all()


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize(
    "case, error",
    [
        ("missing", SceneError),
        ("corrupt", SceneError),
        ("no_crs", GeoreferenceError),
        ("two_bands", IncompatibleSceneError),
        ("uint16", IncompatibleSceneError),
        ("tile", TileSizeError),
        ("chunk", TileSizeError),
        ("suffix", UnsupportedFormatError),
        ("exists", OutputExistsError),
        ("bands", InputError),
        ("no_model", InputError),
        ("truncated", SceneError),
        ("directory", SceneError),
        ("text_file", SceneError),
        ("big_tile", TileSizeError),
        ("fp16_on_cpu", DeviceError),
    ],
)
def test_bad_inputs_fail_early_and_leave_nothing(
    make_scene: Callable[..., Path], tmp_path: Path, models: dict[str, Path], case: str,
    error: type[Exception], monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "p.zarr"
    kwargs: dict[str, Any] = {}
    model: Path | None = models["valid"]
    scene = make_scene(100, 90)
    if case == "missing":
        scene = tmp_path / "nope.tif"
    elif case == "corrupt":
        scene = tmp_path / "bad.tif"
        scene.write_bytes(b"II*\x00garbage" * 10)
    elif case == "no_crs":
        scene = make_scene(100, 90, crs=None)
    elif case == "two_bands":
        scene = make_scene(100, 90, count=2)
    elif case == "uint16":  # a uint8-trained model is fine on uint16 (warning), not vice versa
        model = make_checkpoint(tmp_path / "m16.pt")
        import torch

        payload = torch.load(model, weights_only=True)
        payload["card"]["dtype"], payload["card"]["value_range"] = "uint16", [0.0, 4095.0]
        torch.save(payload, model)
    elif case == "tile":
        kwargs["tile_size"] = 65
    elif case == "chunk":
        kwargs["chunk_size"] = 30
    elif case == "suffix":
        out = tmp_path / "p.png"
    elif case == "exists":
        out.mkdir()
    elif case == "bands":
        kwargs["bands"] = (1, 2)
    elif case == "no_model":
        model = None
        monkeypatch.setattr("geounet.engine.runner.BUILTIN_MODEL", tmp_path / "none.pt")
    elif case == "truncated":
        data = scene.read_bytes()
        scene.write_bytes(data[: len(data) * 2 // 3])
    elif case == "directory":
        scene = tmp_path / "folder.tif"
        scene.mkdir()
    elif case == "text_file":
        scene = tmp_path / "notes.txt"
        scene.write_text("not a raster")
    elif case == "big_tile":
        kwargs.update(chunk_size=64, tile_size=124)
    elif case == "fp16_on_cpu":
        import torch

        if torch.cuda.is_available():
            pytest.skip("fp16 is fine where CUDA exists")
        kwargs["precision"] = "fp16"
    before = _listing(tmp_path)
    with pytest.raises(error):
        pipeline.predict(scene, out, model=model, client="threads", **kwargs)
    assert _listing(tmp_path) == before


def test_no_crs_allowed_writes_pixel_space(make_scene: Callable[..., Path], tmp_path: Path,
                                           models: dict[str, Path]) -> None:
    scene = make_scene(70, 80, crs=None)
    with pytest.warns(UserWarning, match="no CRS"):
        run(scene, tmp_path / "p.tif", models["valid"], chunk_size=64, allow_no_crs=True)
    with rasterio.open(tmp_path / "p.tif") as dst:
        assert dst.crs is None and (dst.height, dst.width) == (70, 80)



def test_segment_without_crs_fails_before_predicting(
    make_scene: Callable[..., Path], tmp_path: Path, models: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """allow_no_crs lets predict write pixel space, but polygons need a CRS: refuse up front."""
    scene = make_scene(70, 80, crs=None)
    monkeypatch.setattr(pipeline, "compute_store", lambda *a, **k: pytest.fail("predicted"))
    before = _listing(tmp_path)
    with pytest.warns(UserWarning, match="no CRS"), \
            pytest.raises(GeoreferenceError, match="--allow-no-crs"):
        pipeline.segment(scene, tmp_path / "o.gpkg", model=models["valid"], chunk_size=64,
                         allow_no_crs=True, client="threads")
    assert _listing(tmp_path) == before

def test_overwrite_replaces(make_scene: Callable[..., Path], tmp_path: Path,
                            models: dict[str, Path]) -> None:
    scene = make_scene(70, 80)
    out = tmp_path / "p.zarr"
    run(scene, out, models["valid"], chunk_size=64, bands=(1, 2, 3))
    first = read_zarr(out).probabilities.values
    with pytest.raises(OutputExistsError):
        run(scene, out, models["valid"], chunk_size=64)
    run(scene, out, models["valid"], chunk_size=64, bands=(3, 2, 1), overwrite=True)
    second = read_zarr(out).probabilities.values
    assert not np.allclose(first, second)
    assert _listing(tmp_path) == sorted([scene.name, "p.zarr"])


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("suffix", [".zarr", ".tif"])
def test_resume_after_interruption_equals_uninterrupted(
    make_scene: Callable[..., Path], tmp_path: Path, models: dict[str, Path], suffix: str
) -> None:
    scene = make_scene(150, 173)
    full = tmp_path / f"full{suffix}"
    run(scene, full, models["valid"], chunk_size=64, probability_dtype="uint8")

    def stop_after_three(done: int, total: int, pixels: int) -> None:
        if done >= 3:
            raise Interrupt

    out = tmp_path / f"p{suffix}"
    with pytest.raises(Interrupt):
        run(scene, out, models["valid"], chunk_size=64, probability_dtype="uint8",
            workers=1, progress=stop_after_three)
    assert not out.exists()
    with pytest.raises(InputError, match="chunk_size"):
        run(scene, out, models["valid"], chunk_size=128, probability_dtype="uint8",
            resume=True)
    result = run(scene, out, models["valid"], chunk_size=64, probability_dtype="uint8",
                 resume=True)
    assert result.chunks == 9 and 3 <= result.chunks_resumed < 9
    if suffix == ".zarr":
        a, b = read_zarr(full), read_zarr(out)
        np.testing.assert_array_equal(a.probabilities.values, b.probabilities.values)
        np.testing.assert_array_equal(a.mask.values, b.mask.values)
    else:
        with rasterio.open(full) as a, rasterio.open(out) as b:
            np.testing.assert_array_equal(a.read(), b.read())
            np.testing.assert_array_equal(a.read_masks(1), b.read_masks(1))
    sidecars = [f"{p.name}.aux.xml" for p in (full, out) if suffix == ".tif"]
    assert _listing(tmp_path) == sorted([scene.name, full.name, out.name, *sidecars])


def test_resume_names_a_changed_scene_or_model(
    make_scene: Callable[..., Path], tmp_path: Path, models: dict[str, Path]
) -> None:
    """Resuming after the scene or the model's content changed is refused, naming what changed
    (mixing chunks of two inputs would be a silently wrong output)."""
    scene = make_scene(150, 173)
    model = tmp_path / "m.pt"
    model.write_bytes(models["valid"].read_bytes())

    def stop_after_two(done: int, total: int, pixels: int) -> None:
        if done >= 2:
            raise Interrupt

    out = tmp_path / "p.zarr"
    with pytest.raises(Interrupt):
        run(scene, out, model, chunk_size=64, progress=stop_after_two)
    model.unlink()
    make_checkpoint(model, "valid", seed=1)  # same name and architecture, other weights
    with pytest.raises(InputError, match=r"the model changed \(content sha256"):
        run(scene, out, model, chunk_size=64, resume=True)
    model.write_bytes(models["valid"].read_bytes())
    make_scene(150, 173, name=scene.name, seed=9)  # the scene rewritten in place
    with pytest.raises(InputError, match=r"the scene changed \(mtime_ns"):
        run(scene, out, model, chunk_size=64, resume=True)


def test_bad_input_found_mid_run_keeps_completed_chunks(
    make_scene: Callable[..., Path], tmp_path: Path, models: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A GeounetError inside a task (e.g. a block that cannot be decoded) stops the run at once
    (no retry) but keeps the completed chunks under the temporary name only, and the error
    says how to resume; the resumed run computes only the missing chunks."""
    from geounet import raster
    from geounet.engine import inference
    scene = make_scene(150, 173)
    calls = []

    def failing_read(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise SceneError("scene x: reading failed; the file is truncated or corrupt.")
        return raster.read_window(*args, **kwargs)

    monkeypatch.setattr(inference, "read_window", failing_read)
    before = _listing(tmp_path)
    for suffix in (".zarr", ".tif"):
        calls.clear()
        out = tmp_path / f"p{suffix}"
        with pytest.raises(SceneError, match="truncated") as failure:
            run(scene, out, models["valid"], chunk_size=64, workers=1)
        assert len(calls) == 3  # a user error is not retried
        assert "--resume" in str(failure.value) and "2 chunk(s) completed" in str(failure.value)
        partial = Path(failure.value.resume_store)  # type: ignore[attr-defined]
        assert partial.name.startswith(".") and not out.exists()
        assert _listing(tmp_path) == sorted([*before, partial.name])
        result = run(scene, out, models["valid"], chunk_size=64, resume=True)
        assert (result.chunks, result.chunks_resumed) == (9, 2)
        assert out.exists() and not partial.exists()  # (a COG may bring its .aux.xml)
        assert set(before) < set(_listing(tmp_path))
        before = _listing(tmp_path)


def test_chunk_size_beyond_the_scene(make_scene: Callable[..., Path], tmp_path: Path,
                                     models: dict[str, Path]) -> None:
    """One chunk bigger than the scene: exact, and no chunk-sized buffers (would be 3 TB)."""
    scene = make_scene(150, 173)
    result = run(scene, tmp_path / "p.zarr", models["valid"], chunk_size=1 << 20)
    assert result.chunks == 1
    np.testing.assert_allclose(read_zarr(tmp_path / "p.zarr").probabilities.values,
                               whole_scene_reference(scene, models["valid"]), atol=1e-5, rtol=0)


def test_segment_rejects_unknown_options_before_work(
    make_scene: Callable[..., Path], tmp_path: Path, models: dict[str, Path]
) -> None:
    scene = make_scene(70, 80)
    before = _listing(tmp_path)
    with pytest.raises(InputError, match="chunksize"):
        pipeline.segment(scene, tmp_path / "o.gpkg", model=models["valid"], chunksize=64)
    with pytest.raises(InputError, match="min_aera"):  # a vectorize keyword where none goes
        pipeline.segment(scene, tmp_path / "o.gpkg", model=models["valid"], client="threads",
                         min_aera=3)
    with pytest.raises(InputError, match="VectorizeOptions"):  # a dict is not the options
        pipeline.segment(scene, tmp_path / "o.gpkg", model=models["valid"], client="threads",
                         vectorize={"min_area": 3})  # type: ignore[arg-type]
    assert _listing(tmp_path) == before


def test_chunk_tasks_carry_windows_not_pixels(make_scene: Callable[..., Path], tmp_path: Path,
                                              models: dict[str, Path],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """ARCHITECTURE invariant 4: a chunk task pickles to the same few bytes whatever
    the scene size (paths and windows, never scene-sized arrays)."""
    import cloudpickle

    from geounet.distributed import cluster
    sizes: dict[str, list[int]] = {}
    real_run_tasks = cluster.run_tasks

    def measured(fn: Any, tasks: Any, on: Any, **kwargs: Any) -> list[Any]:
        # the warm-up chunk, then the others (geounet.run.eta)
        sizes.setdefault(current, []).extend(len(cloudpickle.dumps(task)) for task in tasks)
        return real_run_tasks(fn, tasks, on, **kwargs)

    monkeypatch.setattr(cluster, "run_tasks", measured)
    for current, (height, width) in {"small": (64, 96), "large": (320, 288)}.items():
        run(make_scene(height, width), tmp_path / f"{current}.zarr", models["valid"],
            chunk_size=64)
    assert len(sizes["small"]) == 2 and len(sizes["large"]) == 25
    # a 64 x 96 x 3 uint8 scene alone would be 18 KB; the large scene's 276 KB
    assert max(sizes["large"]) < 8_000
    assert max(sizes["large"]) <= max(sizes["small"]) + 64


def test_resume_names_a_changed_remote_scene_by_etag(
    make_scene: Callable[..., Path], tmp_path: Path, models: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A scene read from object storage (a real S3-compatible server: moto's server mode on
    127.0.0.1) is fingerprinted by its ETag: replacing the object between an interrupted run
    and its resume is refused, naming the scene."""
    import socket
    import subprocess
    import sys
    import time

    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
                           "AWS_S3_ENDPOINT": f"127.0.0.1:{port}", "AWS_HTTPS": "NO",
                           "AWS_VIRTUAL_HOSTING": "FALSE"}.items():
            monkeypatch.setenv(key, value)
        s3 = boto3.client("s3", endpoint_url=endpoint)
        deadline = time.monotonic() + 30
        while True:
            try:
                s3.create_bucket(Bucket="scenes")
                break
            except Exception:  # noqa: BLE001 - the server is still starting
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        s3.upload_file(str(make_scene(150, 173, name="a.tif")), "scenes", "scene.tif")
        url = "s3://scenes/scene.tif"
        fingerprint = planning.plan_prediction(url, model=models["valid"]).run["scene"]
        assert fingerprint["path"] == url and fingerprint["etag"]

        def stop_after_two(done: int, total: int, pixels: int) -> None:
            if done >= 2:
                raise Interrupt

        out = tmp_path / "p.zarr"
        with pytest.raises(Interrupt):
            run(url, out, models["valid"], chunk_size=64, progress=stop_after_two)
        s3.upload_file(str(make_scene(150, 173, name="b.tif", seed=4)), "scenes", "scene.tif")
        with pytest.raises(InputError, match=r"the scene changed \(etag"):
            run(url, out, models["valid"], chunk_size=64, resume=True)
    finally:
        server.terminate()
        server.wait(10)


def _scene_with_holes(path: Path, height: int = 200, width: int = 230) -> Path:
    """A scene with nodata: one whole 64-px chunk, a band across a seam and a corner."""
    from geounet.testing import write_scene

    return write_scene(path, height, width, nodata=0, seed=5,
                       holes=[np.s_[64:128, 128:192], np.s_[120:140, :100], np.s_[-25:, -35:]])


def test_same_padding_seam_exchange_in_the_pipeline(tmp_path: Path,
                                                    models: dict[str, Path]) -> None:
    """Issue 11: the pipeline runs each tile once and exchanges seams between chunks; the
    store is bit-identical across chunk sizes and schedulers and to blending, chunk by chunk,
    every tile touching the chunk; the kept tile outputs leave with the bookkeeping."""
    from geounet.engine.inference import get_runner, predict_chunk
    from geounet.engine.tiling import plan_tiles
    from geounet.raster import open_scene

    scene = _scene_with_holes(tmp_path / "holes.tif")
    outs = []
    for i, (chunk, client) in enumerate([(64, "threads"), (128, "synchronous"), (96, "threads")]):
        out = tmp_path / f"p{i}.zarr"
        result = run(scene, out, models["same"], chunk_size=chunk, tile_size=96, client=client,
                     workers=2)
        assert not (out / "_geounet_done").exists()
        ds = read_zarr(out)
        outs.append((ds.probabilities.values, ds.mask.values))
    assert result.chunks == 9 and result.chunks_skipped == 0
    for probs, mask in outs[1:]:
        np.testing.assert_array_equal(probs, outs[0][0])
        np.testing.assert_array_equal(mask, outs[0][1])
    runner = get_runner(models["same"], "cpu", "fp32")
    info = open_scene(scene)
    grid = plan_tiles(runner.config, info.height, info.width, chunk_size=64, tile_size=96)
    alone = np.zeros_like(outs[0][0])
    for chunk in grid.chunks():
        found = predict_chunk(info, chunk, grid, runner)
        if found is not None:
            alone[:, chunk.y0 : chunk.y1, chunk.x0 : chunk.x1] = found[0]
    np.testing.assert_array_equal(outs[0][0], alone)
    assert (outs[0][1] == 255).any() and (outs[0][1][64:128, 128:192] == 255).all()


def test_resume_between_tiles_and_seams_runs_no_tile_again(
    tmp_path: Path, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted after every chunk ran its tiles but before the seams were blended, a
    resumed run blends the seams from the kept tile outputs without running a tile again."""
    scene = _scene_with_holes(tmp_path / "holes.tif")
    reference = tmp_path / "ref.zarr"
    run(scene, reference, models["same"], chunk_size=64, tile_size=96)

    def interrupted(task: Any) -> Any:
        raise KeyboardInterrupt

    out = tmp_path / "p.zarr"
    monkeypatch.setattr(tasks, "run_seams_task", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(scene, out, models["same"], chunk_size=64, tile_size=96)
    monkeypatch.undo()
    chunk_runs: list[Any] = []
    real = tasks._run_chunk_once
    monkeypatch.setattr(tasks, "_run_chunk_once",
                        lambda task: chunk_runs.append(task) or real(task))
    result = run(scene, out, models["same"], chunk_size=64, tile_size=96, resume=True)
    assert chunk_runs == [] and result.chunks_resumed == result.chunks == 16
    np.testing.assert_array_equal(read_zarr(out).probabilities.values,
                                  read_zarr(reference).probabilities.values)
