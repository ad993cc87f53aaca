"""A chunk progress bar for the CLI edge (tqdm): chunks done/total, rate, MP/s and ETA.

Shown only on a TTY and not with -q. The library reports through a callback
``progress(done, total, pixels)``; this module is the only place a bar is drawn.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class ChunkProgress:
    """Callable ``progress(done, total, pixels)`` drawing a tqdm bar on stderr.

    Draws nothing unless ``enabled``. The total may change between calls (a batch learns its
    scenes' chunk counts as it plans them); chunks resumed from an earlier run count as done
    but not towards the rate (the library's ``pixels`` are this run's). :meth:`close` ends the
    bar.
    """

    def __init__(self, enabled: bool, *, label: str = "chunks", stream: TextIO | None = None,
                 width: int | None = None) -> None:
        self.enabled = enabled
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.bar: Any = None
        self.first_pixels: int | None = None
        self.start = time.perf_counter()

    def __call__(self, done: int, total: int, pixels: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.first_pixels = pixels  # what was computed before the bar began is not timed
            self.start = time.perf_counter()
            self.bar = tqdm(total=total, initial=done, unit="chunk", desc=self.label,
                            file=self.stream, dynamic_ncols=self.width is None,
                            ncols=self.width, smoothing=0.1, leave=True)
            self.bar.refresh()
            return
        if total != self.bar.total:
            self.bar.total = total
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = (pixels - (self.first_pixels or 0)) / 1e6 / elapsed
        self.bar.set_postfix_str(f"{rate:.2f} MP/s", refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        """Finish the bar's line."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> ChunkProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_for(ctx: Any, label: str = "chunks") -> ChunkProgress:
    """The progress bar a command should use: on only on a TTY and without -q."""
    quiet = bool((ctx.find_root().obj or {}).get("quiet", False))
    return ChunkProgress(enabled=sys.stderr.isatty() and not quiet, label=label)
