"""Per-chunk polygons with exact seam merge (ARCHITECTURE invariant 6).

Objects are 4-connected components of equal class value. Each chunk is labelled and traced in
integer pixel coordinates; a component that does not touch a soft seam of its chunk is complete
and emitted at once. Components touching a seam are held in a union-find forest: pieces on both
sides of a seam that share a pixel edge (same class, 4-adjacent across the seam) are united, and
a group is emitted as soon as no unprocessed chunk borders it. Pixel-edge polygons with integer
coordinates union exactly, so the result equals tracing the whole mask at once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

Key = tuple[int, int]


def label_chunk(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label 4-connected components of equal non-zero value; returns (labels int32, count)."""
    from skimage.measure import label

    labels, count = label(mask, background=0, connectivity=1, return_num=True)
    return labels.astype(np.int32, copy=False), int(count)


def trace_labels(labels: np.ndarray, y0: int, x0: int) -> dict[int, Any]:
    """Polygon (global pixel coordinates, x = column, y = row) of every label in a chunk."""
    import shapely
    from rasterio.features import shapes
    from rasterio.transform import Affine
    from shapely.geometry import Polygon

    polygons: dict[int, Any] = {}
    transform = Affine.translation(x0, y0)
    for geometry, value in shapes(labels, mask=labels > 0, connectivity=4, transform=transform):
        rings = geometry["coordinates"]
        polygon = Polygon(rings[0], rings[1:])
        if not polygon.is_valid:
            polygon = shapely.make_valid(polygon)
        polygons[int(value)] = polygon
    return polygons


class _Stats(NamedTuple):
    """Per label of a chunk (index = label): pixels, probability sum and minimum, class value."""

    pixels: np.ndarray
    psum: np.ndarray
    pmin: np.ndarray
    values: np.ndarray


def _label_stats(labels: np.ndarray, count: int, mask: np.ndarray,
                 probability: np.ndarray | None) -> _Stats:
    flat = labels.ravel()
    pixels = np.bincount(flat, minlength=count + 1)
    if probability is not None:
        psum = np.bincount(flat, weights=probability.ravel(), minlength=count + 1)
        pmin = np.full(count + 1, np.inf)
        np.minimum.at(pmin, flat, probability.ravel().astype(np.float64))
    else:
        psum = np.zeros(count + 1)
        pmin = np.full(count + 1, np.inf)
    values = np.zeros(count + 1, dtype=np.int64)
    values[flat] = mask.ravel()
    return _Stats(pixels, psum, pmin, values)


@dataclass
class _Group:
    pieces: list[Any]
    pixels: int
    probability_sum: float
    probability_min: float
    value: int
    pending: set[Key] = field(default_factory=set)


class SeamMerger:
    """Union-find over seam-touching pieces of one cut cell, emitting groups when complete.

    Parameters
    ----------
    emit : called as ``emit(value, polygon, pixels, probability_sum, probability_min)`` for
        each finished object (polygon in global pixel coordinates). Sum and minimum are over
        every pixel of the object, whichever chunks they lie in: the sum adds and the minimum
        takes the smaller across a seam, so both are the whole-scene values (``inf`` minimum
        without probabilities).
    """

    def __init__(self, emit: Callable[[int, Any, int, float, float], None]) -> None:
        self.emit = emit
        self.parent: dict[int, int] = {}
        self.groups: dict[int, _Group] = {}
        self.waiting: dict[Key, list[int]] = defaultdict(list)
        self.next_id = 1

    @property
    def held(self) -> int:
        """Number of open groups (objects waiting for a neighbouring chunk)."""
        return len(self.groups)

    def find(self, node: int) -> int:
        root = node
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[node] != root:
            self.parent[node], node = root, self.parent[node]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        ga, gb = self.groups[ra], self.groups[rb]
        if len(ga.pieces) < len(gb.pieces):
            ra, rb, ga, gb = rb, ra, gb, ga
        self.parent[rb] = ra
        ga.pieces.extend(gb.pieces)
        ga.pixels += gb.pixels
        ga.probability_sum += gb.probability_sum
        ga.probability_min = min(ga.probability_min, gb.probability_min)
        ga.pending |= gb.pending
        del self.groups[rb]

    def add_chunk(
        self,
        key: Key,
        mask: np.ndarray,
        probability: np.ndarray | None,
        y0: int,
        x0: int,
        soft: tuple[bool, bool, bool, bool],
        above: tuple[np.ndarray, np.ndarray] | None,
        left: tuple[np.ndarray, np.ndarray] | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Vectorize one chunk and merge it with its processed neighbours.

        Parameters
        ----------
        key : (row, col) of the chunk in the cell; the chunks below and right are
            ``(row + 1, col)`` and ``(row, col + 1)``.
        mask : class values (0 = nothing to vectorize).
        probability : per-pixel probability of the pixel's own class, or None.
        soft : whether the top, bottom, left, right borders are seams to merge across.
        above, left : (node ids, values) along the bottom row of the chunk above and the right
            column of the chunk to the left, as returned by previous calls.

        Returns
        -------
        (node ids, values) of the bottom row and right column of this chunk, for its neighbours
        (node id 0 where nothing is held).
        """
        top, bottom, west, east = soft
        labels, count = label_chunk(mask)
        stats = _label_stats(labels, count, mask, probability)
        edges = {name: np.unique(line[line > 0]) if is_soft else np.empty(0, np.int32)
                 for name, is_soft, line in (("top", top, labels[0]),
                                             ("bottom", bottom, labels[-1]),
                                             ("left", west, labels[:, 0]),
                                             ("right", east, labels[:, -1]))}
        held_labels = np.unique(np.concatenate(list(edges.values())))
        held = np.zeros(count + 1, dtype=bool)
        held[held_labels] = True

        polygons = trace_labels(labels, y0, x0) if count else {}
        for lab in range(1, count + 1):
            if not held[lab]:
                self.emit(int(stats.values[lab]), polygons[lab], int(stats.pixels[lab]),
                          float(stats.psum[lab]), float(stats.pmin[lab]))
        node_of = self._hold(key, held_labels, polygons, stats, edges["bottom"], edges["right"])
        for neighbour, line_labels, is_soft in ((above, labels[0], top),
                                                (left, labels[:, 0], west)):
            if neighbour is not None and is_soft:
                self._join(neighbour, node_of[line_labels], stats.values[line_labels])
        self._settle(key, {int(node_of[lab]) for lab in held_labels.tolist()})
        bottom_row = labels[-1]
        right_col = labels[:, -1]
        return (
            (node_of[bottom_row], stats.values[bottom_row]),
            (node_of[right_col], stats.values[right_col]),
        )

    def _hold(self, key: Key, held_labels: np.ndarray, polygons: dict[int, Any],
              stats: _Stats, bottom: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Open a group for each held label (waiting for the chunks below and right where it
        touches them); returns the node id of every label (0 where none is held)."""
        node_of = np.zeros(stats.values.size, dtype=np.int64)
        if held_labels.size:
            node_of[held_labels] = self.next_id + np.arange(held_labels.size)
            self.next_id += int(held_labels.size)
        below_key, right_key = (key[0] + 1, key[1]), (key[0], key[1] + 1)
        bottom_set = set(bottom.tolist())
        right_set = set(right.tolist())
        for lab in held_labels.tolist():
            node = int(node_of[lab])
            self.parent[node] = node
            pending = set()
            if lab in bottom_set:
                pending.add(below_key)
                self.waiting[below_key].append(node)
            if lab in right_set:
                pending.add(right_key)
                self.waiting[right_key].append(node)
            self.groups[node] = _Group(
                [polygons[lab]], int(stats.pixels[lab]), float(stats.psum[lab]),
                float(stats.pmin[lab]), int(stats.values[lab]), pending
            )
        return node_of

    def _join(self, neighbour: tuple[np.ndarray, np.ndarray], mine: np.ndarray,
              values: np.ndarray) -> None:
        """Unite the pieces on both sides of a seam that share a pixel edge and a value."""
        ids, vals = neighbour
        match = (ids > 0) & (mine > 0) & (vals == values)
        if match.any():
            pairs = np.unique(np.stack([ids[match], mine[match]], axis=1), axis=0)
            for a, b in pairs.tolist():
                self.union(a, b)

    def _settle(self, key: Key, touched: set[int]) -> None:
        """Chunk ``key`` is done: groups that waited only for it (or were just opened and
        wait for nothing) are finished."""
        for node in self.waiting.pop(key, []):
            root = self.find(node)
            self.groups[root].pending.discard(key)
            touched.add(root)
        for root in {self.find(node) for node in touched}:
            group = self.groups.get(root)
            if group is not None and not group.pending:
                self._finish(root)

    def _finish(self, root: int) -> None:
        import shapely

        group = self.groups.pop(root)
        if len(group.pieces) == 1:
            polygon = group.pieces[0]
        else:
            polygon = shapely.union_all(group.pieces)
        self.emit(group.value, polygon, group.pixels, group.probability_sum,
                  group.probability_min)

    def close(self) -> None:
        """Emit whatever is still held (nothing when every chunk of the cell was added)."""
        for root in list(self.groups):
            self._finish(root)
        self.parent.clear()
        self.waiting.clear()
