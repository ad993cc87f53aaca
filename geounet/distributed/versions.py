"""The version check at connect: client, scheduler and workers must run the same stack.

A task pickled by the client and run by a worker must mean the same on both, so
:func:`geounet.distributed.cluster.connect` compares their versions of :data:`VERSION_PACKAGES` and names
each one that differs.
"""

from __future__ import annotations

from typing import Any

from geounet.errors import ClusterError

VERSION_PACKAGES = ("python", "dask", "distributed", "cloudpickle", "msgpack", "numpy", "torch",
                    "geounet")
"""Packages whose versions must agree between the client and every worker (and the scheduler
for Dask's own): a task pickled by one and run by the other must mean the same."""


def check_versions(client: Any) -> dict[str, Any]:
    """Compare the client's, scheduler's and workers' versions of :data:`VERSION_PACKAGES`.

    Returns the versions seen. Raises :class:`ClusterError` naming each package that differs
    (or is missing on a worker, e.g. a worker without geounet installed).
    """
    versions = client.get_versions(packages=["geounet", "torch", "numpy", "cloudpickle"])

    def flat(entry: Any) -> dict[str, Any]:
        if not isinstance(entry, dict):
            return {}
        merged: dict[str, Any] = {}
        for key in ("packages", "host"):
            if isinstance(entry.get(key), dict):
                merged.update(entry[key])
        return merged

    mine = flat(versions.get("client"))
    sides = {"scheduler": flat(versions.get("scheduler"))}
    sides.update({f"worker {addr}": flat(v) for addr, v in versions.get("workers", {}).items()})
    problems = []
    for package in VERSION_PACKAGES:
        want = _normalized(package, mine.get(package))
        for side, found in sides.items():
            if side == "scheduler" and package not in ("python", "dask", "distributed",
                                                      "cloudpickle", "msgpack"):
                continue  # the scheduler never runs geounet's tasks
            got = _normalized(package, found.get(package))
            if got != want:
                problems.append(f"{package} {want or 'missing'} here but "
                                f"{got or 'missing'} on the {side}")
    if problems:
        raise ClusterError(
            "the Dask cluster does not match this client: " + "; ".join(problems) + ". "
            "Install the same versions everywhere (one environment or container image for the "
            "client, scheduler and workers), then reconnect."
        )
    return versions


def _normalized(package: str, version: Any) -> str | None:
    if version is None:
        return None
    text = str(version)
    if package == "python":  # a bug-fix release does not change pickles
        return ".".join(text.split(".")[:2])
    return text
