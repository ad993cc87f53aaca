"""Shared fixtures: a factory of synthetic georeferenced scenes, and thread limits for torch."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(autouse=True, scope="session")
def _limit_torch_threads() -> None:
    """Keep each test process to the machine's cores so parallel work does not oversubscribe."""
    import os

    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def make_scene(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_scene(257, 300, count=3, dtype="uint8", ...)`` writes a GeoTIFF."""
    from geounet.testing import write_scene

    counter = {"n": 0}

    def factory(height: int = 257, width: int = 300, **kwargs: Any) -> Path:
        counter["n"] += 1
        name = kwargs.pop("name", f"scene{counter['n']}.tif")
        return write_scene(tmp_path / name, height, width, **kwargs)

    return factory


@pytest.fixture(scope="session")
def dask_processes(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1 for the whole
    session, the workers in a working directory of their own. Their environment has
    ``GEOUNET_FAULTS_DIR`` set to ``dask_processes.faults`` (see ``geounet._faults``).
    A test that kills a worker starts a replacement."""
    from geounet._faults import ENV
    from geounet.testing import DaskProcesses

    folder = tmp_path_factory.mktemp("dask")
    faults = folder / "faults"
    faults.mkdir()
    with DaskProcesses(folder, workers=2, env={ENV: str(faults)}) as processes:
        processes.faults = faults  # type: ignore[attr-defined]
        yield processes


@pytest.fixture
def s3_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto S3 server on a free port; the environment points GDAL and s3fs at it."""
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_REGION": "us-east-1", "AWS_S3_ENDPOINT": f"{host}:{port}", "AWS_HTTPS": "NO",
           "AWS_VIRTUAL_HOSTING": "FALSE"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        # fsspec caches S3FileSystem instances with the endpoint they were made with: drop
        # the ones bound to this server so later tests reach their own
        s3fs.S3FileSystem.clear_instance_cache()
