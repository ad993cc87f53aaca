"""A chunk progress bar for the CLI edge (tqdm): chunks done/total, rate, MP/s and ETA.

Shown only on a TTY and not with -q. The library reports through a callback
``progress(done, total, pixels, eta)`` (:data:`geounet.run.eta.ProgressCallback`); this module
is the only place a bar is drawn. The ETA is the library's (the run's measured warm-up, then
its own rate), shown from the first update ("ETA measuring" during the warm-up), not tqdm's
guess from the chunk count.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}{postfix}]"
"""tqdm's default without its own remaining-time guess: the library's ETA is in the postfix."""


def eta_text(eta: float | None) -> str:
    """``"ETA 3 min 05 s"``, or ``"ETA measuring"`` before the warm-up has been timed."""
    from geounet.run.eta import format_seconds

    return "ETA measuring" if eta is None else f"ETA {format_seconds(eta)}"


class ChunkProgress:
    """Callable ``progress(done, total, pixels, eta)`` drawing a tqdm bar on stderr.

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

    def __call__(self, done: int, total: int, pixels: int, eta: float | None = None) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.first_pixels = pixels  # what was computed before the bar began is not timed
            self.start = time.perf_counter()
            self.bar = tqdm(total=total, initial=done, unit="chunk", desc=self.label,
                            file=self.stream, dynamic_ncols=self.width is None,
                            ncols=self.width, smoothing=0.1, leave=True,
                            bar_format=BAR_FORMAT, postfix=eta_text(eta))
            self.bar.refresh()
            return
        if total != self.bar.total:
            self.bar.total = total
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = (pixels - (self.first_pixels or 0)) / 1e6 / elapsed
        self.bar.set_postfix_str(f"{rate:.2f} MP/s, {eta_text(eta)}", refresh=False)
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
