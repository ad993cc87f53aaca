"""Road centerlines: skeleton of the road mask traced into polylines, chunk by chunk.

Each chunk skeletonizes its road mask with a halo and keeps the skeleton edges it owns: an
edge between two 8-neighbouring skeleton pixels belongs to the chunk whose core holds the
edge's first pixel in raster order. Every edge is therefore traced exactly once, and a line
that crosses a seam ends on the same pixel centre in both chunks, so lines stay connected.
"""

from __future__ import annotations

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


def trace_centerlines(
    road: np.ndarray,
    core: tuple[int, int, int, int],
    spur_length: float,
) -> list[np.ndarray]:
    """Trace the road skeleton of a window into polylines owned by its core.

    Parameters
    ----------
    road : bool (height, width) road mask of the chunk with its halo.
    core : (y0, x0, y1, x1) of the core inside ``road``.
    spur_length : lines shorter than this (pixels) that end freely on one side and at a
        junction on the other are dropped, as are free-standing lines shorter than it.

    Returns
    -------
    list of (n, 2) float arrays of (col + 0.5, row + 0.5) pixel-centre coordinates in the
    window's pixel frame.
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
    n_nodes = nodes.size
    # adjacency in CSR form
    src = np.concatenate([a, b])
    dst = np.concatenate([b, a])
    edge_id = np.concatenate([np.arange(a.size), np.arange(a.size)])
    order = np.argsort(src, kind="stable")
    src, dst, edge_id = src[order], dst[order], edge_id[order]
    start = np.searchsorted(src, np.arange(n_nodes + 1))
    degree = np.diff(start)
    used = np.zeros(a.size, dtype=bool)
    node_full_degree = full_degree[nodes]

    def walk(node: int, k: int) -> list[int]:
        path = [node]
        while True:
            used[edge_id[k]] = True
            node = int(dst[k])
            path.append(node)
            if degree[node] != 2:
                return path
            k0, k1 = start[node], start[node + 1]
            nxt = [j for j in range(k0, k1) if not used[edge_id[j]]]
            if not nxt:
                return path  # closed loop
            k = nxt[0]

    lines: list[list[int]] = []
    for node in np.nonzero(degree != 2)[0]:
        for k in range(start[node], start[node + 1]):
            if not used[edge_id[k]]:
                lines.append(walk(int(node), k))
    for k in range(src.size):  # loops with every node of degree 2
        if not used[edge_id[k]]:
            lines.append(walk(int(src[k]), k))

    rows, cols = np.divmod(nodes, width)
    xy = np.column_stack([cols + 0.5, rows + 0.5]).astype(np.float64)
    out = []
    for line in lines:
        coords = xy[line]
        if spur_length > 0:
            ends = node_full_degree[[line[0], line[-1]]]
            free = int((ends == 1).sum())
            junction = int((ends >= 3).sum())
            if (free == 2 or (free == 1 and junction == 1)) and _length(coords) < spur_length:
                continue
        out.append(coords)
    return out


def _length(coords: np.ndarray) -> float:
    d = np.diff(coords, axis=0)
    return float(np.hypot(d[:, 0], d[:, 1]).sum())
