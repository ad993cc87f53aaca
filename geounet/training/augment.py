"""Training augmentations on numpy chips: the 8 dihedral transforms, elastic deformation, jitter.

Geometric transforms move image and mask together (the mask with nearest-neighbour sampling,
so class indices and the 255 nodata value survive); photometric jitter touches only the image.
"""

from __future__ import annotations

import numpy as np


def dihedral(image: np.ndarray, mask: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Apply dihedral transform ``k`` (0-7): ``k % 4`` quarter turns, then a flip if ``k >= 4``.

    Parameters
    ----------
    image : (band, y, x).
    mask : (y, x).
    k : which of the 8 transforms; 0 is the identity.

    Examples
    --------
    >>> img, msk = dihedral(np.zeros((3, 4, 5)), np.zeros((4, 5)), 1)
    >>> img.shape, msk.shape
    ((3, 5, 4), (5, 4))
    """
    image = np.rot90(image, k % 4, axes=(1, 2))
    mask = np.rot90(mask, k % 4, axes=(0, 1))
    if k >= 4:
        image = image[:, :, ::-1]
        mask = mask[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


def elastic(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    *,
    grid: int = 3,
    sigma: float = 10.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Smooth elastic deformation as in the U-Net paper.

    Random displacements drawn from N(0, ``sigma`` px) on a coarse ``grid`` x ``grid`` lattice
    are interpolated bicubically to a dense field; the image is resampled bilinearly and the
    mask with nearest neighbour, both mirrored at the borders.
    """
    from scipy.ndimage import map_coordinates, zoom

    height, width = mask.shape
    if height < 4 or width < 4:
        return image, mask
    coarse = rng.normal(0.0, sigma, size=(2, grid, grid))
    field = np.stack([zoom(c, (height / grid, width / grid), order=3, mode="nearest",
                           grid_mode=True)[:height, :width] for c in coarse])
    yy, xx = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    coords = np.stack([yy + field[0], xx + field[1]])
    warped = np.stack([map_coordinates(band, coords, order=1, mode="mirror") for band in image])
    warped_mask = map_coordinates(mask, coords, order=0, mode="mirror")
    return warped.astype(image.dtype, copy=False), warped_mask.astype(mask.dtype, copy=False)


def jitter(
    image: np.ndarray, rng: np.random.Generator, *, brightness: float, contrast: float
) -> np.ndarray:
    """Random contrast (``x * c``, ``c`` in ``1 +- contrast``) and brightness (``+ b``, ``b`` in
    ``+- brightness``) per band, on a normalized image (units of the band's std)."""
    bands = image.shape[0]
    c = rng.uniform(1.0 - contrast, 1.0 + contrast, size=(bands, 1, 1))
    b = rng.uniform(-brightness, brightness, size=(bands, 1, 1))
    return (image * c + b).astype(image.dtype, copy=False)
