"""The window walk of one pass: the order of the windows (the chunk grid cut by the cut
grid) and reading them one by one into the seam merger and the centerline tracer."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

import numpy as np

from geounet.config import NODATA_CLASS
from geounet.errors import InputError
from geounet.vectorization._centerlines import LineMerger, trace_centerlines
from geounet.vectorization._defaults import CENTERLINE_HALO
from geounet.vectorization._layers import PolygonLayer
from geounet.vectorization._polygons import SeamMerger
from geounet.vectorization._source import PredictionReader


def _breaks(start: int, stop: int, step: int) -> list[int]:
    inner = range((start // step + 1) * step, stop, step)
    return [start, *inner, stop]


class WindowOrder:
    """The windows of one pass: the chunk grid cut by the cut grid, cut cells in row-major
    order and windows in row-major order inside each cell. ``rank`` numbers them in that order."""

    def __init__(self, height: int, width: int, chunk_size: int, cut_size: int | None) -> None:
        self.height, self.width = height, width
        self.cell = cut_size or max(height, width)
        self.cells_across = -(-width // self.cell)
        self.plans: list[tuple[list[int], list[int]]] = []
        self.offsets: list[int] = []
        total = 0
        for cy in range(0, height, self.cell):
            for cx in range(0, width, self.cell):
                ys = _breaks(cy, min(cy + self.cell, height), chunk_size)
                xs = _breaks(cx, min(cx + self.cell, width), chunk_size)
                self.plans.append((ys, xs))
                self.offsets.append(total)
                total += (len(ys) - 1) * (len(xs) - 1)
        self.total = total

    def rank(self, row: int, col: int) -> int:
        """Position in processing order of the window holding pixel (row, col)."""
        index = (row // self.cell) * self.cells_across + col // self.cell
        ys, xs = self.plans[index]
        i = bisect.bisect_right(ys, row) - 1
        j = bisect.bisect_right(xs, col) - 1
        return self.offsets[index] + i * (len(xs) - 1) + j

    def deadline(self, row: int, col: int) -> int:
        """Rank of the last window holding a pixel of the 3 x 3 block around (row, col)."""
        rows = (max(row - 1, 0), min(row + 1, self.height - 1))
        cols = (max(col - 1, 0), min(col + 1, self.width - 1))
        return max(self.rank(r, c) for r in rows for c in cols)


def run_windows(
    reader: PredictionReader,
    buffers: dict[int, PolygonLayer],
    *,
    order: WindowOrder,
    road_value: int | None,
    line_writer: Callable[[list[np.ndarray]], None],
    spur_px: float,
    progress: Callable[[int, int], None] | None,
) -> dict[str, int]:
    """Walk cut cells in row-major order and, inside each, its windows in row-major order."""
    values = np.array(sorted(buffers), dtype=np.uint8)
    lookup = np.zeros(256, dtype=np.uint8)
    lookup[values] = values  # everything else (background, other classes, nodata) -> 0
    n_classes = len(reader.classes)
    rank = 0
    max_held = 0
    finished_lines: list[np.ndarray] = []
    lines = (
        LineMerger(finished_lines.append, spur_px, reader.width, order.deadline)
        if road_value is not None
        else None
    )

    def emit(value: int, polygon: Any, pixels: int, psum: float, pmin: float) -> None:
        buffers[value].add(polygon, pixels, psum, pmin)

    for ys, xs in order.plans:
        merger = SeamMerger(emit)
        above: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for r in range(len(ys) - 1):
            left = None
            for col in range(len(xs) - 1):
                y0, y1, x0, x1 = ys[r], ys[r + 1], xs[col], xs[col + 1]
                raw = reader.read_mask(y0, x0, y1 - y0, x1 - x0)
                _check_classes(raw, n_classes, reader.path, y0, x0)
                mask = lookup[raw]
                probability = _own_probability(reader, mask, values, y0, x0)
                soft = (r > 0, r < len(ys) - 2, col > 0, col < len(xs) - 2)
                bottom, right = merger.add_chunk(
                    (r, col), mask, probability, y0, x0, soft, above.get(col), left
                )
                above[col], left = bottom, right
                held = merger.held
                if lines is not None:
                    _add_centerlines(reader, lines, road_value, y0, x0, y1 - y0, x1 - x0)
                    lines.expire(rank)
                    held += lines.held
                    line_writer(finished_lines)
                    finished_lines.clear()
                max_held = max(max_held, held)
                rank += 1
                if progress is not None:
                    progress(rank, order.total)
        merger.close()
    if lines is not None:
        lines.close()
        line_writer(finished_lines)
    return {"chunks": order.total, "max_held": max_held}


def _own_probability(reader: PredictionReader, mask: np.ndarray, values: np.ndarray,
                     y0: int, x0: int) -> np.ndarray | None:
    """Per pixel, the probability of its own class in ``mask`` (None without probabilities,
    or when the window holds no wanted class)."""
    if not (reader.has_probabilities and mask.any()):
        return None
    height, width = mask.shape
    probability = np.zeros(mask.shape, dtype=np.float32)
    for v in values.tolist():
        sel = mask == v
        if sel.any():
            probability[sel] = reader.read_probability(v, y0, x0, height, width)[sel]
    return probability


def _add_centerlines(reader: PredictionReader, lines: LineMerger, road_value: int | None,
                     y0: int, x0: int, height: int, width: int) -> None:
    """Trace the road skeleton of one window (read with a halo) into ``lines``."""
    halo = CENTERLINE_HALO
    road = reader.read_mask(y0 - halo, x0 - halo, height + 2 * halo,
                            width + 2 * halo) == road_value
    core = (halo, halo, halo + height, halo + width)
    for piece in trace_centerlines(road, core):
        lines.add(piece, x0 - halo, y0 - halo)


def _check_classes(raw: np.ndarray, n_classes: int, path: str, y0: int, x0: int) -> None:
    """A class mask holds class indices 0..K-1 and 255 (nodata), nothing else."""
    top = int(raw.max(initial=0, where=raw != NODATA_CLASS))
    if top >= n_classes:
        raise InputError(
            f"{path!r} has value {top} near pixel (row {y0}, col {x0}), but its classes are "
            f"0..{n_classes - 1} (255 = nodata); it is not a class mask. Give the prediction "
            "(.zarr store or class GeoTIFF written by `geounet predict`), not an image."
        )
