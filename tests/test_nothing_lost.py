"""Nothing lost after prediction (issue 9 item 7): a failure or Ctrl-C while vectorizing or
writing the COG keeps the finished prediction under its resumable name and names the command
that finishes the job; a rerun that finds a partial store refuses unless told --resume or
--overwrite."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from geounet import output
from geounet.errors import OutputExistsError, PredictionKeptError
from geounet.run import pipeline
from geounet.synth import synthesize_scene

FAST_CLI = ["--scheduler-address", "threads", "--precision", "fp32", "--chunk-size", "64"]
FAST = {"client": "threads", "precision": "fp32", "chunk_size": 64}

# The child runs the real CLI; vectorization reads are slowed down and announce themselves
# through a marker file, so the SIGINT lands during vectorization every time.
CHILD = """
import pathlib, signal, sys, time
import geounet.output.prediction as prediction

# Ctrl-C as a terminal delivers it: a test run started as a background job (`cmd &` in a
# script) passes SIGINT on ignored, and the child would never see it
signal.signal(signal.SIGINT, signal.default_int_handler)

marker = pathlib.Path(sys.argv[1])
original = prediction.PredictionReader.read_mask

def slow_read_mask(self, *args, **kwargs):
    marker.touch()
    time.sleep(0.3)
    return original(self, *args, **kwargs)

prediction.PredictionReader.read_mask = slow_read_mask
from geounet.cli.main import cli
cli(args=sys.argv[2:], prog_name="geounet")
"""


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kept")
    synthesize_scene(root, height=192, width=224, seed=4)
    return root / "scene.tif"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(pipeline.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    return env


def _assert_same_vectors(a: Path, b: Path) -> None:
    import pyogrio

    layers_a = sorted(name for name, _ in pyogrio.list_layers(a))
    assert layers_a == sorted(name for name, _ in pyogrio.list_layers(b))
    for layer in layers_a:
        fa, fb = gpd.read_file(a, layer=layer), gpd.read_file(b, layer=layer)
        assert len(fa) == len(fb) > 0
        assert list(fa.geometry.to_wkb()) == list(fb.geometry.to_wkb()), layer
        attrs = [c for c in fa.columns if c != "geometry"]
        assert fa[attrs].equals(fb[attrs]), layer


def test_sigint_during_vectorization_keeps_the_prediction(scene: Path, tmp_path: Path) -> None:
    full = tmp_path / "full"
    full.mkdir()
    from click.testing import CliRunner

    from geounet.cli.main import cli

    done = CliRunner().invoke(cli, ["segment", str(scene), "-o", str(full / "o.gpkg"),
                                    "--raster-out", str(full / "p.tif"), *FAST_CLI])
    assert done.exit_code == 0, done.output

    work = tmp_path / "work"
    work.mkdir()
    marker = tmp_path / "vectorizing"
    args = ["segment", str(scene), "-o", str(work / "o.gpkg"), "--raster-out",
            str(work / "p.tif"), *FAST_CLI]
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(marker), *args], env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), child.communicate()[1]
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 130, stderr
    store = output.temporary_path(work / "p.tif", ".zarr")
    assert store.is_dir() and output.done_chunks(store), stderr  # the prediction survives
    assert not (work / "o.gpkg").exists() and not (work / "p.tif").exists()
    assert str(store) in stderr and "Traceback" not in stderr
    command = stderr.split("Finish the job with: ", 1)[1].strip().splitlines()[0]
    argv = shlex.split(command)
    assert argv[0] == "geounet" and argv[-1] == "--resume"

    # without --resume the partial store is refused, and kept
    again = subprocess.run([sys.executable, "-m", "geounet", *argv[1:-1]], env=_env(),
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 1
    assert "--resume" in again.stderr and "--overwrite" in again.stderr and store.is_dir()

    resumed = subprocess.run([sys.executable, "-m", "geounet", *argv[1:]], env=_env(),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "0 to compute" in resumed.stderr  # finished without predicting again
    _assert_same_vectors(full / "o.gpkg", work / "o.gpkg")
    with rasterio.open(full / "p.tif") as a, rasterio.open(work / "p.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
        np.testing.assert_array_equal(a.read_masks(1), b.read_masks(1))
    assert sorted(p.name for p in work.iterdir()) == ["o.gpkg", "p.tif", "p.tif.aux.xml"]


def test_failure_after_prediction_keeps_it_and_resume_finishes(
    scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A COG write that fails (here: the disk refuses) keeps the prediction; resume=True
    finishes the job from it without running the model again."""
    real = output.write_cog

    def failing_cog(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(output, "write_cog", failing_cog)
    out = tmp_path / "o.gpkg"
    with pytest.raises(PredictionKeptError, match="--resume") as info:
        pipeline.segment(scene, out, raster_out=tmp_path / "p.tif", **FAST)
    store = Path(info.value.store)
    assert "No space left" in str(info.value) and store.is_dir()
    assert store == output.temporary_path(tmp_path / "p.tif", ".zarr")
    monkeypatch.setattr(output, "write_cog", real)
    result = pipeline.segment(scene, out, raster_out=tmp_path / "p.tif", resume=True,
                              overwrite=True, **FAST)
    assert result.chunks_resumed == result.chunks
    assert not store.exists() and (tmp_path / "p.tif").is_file()


@pytest.mark.parametrize("suffix", [".zarr", ".tif"])
def test_partial_store_is_refused_without_resume_or_overwrite(
    scene: Path, tmp_path: Path, suffix: str
) -> None:
    class Stop(Exception):
        pass

    def stop_after_two(done: int, total: int, pixels: int) -> None:
        if done >= 2:
            raise Stop

    out = tmp_path / f"p{suffix}"
    with pytest.raises(Stop):
        pipeline.predict(scene, out, progress=stop_after_two, **FAST)
    store = output.temporary_path(out, "" if suffix == ".zarr" else ".zarr")
    assert store.is_dir()
    with pytest.raises(OutputExistsError, match="--resume") as info:
        pipeline.predict(scene, out, **FAST)
    assert "--overwrite" in str(info.value) and str(store) in str(info.value)
    assert store.is_dir()  # nothing discarded
    with pytest.raises(OutputExistsError, match="--resume"):
        pipeline.segment(scene, tmp_path / "o.gpkg", raster_out=out, **FAST)
    result = pipeline.predict(scene, out, overwrite=True, **FAST)  # discards, starts over
    assert result.chunks_resumed == 0 and out.exists() and not store.exists()


def test_cli_failure_after_prediction_prints_the_resume_command(
    scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from geounet.cli.main import cli

    def failing_cog(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(output, "write_cog", failing_cog)
    args = ["segment", str(scene), "-o", str(tmp_path / "o.gpkg"), "--raster-out",
            str(tmp_path / "p.tif"), *FAST_CLI]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "No space left on device" in result.output
    expected = shlex.join(["geounet", *args, "--resume"])
    assert f"Finish with: {expected}" in result.output
    store = output.temporary_path(tmp_path / "p.tif", ".zarr")
    assert store.is_dir() and (tmp_path / "o.gpkg").is_file()  # vectors were finished
    monkeypatch.undo()
    # the printed command finishes the job: the finished GeoPackage is kept, not refused
    finished = CliRunner().invoke(cli, shlex.split(expected)[1:])
    assert finished.exit_code == 0, finished.output
    assert (tmp_path / "p.tif").is_file() and not store.exists()


def test_kept_for_resume_error_keeps_its_class_and_attributes(tmp_path: Path) -> None:
    """The hint is added to the message; the error stays the same class with its attributes
    (e.g. a TransientError's cause details), and names the kept store."""
    from geounet.errors import TransientError
    from geounet.run.store import keep_for_resume

    error = TransientError("read failed")
    error.chunk = (0, 512)  # type: ignore[attr-defined]
    kept = keep_for_resume(error, tmp_path / "p.zarr")
    assert type(kept) is TransientError and kept.chunk == (0, 512)  # type: ignore[attr-defined]
    assert str(kept).startswith("read failed") and "--resume" in str(kept)
    assert kept.resume_store == str(tmp_path / "p.zarr")  # type: ignore[attr-defined]
