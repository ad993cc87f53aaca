"""geounet on a real ``dask scheduler`` with ``dask worker`` processes (marker ``cluster``).

The workers run in another working directory than the client; scenes are given by relative
paths; the model reaches them as bytes. Failures: a worker SIGKILLed mid-run, the client
SIGKILLed mid-run and resumed, reads failing transiently or for good.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from geounet.cli.main import cli
from geounet.distributed import cluster, schedulers, threads, versions
from geounet.errors import ClusterError, InputError, TransientError
from geounet.run import pipeline
from geounet.testing import write_scene

pytestmark = pytest.mark.cluster

FAST = ["--precision", "fp32", "--chunk-size", "32"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_pipeline import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("cluster_models") / "m.pt")


def _arrays(store: Path) -> tuple[np.ndarray, np.ndarray]:
    from geounet.output import open_prediction

    ds = open_prediction(store)
    return ds.probabilities.values, ds.mask.values


def _assert_same_store(a: Path, b: Path) -> None:
    for x, y in zip(_arrays(a), _arrays(b)):
        np.testing.assert_array_equal(x, y)


def _layers(gpkg: Path) -> dict[str, list[Any]]:
    import pyogrio

    out = {}
    for name, _ in pyogrio.list_layers(gpkg):
        frame = pyogrio.read_dataframe(gpkg, layer=str(name))
        out[str(name)] = sorted(zip(frame.geometry.to_wkb(), frame.drop(
            columns="geometry").astype(str).agg("|".join, axis=1)))
    return out


def _fault(processes: Any, scene: Path, **rule: Any) -> Path:
    path = processes.faults / f"read-{scene.name}.json"
    path.write_text(json.dumps(rule))
    return path


def _reads(rule: Path) -> int:
    return int(json.loads(rule.read_text()).get("reads", 0))


def _done_markers(store: Path) -> int:
    folder = store / "_geounet_done"
    return len(list(folder.glob("*.json"))) if folder.is_dir() else 0


def _wait_until(condition: Any, timeout: float = 180.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _reference(scene: Path, out: Path, model: Path | None, client: Any = "threads") -> Path:
    """The uninterrupted run a disturbed one must equal: on the same scheduler (worker
    processes), or in this process for in-process runs. (A process with other torch threads
    or kernel state sums in another order, and a probability can round to the neighbouring
    uint8 value; the local cluster's fresh workers equal the remote ones.)"""
    pipeline.predict(scene, out, model=model, client=client, precision="fp32", chunk_size=32)
    return out


def test_segment_through_scheduler_equals_local_with_relative_paths_and_builtin_model(
    dask_processes: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from distributed import Client

    from geounet.distributed.worker import shipped_models
    from geounet.engine.inference import BUILTIN_MODEL, runner_load_count
    from geounet.model.checkpoint import file_sha256

    monkeypatch.chdir(tmp_path)
    Path("s").mkdir()
    write_scene("s/scene.tif", 150, 140, seed=3)
    Path("out").mkdir()
    common = ["--precision", "fp32", "--chunk-size", "64"]
    remote = CliRunner().invoke(cli, ["segment", "s/scene.tif", "--out", "out/remote.gpkg",
                                      "--raster-out", "out/remote.zarr", "--scheduler",
                                      dask_processes.address, *common])
    assert remote.exit_code == 0, remote.output
    local = CliRunner().invoke(cli, ["segment", "s/scene.tif", "--out", "out/local.gpkg",
                                     "--raster-out", "out/local.zarr", "--workers", "2",
                                     *common])
    assert local.exit_code == 0, local.output
    _assert_same_store(Path("out/remote.zarr"), Path("out/local.zarr"))
    assert _layers(Path("out/remote.gpkg")) == _layers(Path("out/local.gpkg"))
    assert any(len(v) for v in _layers(Path("out/remote.gpkg")).values())

    sha = file_sha256(BUILTIN_MODEL)
    with Client(dask_processes.address) as client:
        assert set(client.run(os.getcwd).values()) == {str(dask_processes.worker_cwd)}
        assert all(sha in models for models in client.run(shipped_models).values())
        expected = max(1, threads.available_cores() // 2)  # two 1-thread workers on this host
        assert set(client.run(torch.get_num_threads).values()) == {expected}
        loads = client.run(runner_load_count)
        # a second run on the same workers reuses the loaded model (once per worker)
        pipeline.predict("s/scene.tif", "out/again.zarr", client=client, precision="fp32",
                         chunk_size=64)
        assert client.run(runner_load_count) == loads
    _assert_same_store(Path("out/again.zarr"), Path("out/local.zarr"))


def test_env_address_is_used_and_workers_with_an_address_is_refused(
    dask_processes: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model: Path
) -> None:
    scene = write_scene(tmp_path / "env.tif", 64, 64)
    monkeypatch.setenv(schedulers.SCHEDULER_ENV, dask_processes.address)
    assert schedulers.choose_scheduler(None) == schedulers.Remote(
        dask_processes.address, schedulers.SCHEDULER_ENV)
    assert not schedulers.choose_scheduler(None).runs_here
    with pytest.raises(InputError, match=schedulers.SCHEDULER_ENV):
        pipeline.predict(scene, tmp_path / "p.zarr", model=tiny_model, workers=2)
    with pytest.raises(InputError, match="workers=2 cannot be combined"):
        pipeline.predict(scene, tmp_path / "p.zarr", model=tiny_model,
                         client=dask_processes.address, workers=2)
    assert not (tmp_path / "p.zarr").exists()
    result = pipeline.predict(scene, tmp_path / "p.zarr", model=tiny_model, precision="fp32",
                              chunk_size=32)
    assert result.chunks == 4
    _assert_same_store(tmp_path / "p.zarr", _reference(
        scene, tmp_path / "ref.zarr", tiny_model, dask_processes.address))


def test_version_mismatch_is_a_readable_error(dask_processes: Any,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from distributed import Client

    with Client(dask_processes.address) as client:
        real = client.get_versions(packages=["geounet", "torch", "numpy", "cloudpickle"])
        versions.check_versions(client)  # the same environment everywhere: no error
        worker = next(iter(real["workers"]))
        real["workers"][worker]["packages"]["geounet"] = "0.0.1"
        monkeypatch.setattr(client, "get_versions", lambda **kwargs: real)
        with pytest.raises(ClusterError, match=f"geounet .* but 0.0.1 on the worker {worker}"):
            versions.check_versions(client)


def test_worker_killed_mid_run_gives_identical_output(
    dask_processes: Any, tmp_path: Path, tiny_model: Path
) -> None:
    scene = write_scene(tmp_path / "killworker.tif", 192, 192, seed=5)
    reference = _reference(scene, tmp_path / "ref.zarr", tiny_model, dask_processes.address)
    _fault(dask_processes, scene, delay=0.15)
    out = tmp_path / "p.zarr"
    store = tmp_path / ".p.zarr.geounet-partial"
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = pipeline.predict(scene, out, model=tiny_model,
                                                 client=dask_processes.address,
                                                 precision="fp32", chunk_size=32)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    _wait_until(lambda: _done_markers(store) >= 6 or not thread.is_alive(), what="6 chunks")
    victim = dask_processes.alive()[0]
    dask_processes.kill_worker(victim)
    assert _done_markers(store) < 36, "the run finished before the worker was killed"
    dask_processes.start_worker(wait=False)  # a replacement joins (and gets the model)
    thread.join(300)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"].chunks == 36
    _assert_same_store(out, reference)
    dask_processes.wait_for_workers(2)


def test_client_killed_then_resume_computes_only_missing_chunks(
    dask_processes: Any, tmp_path: Path, tiny_model: Path
) -> None:
    from distributed import Client
    from test_pipeline import make_checkpoint

    scene = write_scene(tmp_path / "killclient.tif", 192, 192, seed=6)
    model = tmp_path / "model.pt"
    model.write_bytes(tiny_model.read_bytes())
    reference = _reference(scene, tmp_path / "ref.zarr", model, dask_processes.address)
    rule = _fault(dask_processes, scene, delay=0.15)
    out = tmp_path / "p.zarr"
    store = tmp_path / ".p.zarr.geounet-partial"
    args = ["predict", str(scene), "--out", str(out), "--model", str(model),
            "--scheduler", dask_processes.address, *FAST]
    client_proc = subprocess.Popen([sys.executable, "-m", "geounet", *args],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_until(lambda: _done_markers(store) >= 6 or client_proc.poll() is not None,
                    what="6 chunks")
        client_proc.send_signal(signal.SIGKILL)
    finally:
        client_proc.wait(30)
    assert client_proc.returncode == -signal.SIGKILL and not out.exists()
    with Client(dask_processes.address) as client:  # the tasks already running still finish
        _wait_until(lambda: client.run_on_scheduler(
            lambda dask_scheduler: len(dask_scheduler.tasks)) == 0, what="an idle scheduler")
        _wait_until(lambda: not any(client.run(
            lambda dask_worker: len(dask_worker.state.tasks)).values()), what="idle workers")
    done, reads = _done_markers(store), _reads(rule)
    assert 6 <= done < 36

    model.unlink()
    make_checkpoint(model, seed=1)  # the same file name, other weights
    changed = CliRunner().invoke(cli, [*args, "--resume"])
    assert changed.exit_code == 1 and "the model changed (content sha256" in changed.output
    assert _done_markers(store) == done

    model.write_bytes(tiny_model.read_bytes())
    resumed = CliRunner().invoke(cli, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert f"{done} resumed" in resumed.output
    assert _reads(rule) - reads == 36 - done  # one read per chunk computed
    _assert_same_store(out, reference)


def test_transient_read_failures_are_retried(
    dask_processes: Any, tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster, "DEFAULT_RETRY", cluster.RetryPolicy(backoff=0.05))
    scene = write_scene(tmp_path / "flaky.tif", 96, 96, seed=7)
    reference = _reference(scene, tmp_path / "ref.zarr", tiny_model, dask_processes.address)
    rule = _fault(dask_processes, scene, fail=2)
    result = pipeline.predict(scene, tmp_path / "p.zarr", model=tiny_model,
                              client=dask_processes.address, precision="fp32", chunk_size=32)
    assert result.chunks == 9 and _reads(rule) == 9 + 2
    _assert_same_store(tmp_path / "p.zarr", reference)


def test_read_that_keeps_failing_ends_the_run_with_completed_chunks_kept(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from geounet._faults import ENV

    monkeypatch.setattr(cluster, "DEFAULT_RETRY", cluster.RetryPolicy(backoff=0.01))
    monkeypatch.setenv(ENV, str(tmp_path))
    scene = write_scene(tmp_path / "dead.tif", 96, 96, seed=8)
    reference = _reference(scene, tmp_path / "ref.zarr", tiny_model)
    rule = tmp_path / "read-dead.tif.json"
    rule.write_text(json.dumps({"skip": 3, "fail": 10**6}))
    out = tmp_path / "p.tif"
    args = ["predict", str(scene), "--out", str(out), "--model", str(tiny_model), "--in-process",
            "--workers", "1", *FAST, "--probability-dtype", "uint8"]
    failed = CliRunner().invoke(cli, args)
    assert failed.exit_code == 1 and isinstance(failed.exception, SystemExit)
    assert "3 chunk(s) completed are kept" in failed.output
    assert "Resume with: geounet predict" in failed.output and "--resume" in failed.output
    assert _reads(rule) == 3 + cluster.DEFAULT_RETRY.attempts  # bounded, then it stops
    assert _done_markers(tmp_path / ".p.tif.geounet-partial.zarr") == 3 and not out.exists()

    rule.unlink()  # the storage recovered
    resumed = CliRunner().invoke(cli, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "3 resumed" in resumed.output
    import rasterio

    from geounet.output import open_prediction

    with rasterio.open(out) as cog:
        np.testing.assert_array_equal(cog.read(1), open_prediction(reference).mask.values)


def test_transient_error_class_is_retried_but_user_errors_are_not() -> None:
    assert issubclass(TransientError, OSError)
    policy = cluster.RetryPolicy(attempts=3, backoff=0.5)
    assert [policy.delay(i) for i in (1, 2)] == [0.5, 1.0]


def test_batch_through_scheduler_ships_the_model_and_equals_in_process(
    dask_processes: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`geounet batch --scheduler` with relative paths: the user checkpoint reaches the
    workers as shipped bytes (never as the client's path) and the outputs equal an in-process
    batch."""
    from distributed import Client
    from test_pipeline import make_checkpoint

    from geounet.batch import job as batch
    from geounet.distributed.worker import shipped_models
    from geounet.model.checkpoint import file_sha256

    # a model no other test ships: its presence on the workers comes from this batch alone
    tiny_model = make_checkpoint(tmp_path / "batch_model.pt", seed=17)
    monkeypatch.chdir(tmp_path)
    Path("s").mkdir()
    for seed in (5, 6):
        write_scene(f"s/scene{seed}.tif", 96, 80, seed=seed)
    common = ["--precision", "fp32", "--chunk-size", "48", "--model", str(tiny_model)]
    remote = CliRunner().invoke(cli, ["batch", "s/scene5.tif", "s/scene6.tif", "--out-dir",
                                      "remote", "--scheduler", dask_processes.address,
                                      *common])
    assert remote.exit_code == 0, remote.output
    table = batch.run_batch(["s/scene5.tif", "s/scene6.tif"], "local", model=tiny_model,
                            client="threads", precision="fp32", chunk_size=48)
    assert [row.status for row in table.scenes] == ["done", "done"]
    import geopandas as gpd
    import pyogrio

    for name in ("scene5", "scene6"):
        for layer, _ in pyogrio.list_layers(f"local/{name}.gpkg"):
            ours = gpd.read_file(f"remote/{name}.gpkg", layer=layer)
            theirs = gpd.read_file(f"local/{name}.gpkg", layer=layer)
            assert sorted(ours.geometry.to_wkb()) == sorted(theirs.geometry.to_wkb())
    sha = file_sha256(tiny_model)
    with Client(dask_processes.address) as client:
        assert all(sha in models for models in client.run(shipped_models).values())
