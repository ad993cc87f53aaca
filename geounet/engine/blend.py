"""Blend overlapping tile outputs: tapered weight windows and chunk-sized weighted accumulation.

Used for same-padding models, whose tile outputs are least reliable near tile edges. Each tile
output is multiplied by a separable tapered window (and by the valid mask, so nodata carries
zero weight), summed into float32 buffers the size of the chunk core, and finally divided by
the summed weights. Buffers never exceed one chunk: memory does not grow with the scene.

Examples
--------
>>> acc = BlendAccumulator(num_classes=2, height=4, width=4)
>>> acc.add(np.ones((2, 4, 4), np.float32), 0, 0, weight_window(4, "hann"))
>>> probs, valid = acc.result()
>>> bool(np.allclose(probs, 1.0)), bool(valid.all())
(True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from geounet.config import BlendWindow, choices
from geounet.errors import InputError

DEFAULT_WINDOW: BlendWindow = "hann"


def _window_1d(size: int, kind: str) -> np.ndarray:
    # Sample centres u in (0, 1): every weight is strictly positive, so a pixel covered by any
    # tile always has weight, also at the scene border.
    u = (np.arange(size, dtype=np.float64) + 0.5) / size
    if kind == "uniform":
        return np.ones(size)
    if kind == "hann":
        return np.sin(np.pi * u) ** 2
    if kind == "spline":
        tri = 1.0 - np.abs(2.0 * u - 1.0)  # 0 at the edges, 1 in the middle
        return np.where(tri < 0.5, 2.0 * tri**2, 1.0 - 2.0 * (1.0 - tri) ** 2)
    raise InputError(f"blend window {kind!r} is not one of {choices(BlendWindow)}; pick one of them.")


@lru_cache(maxsize=16)
def _window_cached(size: int, kind: str) -> np.ndarray:
    w = _window_1d(size, kind)
    out = np.outer(w, w).astype(np.float32)
    out.setflags(write=False)
    return out


def weight_window(size: int, kind: BlendWindow = DEFAULT_WINDOW) -> np.ndarray:
    """Separable 2-D tapered weights (float32, ``size x size``), strictly positive.

    Parameters
    ----------
    size : tile output side.
    kind : ``hann`` (sin² taper), ``spline`` (piecewise-quadratic taper) or ``uniform``.

    Examples
    --------
    >>> w = weight_window(8, "hann")
    >>> w.shape, bool(w.min() > 0), float(w.max()) <= 1.0
    ((8, 8), True, True)
    """
    if size <= 0:
        raise InputError(f"window size {size} is not positive; give the tile output side.")
    return _window_cached(int(size), str(kind))


@dataclass(frozen=True)
class TilePiece:
    """A rectangle of one tile's output, kept for a blend finished elsewhere (a seam).

    ``row``, ``col``: the tile's global grid index (tiles are blended in row-major order, so
    the sum at a pixel is the same whichever chunk adds it). ``y0``, ``x0``: the piece's origin
    in scene pixels; ``oy``, ``ox``: its origin inside the tile output (where the blend window
    is cut). ``values`` (K, h, w) float32 tile probabilities, ``valid`` (h, w) bool.
    """

    row: int
    col: int
    y0: int
    x0: int
    oy: int
    ox: int
    values: np.ndarray
    valid: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the piece."""
        return (int(self.valid.shape[0]), int(self.valid.shape[1]))


class BlendAccumulator:
    """Weighted sum of tile outputs over one rectangle, e.g. a chunk core (float32 buffers
    of the rectangle's size).

    Parameters
    ----------
    num_classes : K, channels of each tile output.
    height, width : rectangle size.
    """

    def __init__(self, num_classes: int, height: int, width: int) -> None:
        self.sum = np.zeros((num_classes, height, width), dtype=np.float32)
        self.weight = np.zeros((height, width), dtype=np.float32)

    def add(
        self,
        values: np.ndarray,
        y0: int,
        x0: int,
        window: np.ndarray,
        valid: np.ndarray | None = None,
    ) -> None:
        """Add one tile output placed with its top-left at chunk-core pixel ``(y0, x0)``.

        ``values`` (K, t, t) may stick out of the core on any side; only the overlap is added.
        ``valid`` (t, t) zeroes the weight of nodata pixels.
        """
        _, th, tw = values.shape
        height, width = self.weight.shape
        ya, yb = max(0, y0), min(height, y0 + th)
        xa, xb = max(0, x0), min(width, x0 + tw)
        if ya >= yb or xa >= xb:
            return
        sy, sx = slice(ya - y0, yb - y0), slice(xa - x0, xb - x0)
        w = window[sy, sx]
        if valid is not None:
            w = w * valid[sy, sx]
        self.sum[:, ya:yb, xa:xb] += values[:, sy, sx] * w
        self.weight[ya:yb, xa:xb] += w

    def add_piece(self, piece: TilePiece, y0: int, x0: int, window: np.ndarray) -> None:
        """Add a :class:`TilePiece` to a rectangle whose origin is scene pixel ``(y0, x0)``;
        ``window`` is the whole tile's weight window. The same arithmetic as :meth:`add` of the
        whole tile, so a pixel gets bit-identical weights either way."""
        h, w = piece.shape
        self.add(piece.values, piece.y0 - y0, piece.x0 - x0,
                 window[piece.oy : piece.oy + h, piece.ox : piece.ox + w], piece.valid)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities, valid)``: the weighted mean, 0 where no weight arrived."""
        valid = self.weight > 0
        out = np.divide(self.sum, self.weight, out=np.zeros_like(self.sum), where=valid)
        return out, valid


def pack_pieces(pieces: list[TilePiece] | tuple[TilePiece, ...]) -> dict[str, np.ndarray]:
    """:class:`TilePiece` s as named arrays (for ``numpy.savez``; :func:`unpack_pieces`)."""
    arrays: dict[str, np.ndarray] = {
        "pieces": np.array([[p.row, p.col, p.y0, p.x0, p.oy, p.ox] for p in pieces],
                           dtype=np.int64).reshape(-1, 6)}
    for i, piece in enumerate(pieces):
        arrays[f"values_{i}"] = piece.values
        arrays[f"valid_{i}"] = piece.valid
    return arrays


def unpack_pieces(arrays: dict[str, np.ndarray] | object) -> list[TilePiece]:
    """The :class:`TilePiece` s of :func:`pack_pieces` arrays (a dict or an ``NpzFile``)."""
    table = arrays["pieces"]  # type: ignore[index]
    return [TilePiece(*(int(v) for v in row), arrays[f"values_{i}"],  # type: ignore[index]
                      arrays[f"valid_{i}"])  # type: ignore[index]
            for i, row in enumerate(table)]
