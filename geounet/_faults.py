"""Fault injection for tests of retries and resume (off unless ``GEOUNET_FAULTS_DIR`` is set).

With ``GEOUNET_FAULTS_DIR=DIR`` in a process's environment (a worker's too), each scene read
(:func:`geounet.raster.read_window`) looks for ``DIR/read-<scene file name>.json``::

    {"skip": 3, "fail": 2, "delay": 0.2}

The first ``skip`` reads of that scene succeed, the next ``fail`` raise ``OSError`` (a
transient I/O error, as a network read would), later ones succeed; each read first sleeps
``delay`` seconds. The counts live in the file (updated under a lock, replaced atomically),
so they span processes.
"""

from __future__ import annotations

import json
import os
import time

ENV = "GEOUNET_FAULTS_DIR"


def before_read(path: str) -> None:
    """Apply the injected faults for the scene at ``path`` (nothing without :data:`ENV`)."""
    folder = os.environ.get(ENV)
    if not folder:
        return
    rule = os.path.join(folder, f"read-{os.path.basename(path.rstrip('/'))}.json")
    if not os.path.isfile(rule):
        return
    import fcntl

    # a process killed mid-update (the tests SIGKILL workers) must not leave a torn file:
    # lock a side file, write the new counts aside, rename over the rule
    with open(f"{rule}.lock", "a", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with open(rule, encoding="utf-8") as handle:
            spec = json.load(handle)
        seen = int(spec.get("reads", 0))
        spec["reads"] = seen + 1
        partial = f"{rule}.{os.getpid()}.tmp"
        with open(partial, "w", encoding="utf-8") as handle:
            json.dump(spec, handle)
        os.replace(partial, rule)
    if spec.get("delay"):
        time.sleep(float(spec["delay"]))
    skip, fail = int(spec.get("skip", 0)), int(spec.get("fail", 0))
    if skip <= seen < skip + fail:
        raise OSError(f"injected transient read error {seen - skip + 1} of {fail} ({rule})")
