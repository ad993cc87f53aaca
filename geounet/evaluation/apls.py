"""APLS, the SpaceNet road-graph metric (Average Path Length Similarity), on networkx graphs.

The definition of SpaceNet 3 (Van Etten et al. 2018, and CosmiQ's reference code), in metres:

1. **Control nodes**: every node of a graph plus nodes injected along each edge, evenly, at
   most ``spacing`` apart (an edge of length L gets ceil(L / spacing) - 1 of them).
2. **Snapping**: each control node of one graph is inserted into the other at the nearest
   point of its nearest edge, when that point is within ``snap`` metres (the edge is split
   there; a point on an edge's end is that end); farther nodes are missing there.
3. **Paths**: for every pair of control nodes joined in their own graph by a shortest path of
   length L_own >= ``min_path_length``, the shortest path L_other between their snapped
   nodes in the other graph. The penalty is min(1, |L_own - L_other| / L_own); 1 when a node
   is missing or the pair is not joined there.
4. **Score**: each half is 1 - the mean penalty (0 when it has no pair): truth -> prediction
   (truth control nodes, snapped onto the prediction) and prediction -> truth. APLS is their
   harmonic mean, 0 when either half is 0.

Graphs are those of :func:`geounet.evaluation.roadgraph.road_graph`. Graph surgery (control
nodes, snapping) is networkx; the shortest paths are ``scipy.sparse.csgraph.dijkstra`` (the
same algorithm in C), run in blocks of sources so memory stays a few MB per block.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from geounet.errors import InputError
from geounet.evaluation.report import AplsScores
from geounet.evaluation.roadgraph import (
    PRED_LAYERS,
    TRUTH_LAYERS,
    graph_layer,
    metric_crs,
    read_lines,
    road_graph,
    to_metric,
    total_length,
)

DEFAULT_SPACING = 50.0
"""Metres between injected control nodes (SpaceNet's 50 m)."""
DEFAULT_SNAP = 4.0
"""Metres a control node may be moved onto the other graph (SpaceNet's 4 m)."""
DEFAULT_MIN_PATH = 10.0
"""Metres; shorter paths are not scored (CosmiQ's default)."""
_BLOCK_CELLS = 2_000_000
"""Path lengths computed at once (sources x nodes), about 16 MB."""


def check_apls_options(spacing: float, snap: float, min_path_length: float) -> None:
    """InputError unless spacing and snap are positive and min_path_length is >= 0."""
    for name, value, low in (("APLS spacing", spacing, 0.0), ("APLS snap", snap, 0.0)):
        if not (math.isfinite(value) and value > low):
            raise InputError(f"{name} {value} must be a positive number of metres (e.g. "
                             f"{DEFAULT_SPACING if 'spacing' in name else DEFAULT_SNAP:g}).")
    if not (math.isfinite(min_path_length) and min_path_length >= 0):
        raise InputError(f"APLS min path length {min_path_length} must be 0 or more metres.")


def apls(pred: Any, truth: Any, *, spacing: float = DEFAULT_SPACING,
         snap: float = DEFAULT_SNAP, min_path_length: float = DEFAULT_MIN_PATH) -> AplsScores:
    """APLS of road graph ``pred`` against ``truth`` (both from
    :func:`~geounet.evaluation.roadgraph.road_graph`, in one metric plane).

    Examples
    --------
    >>> from shapely import LineString
    >>> truth = road_graph([LineString([(0, 0), (200, 0)]), LineString([(100, 0), (100, 150)])])
    >>> apls(truth, truth).apls
    1.0
    """
    check_apls_options(spacing, snap, min_path_length)
    truth_cp, truth_control = with_control_nodes(truth, spacing)
    pred_cp, pred_control = with_control_nodes(pred, spacing)
    pred_snapped, on_pred = snap_points(pred, _positions(truth_cp, truth_control), snap)
    truth_snapped, on_truth = snap_points(truth, _positions(pred_cp, pred_control), snap)
    to_pred, n_truth = _half(truth_cp, truth_control, pred_snapped, on_pred, min_path_length)
    to_truth, n_pred = _half(pred_cp, pred_control, truth_snapped, on_truth, min_path_length)
    total = 2 * to_pred * to_truth / (to_pred + to_truth) if to_pred > 0 and to_truth > 0 else 0.0
    return AplsScores(apls=float(min(total, 1.0)), truth_to_pred=to_pred, pred_to_truth=to_truth,
                      truth_paths=n_truth, pred_paths=n_pred,
                      truth_length_m=total_length(truth), pred_length_m=total_length(pred),
                      spacing=spacing, snap=snap, min_path_length=min_path_length)


def _positions(graph: Any, nodes: np.ndarray) -> np.ndarray:
    return np.array([graph.nodes[n]["xy"] for n in nodes], dtype=np.float64).reshape(-1, 2)


def _insert(graph: Any, line: Any, ends: tuple[int, int], offsets: list[float],
            ids: list[int]) -> None:
    """Add ``line`` (from node ``ends[0]`` to ``ends[1]``) to ``graph``, cut at ``offsets``
    (increasing, inside the line) into nodes ``ids``. The pieces carry their length and ends
    only: path lengths are all the scoring needs of them (snapping uses the graph the pieces
    were cut from)."""
    import shapely

    chain = [ends[0], *ids, ends[1]]
    stops = [0.0, *offsets, float(line.length)]
    if ids:
        xy = shapely.get_coordinates(shapely.line_interpolate_point(line, offsets))
        for node, (x, y) in zip(ids, xy):
            graph.add_node(node, xy=(float(x), float(y)))
    for k in range(len(chain) - 1):
        graph.add_edge(chain[k], chain[k + 1], geometry=None, length=stops[k + 1] - stops[k],
                       ends=(chain[k], chain[k + 1]))


def with_control_nodes(graph: Any, spacing: float) -> tuple[Any, np.ndarray]:
    """A copy of ``graph`` with control nodes injected along its edges (rule 1; edges cut
    there carry no geometry), and the ids of all its control nodes (every node)."""
    import networkx as nx

    out = nx.MultiGraph()
    out.add_nodes_from(graph.nodes(data=True))
    next_id = max(graph.nodes, default=-1) + 1
    for _, _, data in graph.edges(data=True):
        length = data["length"]
        n = max(1, math.ceil(length / spacing - 1e-9))
        offsets = [length * k / n for k in range(1, n)]
        ids = list(range(next_id, next_id + len(offsets)))
        next_id += len(offsets)
        _insert(out, data["geometry"], data["ends"], offsets, ids)
    return out, np.array(sorted(out.nodes), dtype=np.int64)


def _nearest_edges(lines: list[Any], points: np.ndarray, snap: float) -> dict[int, int]:
    """Point index -> index of its nearest line within ``snap`` (the lowest index on ties)."""
    import shapely

    tree = shapely.STRtree(lines)
    found = tree.query_nearest(shapely.points(points), max_distance=snap, all_matches=True)
    nearest: dict[int, int] = {}
    for p, e in zip(found[0].tolist(), found[1].tolist()):
        if p not in nearest or e < nearest[p]:
            nearest[p] = e
    return nearest


def snap_points(graph: Any, points: np.ndarray, snap: float) -> tuple[Any, np.ndarray]:
    """A copy of ``graph`` with ``points`` inserted on their nearest edge within ``snap``
    (rule 2; edges cut there carry no geometry), and each point's node id there (-1 when it
    is farther)."""
    import shapely

    out = graph.copy()
    ids = np.full(len(points), -1, dtype=np.int64)
    edges = list(graph.edges(keys=True, data=True))
    if not edges or len(points) == 0:
        return out, ids
    lines = [data["geometry"] for _, _, _, data in edges]
    by_edge: dict[int, list[tuple[float, int]]] = {}
    for p, e in _nearest_edges(lines, points, snap).items():
        by_edge.setdefault(e, []).append((lines[e].project(shapely.Point(points[p])), p))
    next_id = max(graph.nodes, default=-1) + 1
    for e, hits in sorted(by_edge.items()):
        u, v, key, data = edges[e]
        start, stop = data["ends"]
        length = data["length"]
        offsets: list[float] = []
        for t, p in sorted(hits):
            if t <= 1e-9 * max(length, 1.0):
                ids[p] = start
            elif t >= length * (1 - 1e-12):
                ids[p] = stop
            else:
                if not offsets or t != offsets[-1]:
                    offsets.append(t)
                    next_id += 1
                ids[p] = next_id - 1
        if offsets:
            out.remove_edge(u, v, key)
            _insert(out, data["geometry"], (start, stop), offsets,
                    list(range(next_id - len(offsets), next_id)))
    return out, ids


def _csr(graph: Any) -> tuple[Any, dict[int, int]]:
    """Symmetric sparse matrix of edge lengths (shortest of parallel edges), node -> row."""
    from scipy.sparse import csr_matrix

    index = {n: i for i, n in enumerate(graph.nodes)}
    n = len(index)
    triples = [(index[a], index[b], d["length"]) for a, b, d in graph.edges(data=True) if a != b]
    if not triples:
        return csr_matrix((n, n)), index
    r, c, w = (np.array(x) for x in zip(*triples))
    r, c = np.concatenate([r, c]), np.concatenate([c, r])
    w = np.maximum(np.concatenate([w, w]), 1e-12)  # an explicit 0 is no edge in csgraph
    key = r * n + c
    order = np.lexsort((w, key))
    first = np.r_[True, key[order][1:] != key[order][:-1]]
    pick = order[first]
    return csr_matrix((w[pick], (r[pick], c[pick])), shape=(n, n)), index


def _half(own: Any, control: np.ndarray, other: Any, snapped: np.ndarray,
          min_path_length: float) -> tuple[float, int]:
    """Rule 3-4 for one direction: ``(1 - mean penalty, pairs scored)``."""
    from scipy.sparse.csgraph import dijkstra

    if len(control) < 2:
        return 0.0, 0
    own_m, own_index = _csr(own)
    other_m, other_index = _csr(other)
    src = np.array([own_index[n] for n in control])
    dst = np.array([other_index[n] if n >= 0 else -1 for n in snapped])
    present = dst >= 0
    k = len(src)
    block = max(1, min(k, _BLOCK_CELLS // max(own_m.shape[0], other_m.shape[0], 1)))
    penalty, pairs = 0.0, 0
    for s in range(0, k, block):
        rows = np.arange(s, min(s + block, k))
        own_len = dijkstra(own_m, directed=False, indices=src[rows])[:, src]
        scored = ((np.arange(k)[None, :] > rows[:, None]) & np.isfinite(own_len)
                  & (own_len >= min_path_length) & (own_len > 0))
        if not scored.any():
            continue
        other_len = np.full(own_len.shape, np.inf)
        have = present[rows]
        if have.any():
            found = dijkstra(other_m, directed=False, indices=dst[rows][have])
            sub = np.full((int(have.sum()), k), np.inf)
            sub[:, present] = found[:, dst[present]]
            other_len[have] = sub
        with np.errstate(invalid="ignore", divide="ignore"):
            diff = np.where(np.isfinite(other_len),
                            np.minimum(1.0, np.abs(own_len - other_len) / own_len), 1.0)
        penalty += float(diff[scored].sum())
        pairs += int(scored.sum())
    return (1.0 - penalty / pairs if pairs else 0.0), pairs


def score_graph_files(pred: str | Path, truth: str | Path, *, spacing: float = DEFAULT_SPACING,
                      snap: float = DEFAULT_SNAP, min_path_length: float = DEFAULT_MIN_PATH,
                      extent: tuple[Any, Any] | None = None) -> AplsScores:
    """APLS of the road graph in vector file ``pred`` against centrelines ``truth``.

    Layers: ``pred``'s first of :data:`~geounet.evaluation.roadgraph.PRED_LAYERS`
    (``road_edges`` ...), ``truth``'s first of ``TRUTH_LAYERS`` (``roads`` ...), else each
    file's only line layer. Any CRS on either side (both are measured in
    :func:`~geounet.evaluation.roadgraph.metric_crs` of the prediction). ``extent``
    ``(polygon, crs)``: truth lines are clipped to it (the scene's footprint), so roads the
    scene does not show are not counted as missed. A prediction without lines scores 0; a
    truth without lines is an InputError.
    """
    import shapely

    check_apls_options(spacing, snap, min_path_length)
    t_lines, t_crs = read_lines(truth, graph_layer(truth, TRUTH_LAYERS), role="truth")
    p_layer = graph_layer(pred, PRED_LAYERS, role="prediction")
    p_lines, p_crs = read_lines(pred, p_layer, role="prediction", allow_empty=True)
    target = metric_crs(p_crs if p_crs is not None else t_crs,
                        p_lines if len(p_lines) else t_lines)
    t_lines = to_metric(t_lines, t_crs, target, role="truth")
    if extent is not None:
        area = to_metric(np.array([extent[0]], dtype=object), extent[1], target)[0]
        t_lines = shapely.get_parts(shapely.intersection(t_lines, area))
        t_lines = t_lines[(shapely.get_type_id(t_lines) == 1) & ~shapely.is_empty(t_lines)]
        if len(t_lines) == 0:
            raise InputError(f"truth {str(truth)!r} has no road line inside the prediction's "
                             "extent; give centrelines of the same area.")
    p_graph = (road_graph(to_metric(p_lines, p_crs, target, role="prediction"))
               if len(p_lines) else road_graph([]))
    return apls(p_graph, road_graph(t_lines), spacing=spacing, snap=snap,
                min_path_length=min_path_length)
