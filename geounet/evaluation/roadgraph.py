"""Road graphs from vector lines, in metres: the two sides of an APLS score.

A road graph file is any OGR vector file (GeoPackage, GeoJSON, FlatGeobuf, shapefile) with
LineString features in any CRS: ``geounet segment`` / ``vectorize`` output (layer
``road_edges``), ``geounet synth`` truth (layer ``roads``) or any centreline layer. Both sides
are moved into one metric plane (:func:`metric_crs`): the prediction's CRS when it is
projected (scaled by its unit to metres), else the UTM zone of the prediction's centre. The
lines are noded (split where they cross or touch, ``shapely.node``) and merged where exactly
two meet (``shapely.line_merge``), so nodes are the road ends and junctions whatever the
source cut its lines into; ends equal to 1 µm are one node. A line end within
:data:`JOIN_TOLERANCE` of another line is moved onto it first: a side street digitised (or
computed in floating point) to end *on* a road joins that road even when its end is a hair
off the road's segment, which exact noding would miss.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from geounet.errors import GeoreferenceError, InputError

PRED_LAYERS = ("road_edges", "road_centerlines", "roads")
"""Layers tried, in order, for a predicted road graph (geounet's own outputs first)."""
TRUTH_LAYERS = ("roads", "road_edges", "road_centerlines")
"""Layers tried, in order, for true centrelines (``geounet synth`` truth first)."""
JOIN_TOLERANCE = 0.01
"""Metres; a line end this close to another line is joined to it."""
_LINE_TYPES = ("LineString", "MultiLineString", "LineString Z", "MultiLineString Z")


def graph_layer(path: str | Path, preferred: tuple[str, ...], *, required: bool = True,
                role: str = "truth") -> str | None:
    """The layer of ``path`` that holds road lines: the first of ``preferred`` it has, else its
    only line layer (or only layer). None (``required=False``) or InputError when none fits."""
    import pyogrio

    try:
        listed = [(str(n), str(t)) for n, t in pyogrio.list_layers(str(path))]
    except Exception as exc:  # noqa: BLE001 - unreadable: a user mistake, said in one line
        raise InputError(f"{role} {str(path)!r} is not a readable vector file ({exc}).") from None
    names = [n for n, _ in listed]
    for name in preferred:
        if name in names:
            return name
    lines = [n for n, t in listed if t in _LINE_TYPES]
    if len(lines) == 1 or len(listed) == 1:
        return lines[0] if lines else names[0]
    if not required:
        return None
    raise InputError(
        f"{role} {str(path)!r} has no road line layer: its layers are {listed}. Give a file "
        f"with one line layer, or a layer named one of {list(preferred)}."
    )


def read_lines(path: str | Path, layer: str, *, role: str = "truth",
               allow_empty: bool = False) -> tuple[np.ndarray, Any]:
    """The LineStrings of ``layer`` (multi-lines split into parts) and the layer's CRS.

    InputError when it has no line (unless ``allow_empty``: a prediction may find no road),
    GeoreferenceError when lines have no CRS."""
    import pyogrio
    import shapely

    frame = pyogrio.read_dataframe(str(path), layer=layer, columns=[])
    geoms = shapely.get_parts(np.asarray(frame.geometry.values, dtype=object))
    geoms = geoms[~shapely.is_missing(geoms)] if len(geoms) else geoms
    types = sorted({shapely.get_type_id(g) for g in geoms})
    lines = geoms[(shapely.get_type_id(geoms) == 1) & ~shapely.is_empty(geoms)]
    if len(lines) == 0 and allow_empty:
        return lines, frame.crs
    if len(lines) == 0:
        raise InputError(
            f"{role} {str(path)!r} layer {layer!r} has no line features ({len(frame)} "
            f"features, geometry type ids {types}); APLS needs road centrelines as "
            "LineStrings, e.g. layer 'roads' of `geounet synth`'s truth.gpkg or layer "
            "'road_edges' of `geounet segment`'s output."
        )
    if frame.crs is None:
        raise GeoreferenceError(
            f"{role} {str(path)!r} layer {layer!r} has no CRS; road lengths need one. Set it "
            "(e.g. ogr2ogr -a_srs EPSG:32633) and try again."
        )
    return lines, frame.crs


def metric_crs(crs: Any, lines: np.ndarray) -> tuple[Any, float]:
    """The plane APLS measures in: ``(crs, metres per unit)``. A projected CRS is kept (its
    unit scaled to metres by :func:`geounet.georef.linear_unit_factor`); a geographic one is
    replaced by the UTM zone (WGS 84) of the lines' centre."""
    import shapely
    from pyproj import CRS
    from pyproj.aoi import AreaOfInterest
    from pyproj.database import query_utm_crs_info

    from geounet.georef import crs_from, linear_unit_factor

    source = crs_from(crs)
    if not source.is_geographic:
        return source, linear_unit_factor(source)
    minx, miny, maxx, maxy = shapely.total_bounds(lines)
    lon, lat = (minx + maxx) / 2, (miny + maxy) / 2
    zones = query_utm_crs_info(datum_name="WGS 84",
                               area_of_interest=AreaOfInterest(lon, lat, lon, lat))
    return CRS.from_epsg(zones[0].code), 1.0


def to_metric(lines: np.ndarray, crs: Any, target: tuple[Any, float], *,
              role: str = "truth") -> np.ndarray:
    """``lines`` from ``crs`` into the metric plane ``target`` (from :func:`metric_crs`);
    InputError when coordinates do not fit ``crs`` (e.g. metres in a lon/lat file)."""
    import shapely
    from pyproj import Transformer

    from geounet.georef import crs_from

    dst, factor = target
    src = crs_from(crs)
    if src != dst:
        transformer = Transformer.from_crs(src, dst, always_xy=True)

        def move(xy: np.ndarray) -> np.ndarray:
            return np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))

        lines = shapely.transform(lines, move)
        if not np.isfinite(shapely.get_coordinates(lines)).all():
            raise InputError(
                f"the {role} lines do not fit their CRS {src.name!r} (coordinates out of its "
                "range after reprojection; a GeoJSON file is always read as lon/lat "
                "EPSG:4326); write them with their true CRS, e.g. as a GeoPackage."
            )
    return shapely.transform(lines, lambda xy: xy * factor) if factor != 1.0 else lines


def road_graph(lines: Any) -> Any:
    """An undirected ``networkx.MultiGraph`` of road lines in metres.

    Lines are noded and merged (module docstring). Nodes are ints with attribute ``xy``
    (position); each edge has ``geometry`` (LineString), ``length`` (metres) and ``ends``
    (the node ids at its first and last vertex, as edge order in networkx is not the
    geometry's).
    """
    import networkx as nx
    import shapely

    graph = nx.MultiGraph()
    lines = np.asarray(lines, dtype=object).reshape(-1)
    lines = lines[~shapely.is_empty(lines)] if len(lines) else lines
    if len(lines) == 0:
        return graph
    lines = join_near_ends(lines, JOIN_TOLERANCE)
    merged = shapely.line_merge(shapely.node(shapely.multilinestrings(lines)))
    ids: dict[tuple[float, float], int] = {}

    def node(xy: Any) -> int:
        key = (round(float(xy[0]), 6), round(float(xy[1]), 6))
        if key not in ids:
            ids[key] = len(ids)
            graph.add_node(ids[key], xy=(float(xy[0]), float(xy[1])))
        return ids[key]

    for line in shapely.get_parts(merged):
        coords = shapely.get_coordinates(line)
        if len(coords) < 2 or line.length == 0:
            continue
        a, b = node(coords[0]), node(coords[-1])
        graph.add_edge(a, b, geometry=line, length=float(line.length), ends=(a, b))
    return graph


def join_near_ends(lines: np.ndarray, tolerance: float) -> np.ndarray:
    """``lines`` with each end that lies within ``tolerance`` of another line (but not on one
    of its vertices) moved onto that line, and the point added to that line as a vertex."""
    import shapely

    tree = shapely.STRtree(lines)
    coords = [shapely.get_coordinates(g) for g in lines]
    inserts: dict[int, list[tuple[float, np.ndarray]]] = {}
    for i, c in enumerate(coords):
        for end in (0, -1):
            point = shapely.Point(c[end])
            for j in sorted(int(k) for k in tree.query(point, predicate="dwithin",
                                                       distance=tolerance)):
                target = lines[j]
                if j == i or shapely.intersects(point, shapely.multipoints(coords[j])):
                    continue
                t = target.project(point)
                c[end] = shapely.get_coordinates(target.interpolate(t))[0]
                inserts.setdefault(j, []).append((t, c[end].copy()))
                break
    for j, points in inserts.items():
        along = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(coords[j], axis=0).T))])
        for t, xy in sorted(points, key=lambda p: -p[0]):
            k = int(np.searchsorted(along, t, side="right"))
            if 0 < k < len(along):
                coords[j] = np.insert(coords[j], k, xy, axis=0)
                along = np.insert(along, k, t)
    return np.array([shapely.linestrings(c) for c in coords], dtype=object)


def total_length(graph: Any) -> float:
    """Sum of the edge lengths (metres)."""
    return float(math.fsum(d["length"] for _, _, d in graph.edges(data=True)))
