"""The one mirror of scene borders: whole-sample symmetric mirroring (``np.pad`` mode
``"symmetric"``: the edge pixel is repeated, ``... 2 1 0 | 0 1 2 ...``), repeated as often as
needed, used by the reader, the engine and the whole-scene reference.
"""

from __future__ import annotations

import numpy as np

MIRROR_MODE = "symmetric"
"""The ``np.pad`` mode equal to the mirroring used for scene borders everywhere in geounet."""


def mirror_indices(start: int, stop: int, length: int) -> np.ndarray:
    """Scene indices for positions ``start..stop-1`` with symmetric mirroring outside
    ``[0, length)``, repeated as often as needed (period ``2 * length``).

    Examples
    --------
    >>> mirror_indices(-3, 6, 4).tolist()
    [2, 1, 0, 0, 1, 2, 3, 3, 2]
    """
    idx = np.arange(start, stop) % (2 * length)
    return np.where(idx >= length, 2 * length - 1 - idx, idx)


def mirror_pad(array: np.ndarray, before: tuple[int, int], after: tuple[int, int]) -> np.ndarray:
    """Mirror-pad the last two axes of ``array`` like :func:`read_window` does.

    ``before = (top, left)``, ``after = (bottom, right)``; pads wider than the array mirror
    repeatedly. Equals ``np.pad(..., mode="symmetric")``.
    """
    height, width = array.shape[-2:]
    rows = mirror_indices(-before[0], height + after[0], height)
    cols = mirror_indices(-before[1], width + after[1], width)
    return array[..., rows[:, None], cols[None, :]]

