"""Boundary and contact classes for touching buildings (``TrainConfig.contact_class``), as
ramp's multimasks do: each building's pixels are its **interior** (the ``buildings`` class) or
its **boundary** (within :data:`BOUNDARY_PX` of its outline), and pixels that separate two
buildings are **contact**: background pixels within :data:`CONTACT_PX` of two different
buildings (the narrow gaps of dense settlements) and building pixels next to (4-adjacent to)
another building (shared walls; only labels that tell touching buildings apart have them).
The model is trained on these extra classes; its card lists them as ``extra_outputs`` that
prediction folds back (boundary into buildings, contact into background,
:meth:`geounet.model.ModelCard.fold`), so touching roofs come out as separate objects.

Which pixels belong to which building (the instances): vector labels give one instance per
polygon (touching polygons stay apart), also when they sit beside a raster mask that gives
the classes (:func:`geounet.training.pairing.vector_partners`); raster masks alone give the
4-connected components of the building class (buildings that touch in a mask are one building
to geounet: only their gaps are contact). The border weights
(:func:`geounet.training.losses.border_weights`) use the same instances. Instances ride through the augmentations packed with the class mask
(:func:`pack`: ``class + 256 * instance``, moved by nearest neighbour like the mask).
"""

from __future__ import annotations

import numpy as np

from geounet.training.chips import NODATA

BOUNDARY_CLASS = "building_boundary"
CONTACT_CLASS = "building_contact"
BOUNDARY_PX = 2
"""Building pixels within this many pixels (training resolution) of the outline are boundary."""
CONTACT_PX = 4
"""Background pixels within this many pixels of two different buildings are contact."""


def extra_outputs(classes: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    """The card's ``extra_outputs`` of a contact-class model of ``classes``: boundary folds
    into ``buildings``, contact into background (class 0)."""
    return ((BOUNDARY_CLASS, classes.index("buildings")), (CONTACT_CLASS, 0))


def pack(mask: np.ndarray, instances: np.ndarray | None) -> np.ndarray:
    """One int32 label array: the class mask plus 256 x the instance id (0 = none)."""
    out = mask.astype(np.int32)
    if instances is not None:
        out += instances.astype(np.int32) << 8
    return out


def unpack(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The class mask (uint8, 255 nodata) and the instance ids of a :func:`pack`-ed array."""
    return (labels & 255).astype(np.uint8), labels >> 8


def instances_of(mask: np.ndarray, building: int, instances: np.ndarray | None) -> np.ndarray:
    """Instance ids on the building pixels of ``mask`` (0 elsewhere): the given ids, else the
    4-connected components of the building class.

    Given ids need not cover the mask exactly (polygons beside a raster mask, rasterized by
    another rule or a little offset): a building pixel without an id takes the nearest id of
    its own 4-connected component, and a component that no id touches is one building of its
    own. Ids on pixels that are not building are dropped.
    """
    from scipy.ndimage import distance_transform_edt, label

    inside = mask == building
    components, count = label(inside)
    if instances is None or not np.any(instances[inside]):
        return components.astype(np.int32)
    ids = np.where(inside, instances, 0).astype(np.int32)
    missing = inside & (ids == 0)
    if missing.any():
        _, (rows, cols) = distance_transform_edt(ids == 0, return_indices=True)
        nearest = ids[rows, cols]
        same = components[rows, cols] == components
        fill = np.where(same, nearest, 0)
        ids[missing] = fill[missing]
        orphan = inside & (ids == 0)  # components no polygon touches: one building each
        ids[orphan] = int(ids.max()) + components[orphan]
    return ids


def instance_distances(instances: np.ndarray, radius: float):
    """For each instance: its window (slices) and the distance (px) of the window's pixels to
    it, exact up to ``radius`` (an instance's pixels lie in its bounding box, so pixels
    farther than ``radius`` from the box are farther from it). Yields ``(id, window, d)``."""
    from scipy.ndimage import distance_transform_edt, find_objects

    pad = int(np.ceil(radius)) + 1
    height, width = instances.shape
    for index, box in enumerate(find_objects(instances), start=1):
        if box is None:
            continue
        window = (slice(max(box[0].start - pad, 0), min(box[0].stop + pad, height)),
                  slice(max(box[1].start - pad, 0), min(box[1].stop + pad, width)))
        yield index, window, distance_transform_edt(instances[window] != index)


def multimask(mask: np.ndarray, building: int, boundary: int, contact: int,
              instances: np.ndarray | None = None) -> np.ndarray:
    """The training target of a contact-class model: ``mask`` (uint8 classes, 255 nodata)
    with building pixels near their outline set to ``boundary`` and the pixels between two
    buildings to ``contact`` (see the module docstring for the rule).

    Examples
    --------
    >>> m = np.zeros((7, 12), np.uint8); m[1:6, 1:6] = 1; m[1:6, 7:11] = 1  # 1 px gap
    >>> t = multimask(m, 1, 2, 3)
    >>> t[3].tolist()
    [0, 2, 2, 1, 2, 2, 3, 2, 2, 2, 2, 0]
    """
    from scipy.ndimage import distance_transform_edt

    ids = instances_of(mask, building, instances)
    out = mask.copy()
    near_gap = np.zeros(mask.shape, np.uint8)  # instances within CONTACT_PX
    near_wall = np.zeros(mask.shape, np.uint8)  # instances within 1 px
    edge = np.zeros(mask.shape, bool)
    for index, window, d in instance_distances(ids, max(CONTACT_PX, BOUNDARY_PX)):
        near_gap[window] += d <= CONTACT_PX
        near_wall[window] += d <= 1.0
        own = ids[window] == index
        edge[window] |= own & (distance_transform_edt(own) <= BOUNDARY_PX)
    inside = ids > 0
    out[edge] = boundary
    out[(inside & (near_wall >= 2)) | ((mask == 0) & (near_gap >= 2))] = contact
    out[mask == NODATA] = NODATA
    return out
