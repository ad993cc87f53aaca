"""What geounet installs on a Dask worker: the model's bytes and the worker's torch threads.

:class:`GeounetPlugin` is a ``distributed.WorkerPlugin`` registered once per model by
:func:`geounet.cluster.ship_model`. It carries the checkpoint's bytes, so a worker on another
machine, in another working directory, or without the client's site-packages loads exactly the
model the client planned with. Each worker writes the bytes once into its local directory under
their SHA-256 and the task's runner is keyed by that hash (:func:`model_path`), so the model is
loaded once per worker process. A worker that joins later (a replacement for a lost one) gets
the plugin from the scheduler when it registers.

The plugin also sets torch's intra-op threads on the worker: the cores of its machine divided
by the Dask threads of all geounet workers on that host, so several worker processes on one
node never oversubscribe it (remote workers included; the local cluster also sets
``OMP_NUM_THREADS``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import Any

from distributed import WorkerPlugin

log = logging.getLogger(__name__)

_SHIPPED: dict[str, str] = {}
"""SHA-256 of a shipped checkpoint -> its path on this worker."""
_LOCK = threading.Lock()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's content (the identity of a model across machines)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_path(path: str | None, sha256: str | None) -> str | None:
    """The checkpoint a task loads: the shipped copy of ``sha256`` if this process has one,
    else ``path`` (in-process runs, and the client itself)."""
    if sha256 is not None:
        with _LOCK:
            shipped = _SHIPPED.get(sha256)
        if shipped is not None and os.path.isfile(shipped):
            return shipped
    return path


def shipped_models() -> dict[str, str]:
    """SHA-256 -> path of the checkpoints shipped to this process (for tests and debugging)."""
    with _LOCK:
        return dict(_SHIPPED)


def _host_threads(identity: dict[str, Any], host: str) -> int:
    workers = identity.get("workers", {}) if isinstance(identity, dict) else {}
    return sum(int(w.get("nthreads", 1)) for w in workers.values() if w.get("host") == host)


class GeounetPlugin(WorkerPlugin):
    """Ship a checkpoint's bytes to every worker (once) and set its torch threads.

    Parameters
    ----------
    data : the checkpoint file's bytes.
    sha256 : their SHA-256 (hex).
    name : the checkpoint's file name (for logs).
    """

    def __init__(self, data: bytes, sha256: str, name: str) -> None:
        self.data = data
        self.sha256 = sha256
        self.filename = name
        self.name = f"geounet-model-{sha256[:16]}"  # one plugin (and one copy) per model

    async def setup(self, worker: Any) -> None:
        folder = Path(worker.local_directory) / "geounet-models"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{self.sha256}.pt"
        if not target.is_file() or file_sha256(target) != self.sha256:
            partial = folder / f".{target.name}.{os.getpid()}"
            partial.write_bytes(self.data)
            os.replace(partial, target)
        with _LOCK:
            _SHIPPED[self.sha256] = str(target)
        self.data = b""  # the worker keeps the file, not a second copy in memory
        log.debug("model %s (%s) shipped to %s", self.filename, self.sha256[:12], target)
        try:
            identity = await worker.scheduler.identity()
            host_threads = _host_threads(identity, worker.address.rsplit(":", 1)[0]
                                         .split("://")[-1])
        except Exception:  # noqa: BLE001 - an older scheduler: count this worker alone
            host_threads = 0
        set_torch_threads(max(host_threads, int(worker.state.nthreads)))


def set_torch_threads(host_threads: int) -> int:
    """Give each Dask thread ``cores // host_threads`` torch threads; return that number.

    ``OMP_NUM_THREADS`` set on the worker (a user's explicit choice, or the local cluster's)
    wins.
    """
    import torch

    from geounet.cluster import available_cores

    explicit = os.environ.get("OMP_NUM_THREADS", "")
    threads = int(explicit) if explicit.isdigit() and int(explicit) > 0 else max(
        1, available_cores() // max(1, host_threads))
    torch.set_num_threads(threads)
    return threads
