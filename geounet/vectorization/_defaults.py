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
ROAD_CLASS = "roads"
BUILDING_CLASS = "buildings"
