"""Run a command and measure it as a user sees it: wall seconds and the peak resident memory of
its whole process tree (the process and all its children, e.g. a local cluster's workers),
sampled with psutil. Shared by the benchmarks that compare whole runs."""

from __future__ import annotations

import subprocess
import threading
import time
from typing import IO, Any


def run_measured(cmd: list[str], *, stderr: IO[Any] | None = None, interval: float = 0.05,
                 env: dict[str, str] | None = None,
                 cwd: str | None = None) -> tuple[float, int, str, int]:
    """Run ``cmd`` (in ``env`` and ``cwd``, default this process's); return (wall s, peak RSS
    bytes of its process tree, stdout, exit code)."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env,
                            cwd=cwd)
    parent = psutil.Process(proc.pid)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            try:
                procs = [parent, *parent.children(recursive=True)]
            except psutil.Error:
                procs = []
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            peak = max(peak, total)
            stop.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - start
    stop.set()
    thread.join()
    return wall, peak, out, proc.returncode
