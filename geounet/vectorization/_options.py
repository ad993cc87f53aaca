"""What :func:`geounet.vectorize` writes, as one frozen, validated value: :class:`VectorizeOptions`.

Passed to :func:`geounet.vectorize`, :func:`geounet.segment` (``vectorize=``) and a batch
(``BatchOptions.vectorize``); plain values, so it travels to a worker inside a batch's finish
task. The values are checked in ``__post_init__``, once; what needs the prediction (its
classes, whether it has probabilities) or the output path is checked by :func:`vectorize`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from geounet.errors import InputError
from geounet.vectorization._defaults import DEFAULT_CUT_SIZE


@dataclass(frozen=True)
class VectorizeOptions:
    """How a prediction becomes vectors (the keywords of :func:`geounet.vectorize`).

    Attributes
    ----------
    classes : class names to vectorize; default every class but ``background``.
    chunk_size : window side in pixels; default the store's chunking, else 2048.
    min_area : square metres below which objects are dropped; one number for every class or
        a mapping per class. Default :data:`geounet.vectorization.DEFAULT_MIN_AREA`.
    simplify : topology-preserving simplification tolerance in metres; 0 keeps pixel edges.
        Default :data:`geounet.vectorization.DEFAULT_SIMPLIFY`.
    fill_holes : drop interior rings.
    regularize : make building footprints rectilinear (walls at right angles).
    centerlines : also write the ``road_centerlines`` layer (when ``roads`` is vectorized).
    spur_length : metres; shorter centerline spurs are dropped. Default 10.
    graph : also write the road network as a graph (layers ``road_edges``, ``road_nodes``).
    gap_length : metres; a free road end this close to the rest of the network is joined to
        it (0: off). Default :data:`geounet.vectorization.DEFAULT_GAP_LENGTH` (10).
    min_confidence : drop polygon objects whose ``mean_probability`` is below this value
        (0-1); None or 0 keeps all (stored as None).
    layer_names : class name (or ``road_centerlines``, ``road_edges``, ``road_nodes``) ->
        layer name.
    cut_size : side in pixels of the scene-anchored grid no object crosses; None never cuts.

    Raises
    ------
    InputError
        A size, length or probability out of range (the message names the value and the fix).
    """

    classes: Sequence[str] | None = None
    chunk_size: int | None = None
    min_area: float | Mapping[str, float] | None = None
    simplify: float | Mapping[str, float] | None = None
    fill_holes: bool = False
    regularize: bool = False
    centerlines: bool = True
    spur_length: float | None = None
    graph: bool = True
    gap_length: float | None = None
    min_confidence: float | None = None
    layer_names: Mapping[str, str] | None = None
    cut_size: int | None = DEFAULT_CUT_SIZE

    def __post_init__(self) -> None:
        if self.chunk_size is not None and self.chunk_size < 2:
            raise InputError(
                f"chunk size {self.chunk_size} is too small; give 2 or more pixels (e.g. 2048)."
            )
        if self.cut_size is not None and self.cut_size < 2:
            raise InputError(
                f"cut size {self.cut_size} is too small; give 2 or more pixels or None.")
        if self.spur_length is not None and self.spur_length < 0:
            raise InputError(
                f"spur length {self.spur_length} is negative; give 0 (keep all) or metres.")
        gap = self.gap_length
        if gap is not None and not (math.isfinite(gap) and gap >= 0):
            raise InputError(
                f"gap length {gap} is negative or not finite; give 0 (bridge no gap) or "
                "metres (e.g. 10)."
            )
        object.__setattr__(self, "min_confidence", _check_min_confidence(self.min_confidence))


def _check_min_confidence(value: float | None) -> float | None:
    """``value`` as a float in 0-1, None for off (None or 0)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        0.0 <= float(value) <= 1.0
    ):
        raise InputError(
            f"min_confidence {value!r} is not a probability in 0-1; give e.g. 0.6 (objects "
            "with a lower mean_probability are dropped) or 0 / None to keep all."
        )
    return float(value) or None
