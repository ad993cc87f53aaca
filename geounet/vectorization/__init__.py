"""Masks to seam-free polygons, road centerlines and the road graph, chunk by chunk, streamed
to vector files.

The public entry point is :func:`vectorize`; see ``docs/vectorize.md`` for the seam-merge
strategy, the bounded-memory rule and the per-class defaults.

This module is the package's face: its public names. The work is done in private modules,
one job each: ``_vectorize`` (the :func:`vectorize` driver: layers, passes), ``_options``
(:class:`VectorizeOptions`, its values checked once),
``_walk`` (the window order and walk), ``_polygons`` (the seam merge), ``_centerlines``
(skeletons and their merge), ``_graph`` (the road graph from the joined centerlines),
``_layers`` (cleaning and writing finished objects), ``_regularize`` (rectilinear
footprints), ``_writer`` (the vector files), ``_source`` (the prediction reader) and
``_defaults`` (per-class defaults and names).
"""

from __future__ import annotations

from geounet.vectorization._defaults import (  # noqa: F401  (class names re-exported)
    BUBBLE_LENGTH,
    BUILDING_CLASS,
    CENTERLINE_HALO,
    CENTERLINE_LAYER,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_CUT_SIZE,
    DEFAULT_GAP_LENGTH,
    DEFAULT_MIN_AREA,
    DEFAULT_SIMPLIFY,
    DEFAULT_SPUR_LENGTH,
    EDGES_LAYER,
    JUNCTION_MERGE_LENGTH,
    NODES_LAYER,
    ROAD_CLASS,
)
from geounet.vectorization._options import VectorizeOptions
from geounet.vectorization._regularize import regularize_polygon
from geounet.vectorization._vectorize import VectorizeResult, vectorize
from geounet.vectorization._writer import VectorFormat, layer_file_names

__all__ = [
    "BUBBLE_LENGTH",
    "CENTERLINE_HALO",
    "CENTERLINE_LAYER",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_CUT_SIZE",
    "DEFAULT_GAP_LENGTH",
    "DEFAULT_MIN_AREA",
    "DEFAULT_SIMPLIFY",
    "DEFAULT_SPUR_LENGTH",
    "EDGES_LAYER",
    "JUNCTION_MERGE_LENGTH",
    "NODES_LAYER",
    "VectorFormat",
    "VectorizeOptions",
    "VectorizeResult",
    "layer_file_names",
    "regularize_polygon",
    "vectorize",
]
