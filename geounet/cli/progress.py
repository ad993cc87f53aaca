"""A chunk progress bar for the CLI edge: chunks done/total and MP/s, only on a TTY and not with -q."""

from __future__ import annotations

import sys
import time
from typing import TextIO

import click


class ChunkProgress:
    """Callable ``progress(done, total, pixels)`` drawing a one-line bar on stderr.

    Draws nothing unless ``enabled``; :meth:`close` ends the line.
    """

    def __init__(self, enabled: bool, *, label: str = "chunks", stream: TextIO | None = None,
                 width: int = 30) -> None:
        self.enabled = enabled
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.start = time.perf_counter()
        self.first_pixels: int | None = None
        self.drawn = False

    def __call__(self, done: int, total: int, pixels: int) -> None:
        if not self.enabled:
            return
        if self.first_pixels is None:  # chunks resumed from an earlier run are not timed
            self.first_pixels = pixels
            self.start = time.perf_counter()
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = (pixels - self.first_pixels) / 1e6 / elapsed
        filled = int(self.width * done / total) if total else self.width
        bar = "#" * filled + "-" * (self.width - filled)
        click.echo(f"\r[{bar}] {done}/{total} {self.label}  {rate:.2f} MP/s", nl=False,
                   file=self.stream)
        self.drawn = True

    def close(self) -> None:
        """Finish the bar's line."""
        if self.drawn:
            click.echo("", file=self.stream)
            self.drawn = False

    def __enter__(self) -> ChunkProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_for(ctx: click.Context, label: str = "chunks") -> ChunkProgress:
    """The progress bar a command should use: on only on a TTY and without -q."""
    quiet = bool((ctx.find_root().obj or {}).get("quiet", False))
    return ChunkProgress(enabled=sys.stderr.isatty() and not quiet, label=label)
