"""Worker-side state of geounet: which checkpoints were shipped to this process, and where.

:func:`geounet.distributed.cluster.ship_model` registers a worker plugin carrying a checkpoint's bytes; on
each worker the plugin writes them once into the worker's local directory under their SHA-256
(:func:`file_sha256`, from :mod:`geounet.model.checkpoint`) and records the copy here
(:func:`register_shipped`). A task's runner then loads
:func:`model_path` (the shipped copy), so a worker on another machine, in another working
directory or without the client's site-packages loads exactly the model the client planned
with, once per process (the runner cache is keyed by the copy's path, i.e. by content).
"""

from __future__ import annotations

import os
import threading

_SHIPPED: dict[str, str] = {}
"""SHA-256 of a shipped checkpoint -> its path on this worker."""
_LOCK = threading.Lock()


def register_shipped(sha256: str, path: str | os.PathLike[str]) -> None:
    """Record that the checkpoint with content ``sha256`` is at ``path`` in this process."""
    with _LOCK:
        _SHIPPED[sha256] = os.fspath(path)


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
