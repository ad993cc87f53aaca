"""Fit a scene to a model card: warp it to the model's pixel size and map its values into the
model's range.

Both decisions are made once, on the client, from cheap metadata and a small sample of
windows; the result is a :class:`~geounet.raster.SceneInfo` whose ``warp`` and ``rescale``
describe the view every chunk task reads (plain values, so tasks pickle them).

- **Resolution** (:func:`plan_resample`): the scene's ground sampling distance
  (:func:`geounet.georef.pixel_size_m`: geodesic for a geographic CRS, rotation-aware) is
  compared with the card's. Mode ``error`` keeps the card's rule (refuse beyond a factor 2,
  warn beyond 1.25); ``auto`` (the default) reads through a GDAL WarpedVRT at the card's pixel
  size when the scene is more than 1.25x off, and refuses a scene more than
  :data:`AUTO_RESAMPLE_MAX_FACTOR` (4x) off either way, naming the pixel count the warp would
  create and ``always`` (warp whenever the sizes differ, whatever the factor) to force it.
  The warped grid keeps the scene's CRS and upper-left corner, is north-up, and covers the
  whole scene (pixels past its edge are nodata).
- **Value range** (:func:`plan_rescale`): a scene whose data type differs from the card's is
  refused unless ``rescale`` says how to map it: ``percentile[:LOW,HIGH]`` (per band, robust
  percentiles of a sample of windows; default 2,98), ``bits[:N]`` (``0..2**N-1``, N from the
  file's ``NBITS`` tag or the sampled maximum: 11-bit data in uint16 maps exactly) or
  ``MIN,MAX``.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from geounet.config import AUTO_RESAMPLE_MAX_FACTOR, ResampleMode, choices
from geounet.errors import IncompatibleSceneError, InputError

if TYPE_CHECKING:
    from geounet.model import ModelCard
    from geounet.raster import Rescale, SceneInfo

log = logging.getLogger(__name__)

DEFAULT_PERCENTILES = (2.0, 98.0)
"""Percentiles mapped to the card's range by ``rescale="percentile"``."""

SAMPLE_WINDOWS = 64
"""At most this many windows are read to estimate percentiles or the bit depth."""

SAMPLE_WINDOW_SIZE = 256
"""Side of a sample window in pixels."""


_SAME_SIZE = 1e-6  # relative pixel-size difference below which ``always`` does nothing


@dataclass(frozen=True)
class RescaleSpec:
    """A parsed ``rescale`` value.

    Attributes
    ----------
    method : ``percentile``, ``bits`` or ``range``.
    low, high : percentiles (``percentile``) or raw values (``range``).
    bits : bit depth for ``bits`` (0: from the file's NBITS tag or the sampled maximum).
    """

    method: str
    low: float = 0.0
    high: float = 0.0
    bits: int = 0

    def describe(self) -> str:
        """The spec written back as the option value."""
        if self.method == "percentile":
            return f"percentile:{self.low:g},{self.high:g}"
        if self.method == "bits":
            return f"bits:{self.bits}" if self.bits else "bits"
        return f"{self.low:g},{self.high:g}"


def parse_rescale(value: str | Sequence[float] | RescaleSpec | None) -> RescaleSpec | None:
    """Parse ``percentile``, ``percentile:LOW,HIGH``, ``bits``, ``bits:N``, ``MIN,MAX`` or a
    ``(min, max)`` pair.

    Raises
    ------
    InputError
        The value is none of these forms, or its numbers are out of order or range.

    Examples
    --------
    >>> parse_rescale("percentile")
    RescaleSpec(method='percentile', low=2.0, high=98.0, bits=0)
    >>> parse_rescale("0,2047").describe()
    '0,2047'
    """
    if value is None or isinstance(value, RescaleSpec):
        return value
    hint = ("use percentile, percentile:LOW,HIGH (e.g. percentile:2,98), bits, bits:N "
            "(e.g. bits:11) or MIN,MAX (e.g. 0,2047)")
    if not isinstance(value, str):
        try:
            low, high = (float(v) for v in value)
        except (TypeError, ValueError):
            raise InputError(f"rescale {value!r} is not a (min, max) pair; {hint}.") from None
        return _range_spec(low, high, value, hint)
    text = value.strip().lower()
    if text == "percentile":
        return RescaleSpec("percentile", *DEFAULT_PERCENTILES)
    if text.startswith("percentile:"):
        low, high = _pair(text[len("percentile:"):], value, hint)
        if not 0.0 <= low < high <= 100.0:
            raise InputError(
                f"rescale {value!r}: percentiles must satisfy 0 <= LOW < HIGH <= 100; {hint}."
            )
        return RescaleSpec("percentile", low, high)
    if text == "bits":
        return RescaleSpec("bits")
    match = re.fullmatch(r"bits:(\d+)", text)
    if match:
        bits = int(match.group(1))
        if not 1 <= bits <= 32:
            raise InputError(f"rescale {value!r}: the bit depth must be 1-32, e.g. bits:11.")
        return RescaleSpec("bits", bits=bits)
    low, high = _pair(text, value, hint)
    return _range_spec(low, high, value, hint)


def _pair(text: str, value: object, hint: str) -> tuple[float, float]:
    parts = text.split(",")
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        raise InputError(f"rescale {value!r} is not understood; {hint}.") from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise InputError(f"rescale {value!r} has a non-finite number; {hint}.")
    return low, high


def _range_spec(low: float, high: float, value: object, hint: str) -> RescaleSpec:
    if not low < high:
        raise InputError(f"rescale {value!r}: MIN must be below MAX; {hint}.")
    return RescaleSpec("range", low, high)


# --------------------------------------------------------------------------------------
# resolution
# --------------------------------------------------------------------------------------


def auto_resampling(pixel_size: float, target_pixel_size: float) -> str:
    """``resampling="auto"``: lanczos when enlarging (the source is coarser than the target),
    bilinear when shrinking. Shared by predict's warp and training's resampled chips."""
    return "lanczos" if pixel_size > target_pixel_size else "bilinear"


def plan_resample(
    info: SceneInfo,
    target_pixel_size: float | None,
    mode: ResampleMode = "auto",
    *,
    resampling: str = "auto",
) -> SceneInfo:
    """``info``, read through a warp at ``target_pixel_size`` metres when ``mode`` asks for it.

    Parameters
    ----------
    info : from :func:`geounet.raster.open_scene`.
    target_pixel_size : the model card's metres per pixel, or None (nothing to match).
    mode : ``error`` (never warp), ``auto`` (warp when more than
        :data:`geounet.model.PIXEL_SIZE_WARN_RATIO` off, refuse when more than
        :data:`AUTO_RESAMPLE_MAX_FACTOR` off) or ``always`` (warp when different).
    resampling : GDAL resampling for the imagery (``bilinear``, ``cubic``, ``lanczos``...);
        ``auto``: bilinear when the scene is finer than ``target_pixel_size``, lanczos when
        it is coarser.

    Returns
    -------
    SceneInfo
        ``info`` itself, or its warped view (new grid, same file).

    Raises
    ------
    InputError
        An unknown mode.
    IncompatibleSceneError
        ``always`` for a scene or card without a pixel size; ``auto`` for a scene more than
        :data:`AUTO_RESAMPLE_MAX_FACTOR` off (before any pixel is read).
    """
    from geounet.model import PIXEL_SIZE_WARN_RATIO
    from geounet.raster.scene import resampling_of

    if mode not in choices(ResampleMode):
        raise InputError(
            f"resample mode {mode!r} is not supported; use one of "
            f"{', '.join(choices(ResampleMode))}."
        )
    if resampling != "auto":
        resampling_of(resampling)  # validate the name now, not in a task
    if mode == "error":
        return info
    scene_size = info.pixel_size
    if scene_size is None or target_pixel_size is None:
        if mode == "always":
            missing = "the scene has no CRS" if scene_size is None else "the model card has none"
            raise IncompatibleSceneError(
                f"resample 'always' needs the pixel sizes of the scene and of the model, but "
                f"{missing}; georeference the scene or use resample 'auto' or 'error'."
            )
        return info
    ratio = max(scene_size / target_pixel_size, target_pixel_size / scene_size)
    if mode == "auto" and ratio <= PIXEL_SIZE_WARN_RATIO:
        return info
    if mode == "always" and ratio - 1.0 <= _SAME_SIZE:
        return info
    if resampling == "auto":
        resampling = auto_resampling(scene_size, target_pixel_size)
    if mode == "auto" and ratio > AUTO_RESAMPLE_MAX_FACTOR * (1.0 + _SAME_SIZE):
        view = _warped_view(info, target_pixel_size, resampling)
        relation = "coarser" if scene_size > target_pixel_size else "finer"
        raise IncompatibleSceneError(
            f"scene pixel size {scene_size:.3g} m is {ratio:.3g}x {relation} than the model's "
            f"{target_pixel_size:g} m; --resample auto resamples only within a factor "
            f"{AUTO_RESAMPLE_MAX_FACTOR:g}: this warp would create {view.width:,} x "
            f"{view.height:,} = {view.width * view.height:,} px "
            f"({view.width * view.height / 1e9:.3g} gigapixels) from the scene's "
            f"{info.width:,} x {info.height:,}. Use a model trained near {scene_size:.3g} m, or "
            "pass --resample always (resample=\"always\") to force it."
        )
    return warp_to_pixel_size(info, target_pixel_size, resampling=resampling)


def warp_to_pixel_size(
    info: SceneInfo, pixel_size: float, *, resampling: str = "bilinear"
) -> SceneInfo:
    """The warped view of ``info`` with square-on-the-ground pixels of ``pixel_size`` metres.

    The grid is north-up in the scene's CRS, starts at the scene's upper-left corner (for a
    rotated scene: its bounding box's) and covers the whole scene. For a geographic CRS the
    degree steps along x and y are chosen so that both pixel sides are ``pixel_size`` metres at
    the scene centre.
    """
    view = _warped_view(info, pixel_size, resampling)
    log.info(
        "reading %s through a warp: %d x %d px at %.3g m -> %d x %d px at %.3g m (%s)",
        info.path, info.height, info.width, info.pixel_size or float("nan"), view.height,
        view.width, pixel_size, resampling,
    )
    return view


def _warped_view(info: SceneInfo, pixel_size: float, resampling: str) -> SceneInfo:
    """:func:`warp_to_pixel_size` without its log line (metadata only, no pixel read)."""
    from rasterio.transform import Affine
    from rasterio.warp import calculate_default_transform

    from geounet.georef import pixel_sides_m, rotated
    from geounet.raster import Warp, warped

    base = info.warp if info.warp is not None else None
    transform = tuple(info.transform)
    width, height = info.width, info.height
    if rotated(transform):  # a north-up grid over the rotated scene, at its own resolution
        a, b, c, d, e, f = transform
        corners = [(c + a * x + b * y, f + d * x + e * y)
                   for x, y in ((0, 0), (width, 0), (0, height), (width, height))]
        xs, ys = zip(*corners)
        north_up, width, height = calculate_default_transform(
            info.crs_wkt, info.crs_wkt, width, height, min(xs), min(ys), max(xs), max(ys)
        )
        transform = tuple(north_up)[:6]
    sx, sy = pixel_sides_m(info.crs_wkt, transform, width / 2.0, height / 2.0)
    scale_x, scale_y = pixel_size / sx, pixel_size / sy
    a, _, c, _, e, f = transform
    new = Affine(a * scale_x, 0.0, c, 0.0, e * scale_y, f)
    new_width = max(1, math.ceil(width / scale_x - 1e-6))
    new_height = max(1, math.ceil(height / scale_y - 1e-6))
    warp = Warp(
        gcps=bool(base is not None and base.gcps),
        crs_wkt=info.crs_wkt,
        transform=tuple(new)[:6],
        height=int(new_height),
        width=int(new_width),
        resampling=resampling,
    )
    return warped(info, warp)


# --------------------------------------------------------------------------------------
# value range
# --------------------------------------------------------------------------------------


def sample_windows(info: SceneInfo, count: int = SAMPLE_WINDOWS,
                   size: int = SAMPLE_WINDOW_SIZE) -> list[tuple[int, int, int, int]]:
    """Up to ``count`` windows ``(y0, x0, height, width)`` of side ``size`` on a regular grid
    spread over the scene (the whole scene when it is small)."""
    height, width = min(size, info.height), min(size, info.width)
    per_side = max(1, int(math.sqrt(count)))
    rows = np.unique(np.linspace(0, info.height - height, per_side).round().astype(int))
    cols = np.unique(np.linspace(0, info.width - width, per_side).round().astype(int))
    return [(int(y), int(x), height, width) for y in rows for x in cols]


def _sample(info: SceneInfo, bands: Sequence[int]) -> np.ndarray:
    """Valid pixel values (band, n) of the sample windows, raw (before any rescale)."""
    import dataclasses

    from geounet.raster import read_window

    raw = dataclasses.replace(info, rescale=None)
    values = [[] for _ in bands]  # type: list[list[np.ndarray]]
    for y0, x0, height, width in sample_windows(raw):
        pixels, valid = read_window(raw, y0, x0, height, width, bands=bands)
        for i in range(len(bands)):
            values[i].append(pixels[i][valid])
    return np.stack([np.concatenate(v) for v in values])


def _file_nbits(info: SceneInfo) -> int | None:
    import rasterio

    from geounet.raster import gdal_env

    with gdal_env(info), rasterio.open(info.source) as ds:
        tag = ds.tags(1, ns="IMAGE_STRUCTURE").get("NBITS")
    try:
        return int(tag) if tag else None
    except ValueError:
        return None


def plan_rescale(
    info: SceneInfo, card: ModelCard, rescale: str | Sequence[float] | RescaleSpec | None
) -> Rescale | None:
    """The value map for reading ``info`` with ``card``'s model, or None when none is needed.

    Without ``rescale`` a scene whose data type differs from the card's is refused: its values
    would be normalised with statistics of another range (an 11-bit scene read by a uint8
    model saturates). With it, parameters are computed here once (reading at most
    :data:`SAMPLE_WINDOWS` windows) and carried to every task in ``SceneInfo.rescale``.

    Raises
    ------
    IncompatibleSceneError
        Data types differ and ``rescale`` is None; or the sample has no valid pixel.
    InputError
        ``rescale`` cannot be parsed.
    """
    from geounet.raster import Rescale

    spec = parse_rescale(rescale)
    scene_dtype = np.dtype(info.dtype).name
    bands = tuple(card.bands)
    if spec is None:
        if scene_dtype != card.dtype:
            hint = ""
            if np.issubdtype(np.dtype(scene_dtype), np.integer) and max(bands) <= info.count:
                top = _sample(info, bands).max(initial=0)
                bits = max(8, int(top).bit_length())
                hint = (f" (sampled maximum {int(top)}: {bits}-bit data, so --rescale bits "
                        f"maps 0..{2**bits - 1})")
            lo, hi = card.value_range
            raise IncompatibleSceneError(
                f"scene data type {scene_dtype} differs from the model's training type "
                f"{card.dtype} (values {lo:g}..{hi:g}); reading it unchanged would normalise it "
                f"with another range's statistics: map its values into the model's range with "
                f"--rescale (rescale=...): bits{hint} or MIN,MAX (e.g. --rescale 0,2047) keep "
                f"the scene's contrast; percentile (per band 2nd..98th percentile) stretches it, "
                f"for scenes whose range is unknown. Or use a model trained on {scene_dtype}."
            )
        return None
    if max(bands) > info.count:
        return None  # the band check of the card reports this
    out_low, out_high = (float(v) for v in card.value_range)
    if spec.method == "range":
        low = (spec.low,) * len(bands)
        high = (spec.high,) * len(bands)
    else:
        sample = _sample(info, bands)
        if sample.shape[1] == 0:
            raise IncompatibleSceneError(
                f"rescale {spec.describe()!r}: the {len(sample_windows(info))} sample windows "
                f"of scene {info.path!r} hold no valid pixel; give MIN,MAX (e.g. --rescale "
                f"0,2047) instead."
            )
        if spec.method == "percentile":
            low_q, high_q = np.percentile(sample, [spec.low, spec.high], axis=1)
            low = tuple(float(v) for v in low_q)
            high = tuple(float(max(h, lq + 1e-6)) for lq, h in zip(low_q, high_q))
        else:
            bits = spec.bits or _file_nbits(info) or max(8, int(sample.max()).bit_length())
            low = (0.0,) * len(bands)
            high = (float(2**bits - 1),) * len(bands)
    result = Rescale(bands, low, high, out_low, out_high, card.dtype, spec.describe())
    log.info("rescaling %s (%s): bands %s from %s..%s to %g..%g", info.path, result.method,
             list(bands), [round(v, 3) for v in low], [round(v, 3) for v in high], out_low,
             out_high)
    return result
