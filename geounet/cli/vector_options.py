"""Command-line options of vectorizing, shared by ``vectorize``, ``segment`` and ``batch``:
polygons, centerlines, the road graph and the confidence filter (click declarations only)."""

from __future__ import annotations

from typing import Any

import click


def _non_negative(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None and value < 0:
        raise click.BadParameter(
            f"{value} is negative; give 0 (off) or a positive number.", param=param
        )
    return value


min_area = click.option(
    "--min-area",
    type=float,
    default=None,
    callback=_non_negative,
    help="Drop objects below this many m^2. Default: buildings 4, roads 20.",
)
simplify = click.option(
    "--simplify",
    type=float,
    default=None,
    callback=_non_negative,
    help="Simplification tolerance in metres (0 = pixel edges). Default: 0.5 / 1.0.",
)
fill_holes = click.option(
    "--fill-holes", is_flag=True, default=False, help="Drop holes in polygons."
)
regularize = click.option(
    "--regularize",
    is_flag=True,
    default=False,
    help="Rectilinear building footprints (right-angled walls).",
)
centerlines = click.option(
    "--centerlines/--no-centerlines",
    default=True,
    show_default=True,
    help="Write the road_centerlines layer.",
)
spur_length = click.option(
    "--spur-length",
    type=float,
    default=None,
    callback=_non_negative,
    help="Drop centerline spurs shorter than this many metres. Default: 10.",
)
graph = click.option(
    "--graph/--no-graph",
    default=True,
    show_default=True,
    help="Write the road network as a graph: layers road_edges (u, v, length_m, "
    "mean_probability) and road_nodes (id, degree).",
)
gap_length = click.option(
    "--gap-length",
    type=float,
    default=None,
    callback=_non_negative,
    help="Join a free road end to the network (or the scene's edge) when it is within this "
    "many metres; 0 = off. Default: 10.",
)


def _probability(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None and not 0.0 <= value <= 1.0:
        raise click.BadParameter(
            f"{value} is not a probability; give a value in 0-1 (e.g. 0.6) or 0 (keep all).",
            param=param,
        )
    return value


min_confidence = click.option(
    "--min-confidence",
    type=float,
    default=None,
    callback=_probability,
    metavar="P",
    help="Drop objects whose mean_probability (mean class probability over the object's "
    "pixels) is below P (0-1). Default: keep all.",
)


def vectorize_options(func: Any) -> Any:
    """The polygon and centerline options of ``vectorize`` and ``segment``, in help order.

    They arrive as keyword arguments named like :func:`geounet.vectorize`'s keywords.
    """
    for decorator in reversed([min_area, simplify, fill_holes, regularize, centerlines,
                               spur_length, graph, gap_length, min_confidence]):
        func = decorator(func)
    return func


VECTORIZE_KEYWORDS = ("min_area", "simplify", "fill_holes", "regularize", "centerlines",
                      "spur_length", "graph", "gap_length", "min_confidence")
"""Keyword names :func:`vectorize_options` adds to a command."""


def pop_vectorize_options(kwargs: dict[str, Any]) -> Any:
    """Take the :data:`VECTORIZE_KEYWORDS` out of a command's keyword arguments as a
    :class:`geounet.VectorizeOptions`."""
    from geounet.vectorization import VectorizeOptions

    return VectorizeOptions(**{key: kwargs.pop(key) for key in VECTORIZE_KEYWORDS})
