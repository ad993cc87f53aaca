"""Road centerlines: skeleton of the road mask traced into polylines, chunk by chunk.

Each chunk skeletonizes its road mask with a halo and keeps the skeleton edges it owns: an
edge between two 8-neighbouring skeleton pixels belongs to the chunk whose core holds the
edge's first pixel in raster order. Every edge is therefore traced exactly once. Lines run
between skeleton nodes of degree != 2 (free ends and junctions); where a line leaves the
chunk's edges (a seam pixel of degree 2 whose other edge another chunk owns) it stops on that
pixel's centre and is left *open*. :class:`LineMerger` joins open ends that meet on the same
pixel, so a road is one line across any number of seams, as if traced on the whole mask, and
prunes spurs on the joined lines.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# (dy, dx) to the later 8-neighbours in raster order; each undirected edge appears once
_DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1))


def _edges(skeleton: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges (flat pixel indices p < q) between 8-neighbouring skeleton pixels, without the
    diagonal short-cuts of staircase corners (a diagonal is dropped when a pixel 4-adjacent to
    both of its ends is skeleton too)."""
    height, width = skeleton.shape
    sk = np.pad(skeleton, 1)
    firsts, seconds = [], []
    for dy, dx in _DIRECTIONS:
        p = sk[1 : height + 1, 1 : width + 1]
        q = sk[1 + dy : height + 1 + dy, 1 + dx : width + 1 + dx]
        keep = p & q
        if dy and dx:
            bridge_a = sk[1 : height + 1, 1 + dx : width + 1 + dx]  # (r, c+dx)
            bridge_b = sk[1 + dy : height + 1 + dy, 1 : width + 1]  # (r+1, c)
            keep &= ~(bridge_a | bridge_b)
        rows, cols = np.nonzero(keep)
        firsts.append(rows * width + cols)
        seconds.append((rows + dy) * width + cols + dx)
    return np.concatenate(firsts), np.concatenate(seconds)


@dataclass
class Piece:
    """A traced line of one window.

    Attributes
    ----------
    coords : (n, 2) float array of (col + 0.5, row + 0.5) pixel-centre coordinates.
    degrees : skeleton degree (in the whole skeleton, halo included) of the first and last
        pixel: 1 a free end, >= 3 a junction, 2 a seam pixel where the line goes on.
    open : whether the first / last pixel is a seam end that another window continues.
    """

    coords: np.ndarray
    degrees: tuple[int, int]
    open: tuple[bool, bool]


def _adjacency(a: np.ndarray, b: np.ndarray, n_nodes: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The undirected edges ``a[i] - b[i]`` in CSR form: ``(src, dst, edge id, start)``,
    node ``n``'s edges at ``start[n]:start[n + 1]``."""
    src = np.concatenate([a, b])
    dst = np.concatenate([b, a])
    edge_id = np.concatenate([np.arange(a.size), np.arange(a.size)])
    order = np.argsort(src, kind="stable")
    src, dst, edge_id = src[order], dst[order], edge_id[order]
    return src, dst, edge_id, np.searchsorted(src, np.arange(n_nodes + 1))


def _walk_lines(src: np.ndarray, dst: np.ndarray, edge_id: np.ndarray, start: np.ndarray,
                through: np.ndarray) -> list[list[int]]:
    """Every edge in one line of node ids: lines run from an end node (not ``through``) to
    the next, then loops whose every node is a through node."""
    used = np.zeros(edge_id.size // 2, dtype=bool)

    def walk(node: int, k: int) -> list[int]:
        path = [node]
        while True:
            used[edge_id[k]] = True
            node = int(dst[k])
            path.append(node)
            if not through[node]:
                return path
            nxt = [j for j in range(start[node], start[node + 1]) if not used[edge_id[j]]]
            if not nxt:
                return path  # closed loop
            k = nxt[0]

    lines: list[list[int]] = []
    for node in np.nonzero(~through)[0]:
        for k in range(start[node], start[node + 1]):
            if not used[edge_id[k]]:
                lines.append(walk(int(node), k))
    for k in range(src.size):  # loops whose every node is a through node
        if not used[edge_id[k]]:
            lines.append(walk(int(src[k]), k))
    return lines


def trace_centerlines(road: np.ndarray, core: tuple[int, int, int, int]) -> list[Piece]:
    """Trace the road skeleton of a window into the line pieces owned by its core.

    Parameters
    ----------
    road : bool (height, width) road mask of the chunk with its halo.
    core : (y0, x0, y1, x1) of the core inside ``road``.

    Returns
    -------
    list of :class:`Piece` in the window's pixel frame. Pieces are not pruned: spurs are
    judged by :class:`LineMerger` once a line is joined across seams.
    """
    from skimage.morphology import skeletonize

    if not road.any():
        return []
    height, width = road.shape
    skeleton = skeletonize(road, method="lee").astype(bool)
    p, q = _edges(skeleton)
    full_degree = np.bincount(np.concatenate([p, q]), minlength=height * width)
    y0, x0, y1, x1 = core
    pr, pc = np.divmod(p, width)
    owned = (pr >= y0) & (pr < y1) & (pc >= x0) & (pc < x1)
    p, q = p[owned], q[owned]
    if p.size == 0:
        return []
    nodes, inverse = np.unique(np.concatenate([p, q]), return_inverse=True)
    a, b = inverse[: p.size], inverse[p.size :]
    src, dst, edge_id, start = _adjacency(a, b, nodes.size)
    degree = np.diff(start)
    node_full_degree = full_degree[nodes]
    # a line passes through a node only where the whole skeleton has degree 2 there and this
    # window owns both edges; everywhere else it ends (free end, junction or seam end)
    through = (degree == 2) & (node_full_degree == 2)
    lines = _walk_lines(src, dst, edge_id, start, through)

    rows, cols = np.divmod(nodes, width)
    xy = np.column_stack([cols + 0.5, rows + 0.5]).astype(np.float64)
    seam_end = (node_full_degree == 2) & (degree == 1)
    return [
        Piece(
            xy[line],
            (int(node_full_degree[line[0]]), int(node_full_degree[line[-1]])),
            (bool(seam_end[line[0]]), bool(seam_end[line[-1]])),
        )
        for line in lines
    ]


def _length(coords: np.ndarray) -> float:
    d = np.diff(coords, axis=0)
    return float(np.hypot(d[:, 0], d[:, 1]).sum())


@dataclass
class _Chain:
    coords: np.ndarray
    ends: list[int]  # scene pixel index (row * width + col) of the first and last vertex
    degrees: list[int]
    open: list[bool]

    def reversed(self) -> _Chain:
        return _Chain(self.coords[::-1], self.ends[::-1], self.degrees[::-1], self.open[::-1])


class LineMerger:
    """Join line pieces of neighbouring windows that meet at seam pixels; prune spurs.

    Parameters
    ----------
    emit : called with the (n, 2) scene pixel coordinates of every finished line.
    spur_length : pixels; a finished line from a free end to a junction, or a free-standing
        line, shorter than this is dropped.
    width : scene width in pixels (pixel index = row * width + col).
    deadline : ``deadline(row, col)`` gives the rank of the last window whose edges can touch
        that pixel; an open end still unmatched after that window is closed as it is.

    Only lines with an open end wait, so what is held is bounded by the lines crossing the
    frontier between processed and unprocessed windows.
    """

    def __init__(
        self,
        emit: Callable[[np.ndarray], None],
        spur_length: float,
        width: int,
        deadline: Callable[[int, int], int],
    ) -> None:
        self.emit = emit
        self.spur_length = spur_length
        self.width = width
        self.deadline = deadline
        self.chains: dict[int, _Chain] = {}
        self.open_ends: dict[int, int] = {}  # pixel index -> chain id
        self.expiry: list[tuple[int, int]] = []  # heap of (deadline rank, pixel index)
        self.next_id = 0

    @property
    def held(self) -> int:
        """Number of lines waiting for a neighbouring window."""
        return len(self.chains)

    def add(self, piece: Piece, dx: float, dy: float) -> None:
        """Add a window's piece, shifted by (dx, dy) into scene pixel coordinates."""
        coords = piece.coords + np.array([dx, dy])
        cols = np.floor(coords[[0, -1], 0]).astype(np.int64)
        rows = np.floor(coords[[0, -1], 1]).astype(np.int64)
        ends = (rows * self.width + cols).tolist()
        chain = _Chain(coords, ends, list(piece.degrees), list(piece.open))
        cid = self.next_id
        self.next_id += 1
        while True:
            if all(chain.open) and chain.ends[0] == chain.ends[1]:
                # both seam ends on one pixel: the two pieces that meet there are this line
                self.open_ends.pop(chain.ends[0], None)
                chain.open = [False, False]
                break
            # an open end registered by another line (never this one's own other end)
            side = next(
                (
                    s
                    for s in (0, 1)
                    if chain.open[s] and self.open_ends.get(chain.ends[s], cid) != cid
                ),
                None,
            )
            if side is None:
                break
            pixel = chain.ends[side]
            other_id = self.open_ends.pop(pixel)
            other = self.chains.pop(other_id)
            chain = _join(chain, side, other, pixel)
            for end, is_open in zip(chain.ends, chain.open):
                if is_open and self.open_ends.get(end) == other_id:
                    self.open_ends[end] = cid
        for end, is_open in zip(chain.ends, chain.open):
            if is_open and end not in self.open_ends:
                self.open_ends[end] = cid
                row, col = divmod(end, self.width)
                heapq.heappush(self.expiry, (self.deadline(row, col), end))
        if any(chain.open):
            self.chains[cid] = chain
        else:
            self._finish(chain)

    def expire(self, rank: int) -> None:
        """Close open ends no window after ``rank`` can continue (skeletons that disagree)."""
        while self.expiry and self.expiry[0][0] <= rank:
            _, pixel = heapq.heappop(self.expiry)
            cid = self.open_ends.pop(pixel, None)
            if cid is None:
                continue
            chain = self.chains[cid]
            chain.open = [o and e != pixel for o, e in zip(chain.open, chain.ends)]
            if not any(chain.open):
                self._finish(self.chains.pop(cid))

    def close(self) -> None:
        """Emit every line still held (nothing once every window was added and expired)."""
        for chain in self.chains.values():
            self._finish(chain)
        self.chains.clear()
        self.open_ends.clear()
        self.expiry.clear()

    def _finish(self, chain: _Chain) -> None:
        if self.spur_length > 0:
            free = sum(d == 1 for d in chain.degrees)
            junction = sum(d >= 3 for d in chain.degrees)
            if (free == 2 or (free == 1 and junction == 1)) and _length(
                chain.coords
            ) < self.spur_length:
                return
        self.emit(chain.coords)


def _join(chain: _Chain, side: int, other: _Chain, pixel: int) -> _Chain:
    """Join ``other`` to ``chain`` at ``pixel`` (an open end of both)."""
    if side == 0:
        chain = chain.reversed()  # pixel now at the end of chain
    if other.ends[0] != pixel or not other.open[0]:
        other = other.reversed()  # pixel now at the start of other
    return _Chain(
        np.concatenate([chain.coords, other.coords[1:]]),
        [chain.ends[0], other.ends[1]],
        [chain.degrees[0], other.degrees[1]],
        [chain.open[0], other.open[1]],
    )
