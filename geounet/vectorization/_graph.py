"""The road network as a graph: nodes and edges built from the joined road centerlines.

The lines :class:`~geounet.vectorization._centerlines.LineMerger` finishes are seam-exact:
the same lines, vertex for vertex, however the scene is chunked (ARCHITECTURE invariant 6).
:class:`GraphBuilder` collects them (the road network itself is all it holds: no mask, no
window) and builds the graph once the roads pass is done, by rules that depend only on the
*set* of lines, never on the order they arrived in, so the graph is seam-exact too:

1. Nodes are line ends, merged by exact coordinates (skeleton pixel centres); edges are the
   lines. A free-standing loop gets its node at its first vertex in (row, col) order.
2. Junctions (degree >= 3) joined by an edge shorter than the junction merge length become one
   node at their mean position: the skeleton splits one crossing of two roads into two 3-way
   junctions a few pixels apart.
3. Bubbles: a loop (an edge from a node back to itself), or an edge between two nodes that a
   shorter edge joins too, shorter than the bubble length is dropped: the skeleton runs round
   both sides of a small hole in the road mask (a car, a shadow), and merged junctions leave
   such rings as loops.
4. Gaps: each free end (degree 1) is joined by a straight edge to the nearest point of another
   edge within the gap length, unless the network already joins the two within 3 times that
   distance (so a dead end is never tied back to its own junction). A target within the
   junction merge length of an edge's end snaps to that end. Targets are chosen on the graph
   before any bridge is added; two free ends that choose each other get one bridge.
5. Scene edge: a free end that the gap length, straight ahead along its edge's last gap
   length, takes to the scene's edge is extended to it (the skeleton of a road leaving the
   scene stops about half a road width short of the edge, where the mask ends).
6. Nodes of degree 2 are dissolved: their two edges become one (then rule 3 and this one
   once more, for the rings dissolving closes).
7. Nodes are numbered in (row, col) order of their position; edges run from the lower id to
   the higher and are sorted by (u, v, geometry).

Distances are metres converted once to pixels at the scene's pixel size
(:func:`geounet.georef.pixel_size_m`, the rule every other vectorize length uses).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from geounet.georef import Frame
from geounet.vectorization._layers import BATCH
from geounet.vectorization._source import PredictionReader
from geounet.vectorization._writer import FeatureWriter

Key = tuple[float, float]
"""A node: its (x, y) = (col, row) position in scene pixel coordinates."""


def _key(xy: Any) -> Key:
    return (float(xy[0]), float(xy[1]))


def _order(key: Key) -> tuple[float, float]:
    """Sort key of a node: row, then column."""
    return (key[1], key[0])


def _length(coords: np.ndarray) -> float:
    d = np.diff(coords, axis=0)
    return float(np.hypot(d[:, 0], d[:, 1]).sum())


@dataclass(frozen=True)
class RoadGraph:
    """A finished road graph in scene pixel coordinates.

    Attributes
    ----------
    nodes : (N, 2) float array of node (x, y) positions; a node's id is its row here.
    degree : (N,) edge ends at each node (a loop counts twice).
    u, v : (E,) node ids of each edge's ends, ``u <= v``.
    edges : E coordinate arrays, each from node ``u`` to node ``v``.
    """

    nodes: np.ndarray
    degree: np.ndarray
    u: np.ndarray
    v: np.ndarray
    edges: list[np.ndarray]


class GraphBuilder:
    """Collect finished centerlines (scene pixel coordinates) and build the road graph.

    Parameters
    ----------
    gap : pixels; free ends within this distance of the network are bridged, or extended to
        the scene's edge (0: off).
    merge : pixels; junctions joined by a shorter edge are merged (0: off).
    bubble : pixels; shorter loops and second edges between two nodes are dropped (0: off).
    height, width : the scene's size in pixels.
    """

    def __init__(self, *, gap: float, merge: float, bubble: float, height: int,
                 width: int) -> None:
        self.gap, self.merge, self.bubble = float(gap), float(merge), float(bubble)
        self.height, self.width = height, width
        self.lines: list[np.ndarray] = []

    def add(self, lines: list[np.ndarray]) -> None:
        self.lines.extend(_compact(c) for c in lines if len(c) >= 2)

    @property
    def held(self) -> int:
        """Vertices held (the road network's centerline pixels)."""
        return sum(len(c) for c in self.lines)

    def build(self) -> RoadGraph:
        graph = _multigraph(_canonical(self.lines))  # consumes self.lines
        if self.merge > 0:
            graph = _merge_junctions(graph, self.merge)
        if self.bubble > 0:
            _drop_bubbles(graph, self.bubble)
        if self.gap > 0:
            graph = _bridge_gaps(graph, self.gap, self.merge)
            _extend_to_edge(graph, self.gap, self.height, self.width)
        _dissolve(graph)
        if self.bubble > 0:  # dissolving can close new small rings: once more
            _drop_bubbles(graph, self.bubble)
            _dissolve(graph)
        return _numbered(graph)


def _compact(coords: Any) -> np.ndarray:
    """``coords`` held as float32 when that is exact (skeleton pixel centres are halves of
    integers, exact in float32 below 2**23), else float64: the held network takes half the
    memory and :func:`_canonical` gets the same float64 values back."""
    full = np.array(coords, dtype=np.float64)
    small = full.astype(np.float32)
    return small if np.array_equal(small, full) else full


def _canonical(lines: list[np.ndarray]) -> list[np.ndarray]:
    """Every line in one direction (and a free loop from one vertex), sorted: the input of
    the graph no longer depends on the order or direction in which lines were finished.
    ``lines`` is emptied."""
    ends: Counter[Key] = Counter()
    for c in lines:
        ends[_key(c[0])] += 1
        ends[_key(c[-1])] += 1
    out = []
    while lines:  # emptied as it goes: the held lines and their float64 copies never coexist
        c = np.asarray(lines.pop(), dtype=np.float64)
        first, last = _key(c[0]), _key(c[-1])
        if first == last:
            if ends[first] == 2 and len(c) > 3:  # free-standing loop: start at its first vertex
                ring = c[:-1]
                k = int(np.lexsort((ring[:, 0], ring[:, 1]))[0])
                ring = np.roll(ring, -k, axis=0)
                c = np.vstack([ring, ring[:1]])
            if _order(_key(c[-2])) < _order(_key(c[1])):
                c = c[::-1]
        elif _order(last) < _order(first):
            c = c[::-1]
        out.append(np.ascontiguousarray(c))
    out.sort(key=lambda c: c.tobytes())
    return out


def _add(graph: Any, coords: np.ndarray) -> None:
    """Add an edge whose ends are the nodes at its first and last vertex."""
    graph.add_edge(_key(coords[0]), _key(coords[-1]), coords=coords, length=_length(coords))


def _multigraph(lines: list[np.ndarray]) -> Any:
    import networkx as nx

    graph = nx.MultiGraph()
    for coords in lines:
        _add(graph, coords)
    return graph


def _merge_junctions(graph: Any, merge: float) -> Any:
    """Rule 2: junctions joined by an edge shorter than ``merge`` become one node."""
    import networkx as nx

    parent: dict[Key, Key] = {}

    def find(n: Key) -> Key:
        while parent.setdefault(n, n) != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for u, v, data in graph.edges(data=True):
        if u != v and data["length"] < merge and graph.degree(u) >= 3 and graph.degree(v) >= 3:
            a, b = sorted((find(u), find(v)), key=_order)
            parent[b] = a
    if not parent:
        return graph
    clusters: dict[Key, list[Key]] = defaultdict(list)
    for n in list(parent):
        clusters[find(n)].append(n)
    moved: dict[Key, Key] = {}
    for members in clusters.values():
        centre = _key(np.array(sorted(members, key=_order)).mean(axis=0))
        moved.update({m: centre for m in members})
    out = nx.MultiGraph()
    for u, v, data in graph.edges(data=True):
        if u in moved and v in moved and moved[u] == moved[v] and data["length"] < merge:
            continue  # inside a crossing
        coords = data["coords"].copy()
        for end in (0, -1):
            coords[end] = moved.get(_key(coords[end]), _key(coords[end]))
        _add(out, coords)
    return out


def _drop_bubbles(graph: Any, limit: float) -> None:
    """Rule 3: drop loops, and all but the shortest of the edges joining two nodes, shorter
    than ``limit`` (in place)."""
    drop = []
    pairs = sorted({tuple(sorted((a, b), key=_order)) for a, b in graph.edges()},
                   key=lambda p: (_order(p[0]), _order(p[1])))
    for u, v in pairs:
        edges = sorted(((d["length"], d["coords"].tobytes(), k) for k, d in graph[u][v].items()))
        keep = 0 if u == v else 1  # the shortest of parallel edges stays
        drop += [(u, v, k) for length, _, k in edges[keep:] if length < limit]
    graph.remove_edges_from(drop)
    graph.remove_nodes_from([n for n in list(graph) if graph.degree(n) == 0])


def _gap_target(graph: Any, end: Key, own: int, lines: _Lines, tree: Any, gap: float,
                snap: float) -> tuple[float, int, float, Key] | None:
    """Rule 4 for one free end: ``(distance, edge, offset along it, target point)`` or None."""
    import networkx as nx
    import shapely

    point = shapely.Point(end)
    boxed = tree.query(shapely.box(end[0] - gap, end[1] - gap, end[0] + gap, end[1] + gap))
    near = [i for i in sorted(int(i) for i in boxed)
            if i != own and shapely.dwithin(lines[i], point, gap)]
    if not near:
        return None
    reach = nx.single_source_dijkstra_path_length(graph, end, cutoff=3 * gap, weight="length")
    best = None
    for i in near:
        line = lines[i]
        coords = np.asarray(line.coords)
        length, t = line.length, line.project(point)
        if t <= snap:
            t, xy = 0.0, coords[0]
        elif length - t <= snap:
            t, xy = length, coords[-1]
        else:
            xy = np.asarray(line.interpolate(t).coords[0])
        d = math.hypot(xy[0] - end[0], xy[1] - end[1])
        network = min(reach.get(_key(coords[0]), math.inf) + t,
                      reach.get(_key(coords[-1]), math.inf) + length - t)
        if d == 0 or d > gap or network <= 3 * d:
            continue
        if best is None or (d, i, t) < best[:3]:
            best = (d, i, t, _key(xy))
    return best


def _bridge_gaps(graph: Any, gap: float, snap: float) -> Any:
    """Rule 4: bridge free ends to the nearest point of the network within ``gap``."""
    import networkx as nx
    import shapely

    edges = [data["coords"] for _, _, data in graph.edges(data=True)]
    lines = _Lines(edges)
    tree = shapely.STRtree(lines.envelopes())
    own: dict[Key, int] = {}
    for i, coords in enumerate(edges):
        own[_key(coords[0])] = own[_key(coords[-1])] = i
    free = sorted((n for n in graph if graph.degree(n) == 1), key=_order)
    chosen = {}
    for end in free:
        target = _gap_target(graph, end, own[end], lines, tree, gap, snap)
        if target is not None:
            chosen[end] = target
    splits: dict[int, set[float]] = defaultdict(set)
    bridges = []
    for end, (_, i, t, xy) in chosen.items():
        if xy in chosen and chosen[xy][3] == end and _order(xy) < _order(end):
            continue  # two free ends that chose each other: the other one adds the bridge
        if 0.0 < t < lines[i].length:
            splits[i].add(t)
        bridges.append(np.array([end, xy], dtype=np.float64))
    out = nx.MultiGraph()
    for i, coords in enumerate(edges):
        offsets = sorted(splits.get(i, ()))
        for piece in (_split(lines[i], coords, offsets) if offsets else [coords]):
            _add(out, piece)
    for bridge in bridges:
        _add(out, bridge)
    return out


class _Lines:
    """The edges as shapely lines, made when first asked for: the gap search needs only the
    few near a free end, and a whole scene's network as GEOS lines would be a second copy of
    every vertex (the tree holds the edges' envelopes, four numbers each)."""

    def __init__(self, edges: list[np.ndarray]) -> None:
        self.edges = edges
        self.made: dict[int, Any] = {}

    def envelopes(self) -> Any:
        import shapely

        lo = np.array([c.min(axis=0) for c in self.edges]).reshape(-1, 2)
        hi = np.array([c.max(axis=0) for c in self.edges]).reshape(-1, 2)
        return shapely.box(lo[:, 0], lo[:, 1], hi[:, 0], hi[:, 1])

    def __getitem__(self, i: int) -> Any:
        import shapely

        if i not in self.made:
            self.made[i] = shapely.LineString(self.edges[i])
        return self.made[i]


def _split(line: Any, coords: np.ndarray, offsets: list[float]) -> list[np.ndarray]:
    """``coords`` cut at ``offsets`` along it, each cut point exactly shared by two pieces."""
    from shapely.ops import substring

    if not offsets:
        return [coords]
    stops = [0.0, *offsets, line.length]
    points = [coords[0], *(np.asarray(line.interpolate(t).coords[0]) for t in offsets),
              coords[-1]]
    pieces = []
    for k in range(len(stops) - 1):
        piece = np.array(substring(line, stops[k], stops[k + 1]).coords, dtype=np.float64)
        if len(piece) < 2:
            piece = np.array([points[k], points[k + 1]], dtype=np.float64)
        piece[0], piece[-1] = points[k], points[k + 1]
        pieces.append(piece)
    return pieces


def _edge_hit(coords: np.ndarray, gap: float, height: int, width: int) -> np.ndarray | None:
    """Where the ray from ``coords[-1]``, heading as the line's last ``gap`` does, leaves the
    scene, when that is within ``gap``; else None."""
    steps = np.hypot(*np.diff(coords[::-1], axis=0).T)
    back = int(min(np.searchsorted(np.cumsum(steps), gap), len(coords) - 2))
    heading = coords[-1] - coords[-2 - back]
    norm = math.hypot(*heading)
    if norm == 0:
        return None
    heading = heading / norm
    ahead = [(limit - coords[-1][axis]) / heading[axis]
             for axis, limit in ((0, 0.0), (0, float(width)), (1, 0.0), (1, float(height)))
             if heading[axis] != 0 and (limit - coords[-1][axis]) / heading[axis] > 0]
    if not ahead or min(ahead) > gap:
        return None
    hit = coords[-1] + min(ahead) * heading
    return np.clip(hit, (0.0, 0.0), (float(width), float(height)))


def _extend_to_edge(graph: Any, gap: float, height: int, width: int) -> None:
    """Rule 5: extend free ends that head out of the scene within ``gap`` (in place)."""
    for node in sorted((n for n in graph if graph.degree(n) == 1), key=_order):
        (_, _, data), = graph.edges(node, data=True)
        coords = data["coords"] if _key(data["coords"][-1]) == node else data["coords"][::-1]
        hit = _edge_hit(coords, gap, height, width)
        if hit is None or _key(hit) in graph:
            continue
        graph.remove_node(node)
        _add(graph, np.vstack([coords, hit[None, :]]))


def _dissolve(graph: Any) -> None:
    """Rule 6: join the two edges of every node of degree 2 (in place)."""
    for node in sorted(graph.nodes, key=_order):
        if graph.degree(node) != 2 or graph.has_edge(node, node):
            continue
        (_, _, first), (_, _, second) = graph.edges(node, data=True)
        into = first["coords"] if _key(first["coords"][-1]) == node else first["coords"][::-1]
        out = second["coords"] if _key(second["coords"][0]) == node else second["coords"][::-1]
        graph.remove_node(node)
        _add(graph, np.vstack([into, out[1:]]))


def _numbered(graph: Any) -> RoadGraph:
    """Rule 7: node ids in (row, col) order; edges from the lower id, sorted."""
    keys = sorted(graph.nodes, key=_order)
    ids = {k: i for i, k in enumerate(keys)}
    rows = []
    for _, _, data in graph.edges(data=True):
        coords = data["coords"]
        a, b = ids[_key(coords[0])], ids[_key(coords[-1])]
        if a > b or (a == b and _order(_key(coords[-2])) < _order(_key(coords[1]))):
            coords, a, b = coords[::-1], b, a
        rows.append((a, b, np.ascontiguousarray(coords)))
    rows.sort(key=lambda r: (r[0], r[1], r[2].tobytes()))
    return RoadGraph(
        nodes=np.array(keys, dtype=np.float64).reshape(-1, 2),
        degree=np.array([graph.degree(k) for k in keys], dtype=np.int64),
        u=np.array([r[0] for r in rows], dtype=np.int64),
        v=np.array([r[1] for r in rows], dtype=np.int64),
        edges=[r[2] for r in rows],
    )


def _samples(graph: RoadGraph, height: int, width: int) -> tuple[np.ndarray, ...]:
    """The pixels under every edge, sampled at most 1 px apart: rows, cols, edge index."""
    import shapely

    dense = shapely.segmentize(np.array([shapely.LineString(c) for c in graph.edges]), 1.0)
    xy, index = shapely.get_coordinates(dense, return_index=True)
    cols = np.clip(np.floor(xy[:, 0]).astype(np.int64), 0, width - 1)
    rows = np.clip(np.floor(xy[:, 1]).astype(np.int64), 0, height - 1)
    keep = np.ones(len(index), dtype=bool)  # a pixel counts once per edge where it repeats
    keep[1:] = (index[1:] != index[:-1]) | (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
    return rows[keep], cols[keep], index[keep]


def mean_probabilities(reader: PredictionReader, band: int, graph: RoadGraph,
                       window: int) -> np.ndarray:
    """Mean road probability of each edge over the pixels under it (NaN without
    probabilities). Edges are sampled in batches of :data:`SAMPLE_BATCH` vertices, each read
    window by window, only the box of its samples in each window; an edge's mean is summed
    along the edge in one fixed order, so it depends on neither ``window`` nor the batches."""
    n = len(graph.edges)
    if not reader.has_probabilities or n == 0:
        return np.full(n, np.nan)
    out = np.empty(n)
    for first, stop in _edge_batches(graph.edges, SAMPLE_BATCH):
        part = RoadGraph(graph.nodes, graph.degree, graph.u[first:stop], graph.v[first:stop],
                         graph.edges[first:stop])
        rows, cols, index = _samples(part, reader.height, reader.width)
        values = np.zeros(len(rows), dtype=np.float32)
        cell = (rows // window) * (reader.width // window + 1) + cols // window
        order = np.argsort(cell, kind="stable")
        bounds = np.flatnonzero(np.diff(cell[order])) + 1
        for sel in np.split(order, bounds):
            r, c = rows[sel], cols[sel]
            y0, x0 = int(r.min()), int(c.min())
            block = reader.read_probability(band, y0, x0, int(r.max()) - y0 + 1,
                                            int(c.max()) - x0 + 1)
            values[sel] = block[r - y0, c - x0]
        sums = np.bincount(index, weights=values.astype(np.float64), minlength=stop - first)
        out[first:stop] = sums / np.maximum(np.bincount(index, minlength=stop - first), 1)
    return out


SAMPLE_BATCH = 1 << 20
"""Vertices per batch of edges sampled by :func:`mean_probabilities`: the samples of a whole
scene's network (tens of millions of pixels at 32768², ~40 bytes each) are never held at once."""


def _edge_batches(edges: list[np.ndarray], limit: int) -> list[tuple[int, int]]:
    """Consecutive ``(first, stop)`` ranges of ``edges`` with at most ``limit`` vertices each
    (an edge longer than that is a range of its own)."""
    ranges, first, held = [], 0, 0
    for i, coords in enumerate(edges):
        if held and held + len(coords) > limit:
            ranges.append((first, i))
            first, held = i, 0
        held += len(coords)
    if first < len(edges):
        ranges.append((first, len(edges)))
    return ranges


def write_graph(graph: RoadGraph, writer: FeatureWriter, layers: tuple[str, str], frame: Frame,
                tolerance: float, probability: np.ndarray) -> None:
    """Write ``road_edges`` (simplified by ``tolerance`` pixels, ends kept) and ``road_nodes``
    in map coordinates, in batches of :data:`~geounet.vectorization._layers.BATCH`."""
    import shapely

    edges_layer, nodes_layer = layers
    for s in range(0, len(graph.edges), BATCH):
        geoms = np.array([shapely.LineString(c) for c in graph.edges[s : s + BATCH]])
        if tolerance > 0:
            geoms = shapely.simplify(geoms, tolerance, preserve_topology=True)
        geoms = frame.to_map(geoms)
        writer.write(edges_layer, geoms, {
            "u": graph.u[s : s + BATCH], "v": graph.v[s : s + BATCH],
            "length_m": frame.length(geoms), "mean_probability": probability[s : s + BATCH],
        })
    for s in range(0, len(graph.nodes), BATCH):
        points = frame.to_map(shapely.points(graph.nodes[s : s + BATCH]))
        ids = np.arange(s, s + len(points), dtype=np.int64)
        writer.write(nodes_layer, points, {"id": ids, "degree": graph.degree[s : s + BATCH]})
