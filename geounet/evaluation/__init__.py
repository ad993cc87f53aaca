"""Score a prediction against ground truth: pixel, object (buildings) and centerline (roads) metrics.

Either side may be a class-mask raster (GeoTIFF, geounet COG band 1, geounet Zarr store
``mask``) or a GeoPackage (``buildings`` polygons, ``roads`` lines buffered by ``width``)
burnt onto the raster side's grid. The scene is walked window by window: pixel scores come
from summed confusion counts, building objects are traced per window and merged across window
seams, road skeletons are compared inside windows with a halo, so memory stays bounded.

Road graphs (the ``road_edges`` layer of ``segment`` / ``vectorize``) are scored against
true centrelines with APLS, the SpaceNet road metric.

The package's modules, one job each: :mod:`~geounet.evaluation.scoring` (the walk:
:func:`evaluate`), :mod:`~geounet.evaluation.sources` (the raster and vector sides on one
grid), :mod:`~geounet.evaluation.objects` (building objects and their matching),
:mod:`~geounet.evaluation.apls` (APLS) over :mod:`~geounet.evaluation.roadgraph` (road
graphs from vector lines, in metres) and :mod:`~geounet.evaluation.report` (the scores and
the report). Every public name is importable from ``geounet.evaluation``.
"""

from __future__ import annotations

from geounet.evaluation.apls import apls, score_graph_files
from geounet.evaluation.objects import match_objects
from geounet.evaluation.report import (
    AplsScores,
    CenterlineScores,
    Coverage,
    EvaluationReport,
    ObjectScores,
    check_json_output,
)
from geounet.evaluation.roadgraph import road_graph
from geounet.evaluation.scoring import evaluate
from geounet.evaluation.sources import VECTOR_SUFFIXES, Grid

__all__ = [
    "VECTOR_SUFFIXES",
    "AplsScores",
    "CenterlineScores",
    "Coverage",
    "EvaluationReport",
    "Grid",
    "ObjectScores",
    "apls",
    "check_json_output",
    "evaluate",
    "match_objects",
    "road_graph",
    "score_graph_files",
]
