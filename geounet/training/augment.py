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
    from scipy.ndimage import zoom

    height, width = mask.shape
    if height < 4 or width < 4:
        return image, mask
    coarse = rng.normal(0.0, sigma, size=(2, grid, grid))
    field = np.stack([zoom(c, (height / grid, width / grid), order=3, mode="nearest",
                           grid_mode=True)[:height, :width] for c in coarse])
    yy, xx = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    coords = np.stack([yy + field[0], xx + field[1]])
    return _resample(image, mask, coords)


def _resample(image: np.ndarray, mask: np.ndarray, coords: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Sample image (bilinear) and mask (nearest) at ``coords`` (2, y, x), mirrored at the
    borders, in their own dtypes."""
    from scipy.ndimage import map_coordinates

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


def rescale(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, *, amount: float
) -> tuple[np.ndarray, np.ndarray]:
    """Random zoom about the chip centre by ``s``, log-uniform in ``[1/(1+amount), 1+amount]``.

    Simulates a different ground sampling distance (objects ``s`` times larger in pixels).
    The image is resampled bilinearly and the mask with nearest neighbour, both mirrored at
    the borders, so the chip keeps its size.

    Examples
    --------
    >>> img, msk = rescale(np.zeros((3, 8, 8)), np.zeros((8, 8)), np.random.default_rng(0),
    ...                    amount=0.2)
    >>> img.shape, msk.shape
    ((3, 8, 8), (8, 8))
    """
    height, width = mask.shape
    if amount <= 0 or height < 4 or width < 4:
        return image, mask
    from scipy.ndimage import affine_transform

    bound = np.log1p(amount)
    s = float(np.exp(rng.uniform(-bound, bound)))
    # output pixel (y, x) samples the input at c + (y - c) / s: one affine map per band (no
    # coordinate arrays), the image bilinear, the mask nearest, both mirrored at the borders
    matrix = (1.0 / s, 1.0 / s)
    offset = ((height - 1) / 2.0 * (1 - 1 / s), (width - 1) / 2.0 * (1 - 1 / s))
    zoomed = np.stack([affine_transform(band, matrix, offset=offset, order=1, mode="mirror")
                       for band in image])
    zoomed_mask = affine_transform(mask, matrix, offset=offset, order=0, mode="mirror")
    return zoomed.astype(image.dtype, copy=False), zoomed_mask.astype(mask.dtype, copy=False)


def colour(
    image: np.ndarray, rng: np.random.Generator, *, gamma: float, hue: float
) -> np.ndarray:
    """Random gamma and hue shift of a normalized image (band, y, x); per chip.

    - gamma: ``g`` log-uniform in ``[exp(-gamma), exp(gamma)]`` applied to the chip's values
      rescaled to [0, 1] by its own per-band min/max (so it bends tones, not the range);
    - hue: on images of 3 or more bands, the first three are rotated about the grey axis
      ``(1, 1, 1)`` by an angle uniform in ``+- hue * pi`` (a hue shift in normalized units;
      extra bands such as NIR are left alone).

    Examples
    --------
    >>> out = colour(np.ones((3, 4, 4), np.float32), np.random.default_rng(0), gamma=0.2, hue=0.1)
    >>> out.shape, out.dtype.name
    ((3, 4, 4), 'float32')
    """
    out = image.astype(np.float32, copy=True)
    if gamma > 0:
        g = float(np.exp(rng.uniform(-gamma, gamma)))
        lo = out.min(axis=(1, 2), keepdims=True)
        span = np.maximum(out.max(axis=(1, 2), keepdims=True) - lo, 1e-6)
        out = lo + span * ((out - lo) / span) ** g
    if hue > 0 and out.shape[0] >= 3:
        theta = float(rng.uniform(-hue, hue) * np.pi)
        k = np.full(3, 1.0 / np.sqrt(3.0))
        cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
        rot = (np.cos(theta) * np.eye(3) + np.sin(theta) * cross
               + (1 - np.cos(theta)) * np.outer(k, k)).astype(np.float32)
        out[:3] = np.tensordot(rot, out[:3], axes=1)
    return out.astype(image.dtype, copy=False)
