"""The per-class defaults of :func:`~geounet.vectorization.vectorize` and the names it gives
layers and classes."""

from __future__ import annotations

DEFAULT_CHUNK_SIZE = 2048
"""Window side for GeoTIFF input (a Zarr store is read in its own chunks)."""
DEFAULT_CUT_SIZE = 8192
"""Side of the scene-anchored cut grid: no object extends across its lines (bounded memory)."""
DEFAULT_MIN_AREA: dict[str, float] = {"buildings": 4.0, "roads": 20.0}
"""Square metres; smaller objects are dropped (16 and 80 pixels at 0.5 m)."""
DEFAULT_SIMPLIFY: dict[str, float] = {"buildings": 0.5, "roads": 1.0}
"""Topology-preserving simplification tolerance in metres (1 and 2 pixels at 0.5 m)."""
DEFAULT_SPUR_LENGTH = 10.0
"""Metres; centerline spurs (free end to junction) shorter than this are dropped."""
CENTERLINE_HALO = 64
"""Pixels of road mask around each chunk that the skeleton sees (roads up to ~100 px wide)."""
CENTERLINE_LAYER = "road_centerlines"
DEFAULT_GAP_LENGTH = 10.0
"""Metres; a free road end is joined to the network when it is within this distance of it."""
JUNCTION_MERGE_LENGTH = 4.0
"""Metres; two junctions joined by a shorter edge are one crossing (the skeleton splits a
crossing of two roads into two 3-way junctions a few pixels apart)."""
BUBBLE_LENGTH = 20.0
"""Metres; a loop, or a second edge between two nodes, shorter than this is dropped (the
skeleton runs round both sides of a small hole in the road mask: a car, a shadow)."""
EDGES_LAYER = "road_edges"
NODES_LAYER = "road_nodes"
ROAD_CLASS = "roads"
BUILDING_CLASS = "buildings"
