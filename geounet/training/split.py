"""Train/validation splits: spatial (blocks of nearby chips, with a buffer) or random.

Chips that carry georeferencing are split in space so that no validation chip touches a
training chip: chips are grouped into units (groups of chips that touch one another, cut into
blocks of ``split_block`` x ``split_block`` chips where a group is larger), whole units go to
validation, and training chips that still touch a validation chip become ``buffer`` chips, used
by neither side. Among several seeded candidate draws the one that loses the fewest chips to
the buffer plus its distance from the wanted validation count is kept (blocks at the edge of
the data need no buffer on their outer side). Chips without georeferencing get a seeded random
split.

"Touch" means sharing an edge (of positive length) or overlapping; chips meeting at a corner
only do not touch.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence

import numpy as np

from geounet.errors import LabelError

log = logging.getLogger(__name__)

Bounds = tuple[float, float, float, float]
"""(left, bottom, right, top) in one CRS."""

SPLITS = ("train", "val", "buffer")
CANDIDATES = 32
"""Seeded unit draws tried; the one with the smallest buffer wins."""


def touching_pairs(bounds: Sequence[Bounds], tolerance: float) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, of boxes that share an edge or overlap.

    Parameters
    ----------
    bounds : boxes (left, bottom, right, top).
    tolerance : gaps and overlaps up to this size (CRS units; e.g. half a pixel) count as
        zero, so that tiles whose edges differ by rounding still touch.

    Examples
    --------
    >>> touching_pairs([(0, 0, 1, 1), (1, 0, 2, 1), (2, 1, 3, 2)], 1e-9)
    [(0, 1)]
    """
    from shapely import STRtree
    from shapely.geometry import box

    boxes = np.asarray(bounds, dtype=np.float64).reshape(-1, 4)
    if len(boxes) < 2:
        return []
    tree = STRtree([box(*b) for b in boxes])
    grown = [box(b[0] - tolerance, b[1] - tolerance, b[2] + tolerance, b[3] + tolerance)
             for b in boxes]
    left, right = tree.query(grown, predicate="intersects")
    pairs = []
    for i, j in zip(left.tolist(), right.tolist()):
        if i >= j:
            continue
        a, b = boxes[i], boxes[j]
        overlap_x = min(a[2], b[2]) - max(a[0], b[0])
        overlap_y = min(a[3], b[3]) - max(a[1], b[1])
        if overlap_x >= -tolerance and overlap_y >= -tolerance and max(
                overlap_x, overlap_y) > tolerance:
            pairs.append((i, j))
    return pairs


def _components(n: int, pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not pairs:
        return np.arange(n)
    rows, cols = np.asarray(pairs).T
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _target(n: int, val_fraction: float) -> int:
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n > 1:
        n_val = min(max(n_val, 1), n - 1)
    return n_val


def assign_units(
    units: Sequence[Hashable],
    pairs: Sequence[tuple[int, int]],
    val_fraction: float,
    seed: int,
) -> list[str]:
    """Give whole units to validation; training chips touching them become ``buffer``.

    Parameters
    ----------
    units : unit id per chip (chips of one unit go to the same side).
    pairs : touching chip pairs (:func:`touching_pairs`).
    val_fraction : wanted share of validation chips (whole units: the nearest reachable).
    seed : seed of the draws.

    Returns
    -------
    ``train``, ``val`` or ``buffer`` per chip.

    Raises
    ------
    LabelError : every draw leaves no training chip (all chips touch each other).
    """
    n = len(units)
    if val_fraction <= 0 or n < 2:
        return ["train"] * n
    order_units = sorted(set(units), key=repr)
    index = {u: i for i, u in enumerate(order_units)}
    unit_of = np.array([index[u] for u in units])
    sizes = np.bincount(unit_of, minlength=len(order_units))
    target = _target(n, val_fraction)
    neighbours: list[list[int]] = [[] for _ in range(n)]
    for i, j in pairs:
        neighbours[i].append(j)
        neighbours[j].append(i)
    best: tuple[tuple[int, int], list[str]] | None = None
    for trial in range(CANDIDATES if len(order_units) > 1 else 1):
        rng = np.random.default_rng((seed, trial))
        chosen: set[int] = set()
        count = 0
        for u in rng.permutation(len(order_units)).tolist():
            if count >= target:
                break
            if count > 0 and (count + sizes[u] > n - 1
                              or count + sizes[u] - target > target - count):
                continue  # it would overshoot more than it helps
            chosen.add(u)
            count += int(sizes[u])
        split = ["val" if unit_of[i] in chosen else "train" for i in range(n)]
        for i in range(n):
            if split[i] == "train" and any(split[j] == "val" for j in neighbours[i]):
                split[i] = "buffer"
        n_train = split.count("train")
        if n_train == 0 or count == 0:
            continue
        # a validation chip off target weighs like a training chip lost to the buffer
        score = (split.count("buffer") + abs(count - target), abs(count - target))
        if best is None or score < best[0]:
            best = (score, split)
    if best is None:
        raise LabelError(
            f"the {n} chips cannot be split so that no validation chip touches a training chip "
            f"(val_fraction {val_fraction}); give the split yourself (train/ and val/ folders "
            "or split.csv), add chips, or train with --val-fraction 0."
        )
    return best[1]


def spatial_split(
    bounds: Sequence[Bounds],
    *,
    val_fraction: float,
    seed: int = 0,
    split_block: int = 4,
    tolerance: float = 0.0,
) -> list[str]:
    """Split georeferenced chips in space: no validation chip touches a training chip.

    Parameters
    ----------
    bounds : chip boxes in one CRS.
    val_fraction : wanted validation share (of chips).
    seed : seed of the draws.
    split_block : chips per block side where a group of touching chips is cut into blocks.
    tolerance : CRS units below which gaps count as contact (e.g. half a pixel).

    Returns
    -------
    ``train``, ``val`` or ``buffer`` per chip.

    Examples
    --------
    >>> spatial_split([(0, 0, 1, 1), (5, 5, 6, 6)], val_fraction=0.5)
    ['val', 'train']
    """
    boxes = np.asarray(bounds, dtype=np.float64).reshape(-1, 4)
    pairs = touching_pairs(boxes, tolerance)
    comp = _components(len(boxes), pairs)
    width = float(np.median(boxes[:, 2] - boxes[:, 0])) if len(boxes) else 1.0
    height = float(np.median(boxes[:, 3] - boxes[:, 1])) if len(boxes) else 1.0
    units: list[Hashable] = [None] * len(boxes)
    for c in np.unique(comp):
        members = np.flatnonzero(comp == c)
        if len(members) <= split_block * split_block:
            for i in members:
                units[i] = (int(c), 0, 0)
            continue
        x0, y1 = boxes[members, 0].min(), boxes[members, 3].max()
        for i in members:
            cx = (boxes[i, 0] + boxes[i, 2]) / 2
            cy = (boxes[i, 1] + boxes[i, 3]) / 2
            units[i] = (int(c), int((y1 - cy) // (split_block * height)),
                        int((cx - x0) // (split_block * width)))
    try:
        split = assign_units(units, pairs, val_fraction, seed)
    except LabelError:
        if split_block <= 1:
            raise
        return spatial_split(bounds, val_fraction=val_fraction, seed=seed,
                             split_block=split_block // 2, tolerance=tolerance)
    log.debug("spatial split: %d units of up to %d x %d chips, %d touching pairs",
              len(set(units)), split_block, split_block, len(pairs))
    return split


def random_split(n: int, *, val_fraction: float, seed: int = 0) -> list[str]:
    """Seeded random split of ``n`` chips (at least one on each side when possible)."""
    rng = np.random.default_rng(seed)
    n_val = _target(n, val_fraction)
    val = set(rng.permutation(n)[:n_val].tolist())
    return ["val" if i in val else "train" for i in range(n)]
