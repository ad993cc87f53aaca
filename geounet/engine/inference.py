"""Run the model over a chunk: read window + halo, normalize, batch tiles, forward, crop or blend.

The engine core of seamless tiled inference. :func:`compute_chunk` (each tile of the grid
once) and :func:`blend_seams` (same padding) are what the pipeline runs per chunk;
:func:`predict_chunk` gives one chunk's result on its own; :func:`predict_array` is the
whole-scene reference the tiled result is checked against. The per-process model
(:func:`get_runner`, loaded once) lives in :mod:`geounet.engine.runner` and is re-exported here.

Examples
--------
>>> info = open_scene("scene.tif")  # doctest: +SKIP
>>> runner = get_runner("model.pt", device="auto", precision="auto")  # doctest: +SKIP
>>> grid = plan_tiles(runner.config, info.height, info.width, chunk_size=2048)  # doctest: +SKIP
>>> probs, valid = predict_chunk(info, grid.chunks()[0], grid, runner)  # doctest: +SKIP
>>> mask = classify(probs, threshold=None, valid=valid)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from geounet.config import NODATA_CLASS, TTA, BlendWindow
from geounet.engine.blend import DEFAULT_WINDOW, BlendAccumulator, TilePiece, weight_window
from geounet.engine.runner import (  # re-exported: the runner is part of this module's face
    BUILTIN_MODEL,
    ModelRunner,
    clear_runner_cache,
    cpu_supports_bf16,
    default_model_path,
    get_runner,
    resolve_device,
    resolve_precision,
    runner_load_count,
)
from geounet.engine.tiling import ChunkWindow, Rect, TileGrid, TileWindow, clip_rect
from geounet.errors import InputError
from geounet.raster import SceneInfo, mirror_pad, read_window

__all__ = [
    "BUILTIN_MODEL",
    "ChunkPrediction",
    "ModelRunner",
    "SeamReport",
    "blend_seams",
    "classify",
    "clear_runner_cache",
    "compute_chunk",
    "cpu_supports_bf16",
    "default_model_path",
    "get_runner",
    "measure_seam_error",
    "predict_array",
    "predict_chunk",
    "predict_tiled",
    "resolve_device",
    "resolve_precision",
    "runner_load_count",
]

log = logging.getLogger(__name__)


# ---- chunk inference --------------------------------------------------------------------
def _check_grid(grid: TileGrid, runner: ModelRunner) -> None:
    cfg = runner.config
    if grid.padding != cfg.padding or grid.alignment % cfg.alignment:
        raise InputError(
            f"tile grid ({grid.padding}, alignment {grid.alignment}) does not fit the model "
            f"({cfg.padding}, alignment {cfg.alignment}); build it with "
            f"plan_tiles(runner.config, ...)."
        )
    if cfg.padding == "valid" and grid.halo != cfg.halo:
        raise InputError(
            f"tile grid halo {grid.halo} differs from the model's {cfg.halo}; build the grid "
            f"with plan_tiles(runner.config, ...)."
        )
    cfg.check_input_size(grid.tile_size)


@dataclass(frozen=True)
class ChunkPrediction:
    """What one chunk's own tiles give (:func:`compute_chunk`).

    ``probabilities`` float32 (K, height, width), 0 at nodata, and ``valid`` bool
    (height, width) over the chunk core: final everywhere except in
    ``grid.seam_rects(chunk)``, which :func:`blend_seams` finishes from ``pieces`` (this
    chunk's and its neighbours' tile outputs there; empty for valid padding). ``tiles``: how
    many tiles the model ran (the run's warm-up times them, :mod:`geounet.run.eta`).
    """

    probabilities: np.ndarray
    valid: np.ndarray
    pieces: tuple[TilePiece, ...] = ()
    tiles: int = 0


def _run_tiles(
    info: SceneInfo,
    chunk: ChunkWindow,
    grid: TileGrid,
    runner: ModelRunner,
    *,
    touching: bool,
    batch_size: int,
    window: BlendWindow,
    tta: TTA = "none",
) -> ChunkPrediction | None:
    """Run the chunk's tiles (own, or all ``touching`` its core) and crop or blend them into
    the core; return the prediction (with pieces when not ``touching``), or None without
    calling the model when no tile has a valid pixel where it is needed (the core when
    ``touching``, else anywhere in the scene)."""
    if batch_size < 1:
        raise InputError(f"batch size {batch_size} is below 1; use 1 or more tiles per batch.")
    _check_grid(grid, runner)
    wy0, wx0, wh, ww = grid.chunk_input_window(chunk, touching=touching)
    pixels, valid = read_window(info, wy0, wx0, wh, ww, bands=runner.card.bands)
    cy, cx = chunk.y0 - wy0, chunk.x0 - wx0
    core_valid = valid[cy : cy + chunk.height, cx : cx + chunk.width].copy()
    # where a tile's output is needed, in window coordinates
    need = (cy, cx, chunk.height, chunk.width) if touching else \
        (-wy0, -wx0, grid.height, grid.width)
    jobs = _tile_jobs(grid, chunk, grid.tiles(chunk, touching=touching), valid, (wy0, wx0), need)
    if not jobs:
        return None
    x = runner.normalize(pixels, valid)
    del pixels
    k, t, out_size = runner.num_classes, grid.tile_size, grid.output_size
    if grid.blended:
        acc, weights = BlendAccumulator(k, chunk.height, chunk.width), weight_window(out_size, window)
    else:
        acc, probs = None, np.zeros((k, chunk.height, chunk.width), dtype=np.float32)
    pieces: list[TilePiece] = []
    off = grid.output_offset
    for start in range(0, len(jobs), batch_size):
        group = jobs[start : start + batch_size]
        batch = np.stack([x[:, ty : ty + t, tx : tx + t] for _, ty, tx in group])
        for (tile, ty, tx), tile_probs in zip(group, runner.forward(batch, tta)):
            oy, ox = tile.y0 + off - chunk.y0, tile.x0 + off - chunk.x0  # output origin
            if acc is None:  # valid: the core is exact, crop it
                ya, yb = max(0, tile.core_y0 - chunk.y0), min(chunk.height, tile.core_y0
                                                               + tile.core_height - chunk.y0)
                xa, xb = max(0, tile.core_x0 - chunk.x0), min(chunk.width, tile.core_x0
                                                              + tile.core_width - chunk.x0)
                probs[:, ya:yb, xa:xb] = tile_probs[:, ya - oy : yb - oy, xa - ox : xb - ox]
                continue
            tile_valid = valid[ty + off : ty + off + out_size, tx + off : tx + off + out_size]
            acc.add(tile_probs, oy, ox, weights, tile_valid)
            if not touching:
                pieces.extend(_seam_pieces(grid, chunk, tile, tile_probs, tile_valid))
    if acc is not None:
        probs, _ = acc.result()
    probs *= core_valid[None]
    return ChunkPrediction(probs, core_valid, tuple(pieces), len(jobs))


def _tile_jobs(
    grid: TileGrid,
    chunk: ChunkWindow,
    tiles: list[TileWindow],
    valid: np.ndarray,
    origin: tuple[int, int],
    need: Rect,
) -> list[tuple[TileWindow, int, int]]:
    """``(tile, input row, input column)`` in the window of every tile with a valid pixel in
    its output within ``need`` (window coordinates); the others would add nothing."""
    wy0, wx0 = origin
    jobs = []
    for tile in tiles:
        if grid.blended:
            extent = (tile.y0 - wy0, tile.x0 - wx0, grid.output_size, grid.output_size)
        else:
            extent = (tile.core_y0 - wy0, tile.core_x0 - wx0, tile.core_height, tile.core_width)
        ya, xa, h, w = clip_rect(extent, need)
        if h and w and valid[ya : ya + h, xa : xa + w].any():
            jobs.append((tile, tile.y0 - wy0, tile.x0 - wx0))
    return jobs


def _seam_pieces(
    grid: TileGrid, chunk: ChunkWindow, tile: TileWindow, probs: np.ndarray, valid: np.ndarray
) -> list[TilePiece]:
    """The parts of a blended tile's output that a seam blend needs (copies)."""
    pieces = []
    for y0, x0, h, w in grid.tile_seam_rects(tile, chunk):
        oy, ox = y0 - tile.y0, x0 - tile.x0
        pieces.append(TilePiece(tile.row, tile.col, y0, x0, oy, ox,
                                probs[:, oy : oy + h, ox : ox + w].copy(),
                                valid[oy : oy + h, ox : ox + w].copy()))
    return pieces


def compute_chunk(
    info: SceneInfo,
    chunk: ChunkWindow,
    grid: TileGrid,
    runner: ModelRunner,
    *,
    batch_size: int = 1,
    window: BlendWindow = DEFAULT_WINDOW,
    tta: TTA = "none",
) -> ChunkPrediction | None:
    """Run the tiles ``chunk`` owns, each tile of the grid once over all chunks.

    The pipeline's task. Valid padding: the result is final. Same padding: final except in
    ``grid.seam_rects(chunk)``, finished by :func:`blend_seams` from the pieces of this chunk
    and its neighbours (the seam exchange; ``docs/ARCHITECTURE.md`` invariant 3).

    Returns
    -------
    ChunkPrediction or None
        None, without calling the model, when no tile of the chunk has a valid pixel. A chunk
        whose core is all nodata may still return pieces for its neighbours' seams (its
        ``valid`` is then all False).
    """
    return _run_tiles(info, chunk, grid, runner, touching=False, batch_size=batch_size,
                      window=window, tta=tta)


def blend_seams(
    grid: TileGrid,
    chunk: ChunkWindow,
    pieces: Iterable[TilePiece],
    *,
    window: BlendWindow = DEFAULT_WINDOW,
) -> list[tuple[Rect, np.ndarray, np.ndarray]]:
    """Finish the seam regions of ``chunk`` from tile pieces.

    ``pieces``: those of ``chunk`` and of its ``grid.neighbours(chunk)`` (from
    :func:`compute_chunk`; others are ignored). Tiles are added in global row-major order, as
    a chunk adds its own, so every pixel is bit-identical to blending all tiles touching the
    chunk at once (:func:`predict_chunk`).

    Returns
    -------
    ``[(rect, probabilities, valid), ...]`` for each of ``grid.seam_rects(chunk)``: rect
    ``(y0, x0, height, width)`` in scene pixels, float32 (K, height, width), bool. Empty
    when there are no pieces: every tile reaching a valid seam pixel leaves pieces, so the
    seams of such a chunk hold no valid pixel.
    """
    ordered = sorted(pieces, key=lambda p: (p.row, p.col))
    if not ordered:
        return []
    k = ordered[0].values.shape[0]
    weights = weight_window(grid.output_size, window)
    out = []
    for rect in grid.seam_rects(chunk):
        y0, x0, h, w = rect
        acc = BlendAccumulator(k, h, w)
        for piece in ordered:
            acc.add_piece(piece, y0, x0, weights)
        probs, valid = acc.result()
        out.append((rect, probs, valid))
    return out


def predict_chunk(
    info: SceneInfo,
    chunk: ChunkWindow,
    grid: TileGrid,
    runner: ModelRunner,
    *,
    batch_size: int = 1,
    window: BlendWindow = DEFAULT_WINDOW,
    tta: TTA = "none",
) -> tuple[np.ndarray, np.ndarray] | None:
    """Class probabilities of one chunk core on its own, computed from the global tile grid.

    Reads the chunk's input window (core + tile halos, mirrored beyond the scene) itself,
    runs every tile touching the core in batches of ``batch_size`` and crops (valid
    padding) or blends (same padding) their outputs. For same padding that includes the
    neighbours' tiles within ``halo`` of its seams, which a whole run computes once
    (:func:`compute_chunk` + :func:`blend_seams`); the result is bit-identical.

    Parameters
    ----------
    info : the scene.
    chunk : one of ``grid.chunks()``.
    grid : from :func:`~geounet.engine.tiling.plan_tiles` for ``runner.config``.
    runner : from :func:`get_runner`.
    batch_size : tiles per forward pass (1 is best on CPU; larger on a GPU).
    window : blending window for same-padding models.
    tta : test-time augmentation of every tile (``none``, ``flips``, ``d4``;
        :meth:`ModelRunner.forward`).

    Returns
    -------
    (probabilities, valid) or None
        float32 (K, height, width) softmax probabilities, 0 at nodata; bool (height, width).
        None, without calling the model, when every pixel of the chunk core is nodata.
    """
    result = _run_tiles(info, chunk, grid, runner, touching=True, batch_size=batch_size,
                        window=window, tta=tta)
    return None if result is None else (result.probabilities, result.valid)


def predict_tiled(
    info: SceneInfo,
    grid: TileGrid,
    runner: ModelRunner,
    *,
    batch_size: int = 1,
    window: BlendWindow = DEFAULT_WINDOW,
    tta: TTA = "none",
) -> tuple[np.ndarray, np.ndarray]:
    """Run every chunk as the pipeline does (:func:`compute_chunk`, then :func:`blend_seams`)
    and assemble a scene-sized result.

    For tests, benchmarks and small scenes only: the pipeline writes chunk by chunk instead.
    """
    k = runner.num_classes
    probs = np.zeros((k, grid.height, grid.width), dtype=np.float32)
    valid = np.zeros((grid.height, grid.width), dtype=bool)
    pieces: dict[tuple[int, int], tuple[TilePiece, ...]] = {}
    for chunk in grid.chunks():
        result = compute_chunk(info, chunk, grid, runner, batch_size=batch_size, window=window,
                               tta=tta)
        if result is not None:
            probs[:, chunk.y0 : chunk.y1, chunk.x0 : chunk.x1] = result.probabilities
            valid[chunk.y0 : chunk.y1, chunk.x0 : chunk.x1] = result.valid
            pieces[(chunk.row, chunk.col)] = result.pieces
    for chunk in grid.chunks():
        near = [chunk, *grid.neighbours(chunk)]
        found = [p for c in near for p in pieces.get((c.row, c.col), ())]
        for (y0, x0, h, w), seam_probs, seam_valid in blend_seams(grid, chunk, found,
                                                                  window=window):
            probs[:, y0 : y0 + h, x0 : x0 + w] = seam_probs
            valid[y0 : y0 + h, x0 : x0 + w] = seam_valid
    return probs, valid


def predict_array(
    pixels: np.ndarray, runner: ModelRunner, valid: np.ndarray | None = None,
    tta: TTA = "none",
) -> np.ndarray:
    """Whole-scene reference: mirror-pad the whole array and run the model once.

    Valid padding: ``halo`` mirrored pixels on the top/left and ``halo`` + the few pixels
    needed to reach a valid input size on the bottom/right. Same padding: the model's
    blending halo mirrored on every side (plus up to a multiple of the alignment on the
    bottom/right), so scene borders see the same context as the tiles. Memory grows with the array: for tests.

    Parameters
    ----------
    pixels : raw scene pixels (band, y, x) of the card's bands.
    runner : the model.
    valid : bool (y, x); invalid pixels are fed as the band mean and get probability 0.
    tta : test-time augmentation (:meth:`ModelRunner.forward`) of the whole padded array:
        what the tiles' own transforms give (valid padding: exactly, since every tile sits at
        a multiple of the alignment from both ends of it).

    Returns
    -------
    float32 (K, y, x) softmax probabilities.
    """
    cfg = runner.config
    _, height, width = pixels.shape
    if valid is None:
        valid = np.ones((height, width), dtype=bool)
    if cfg.padding == "valid":
        before = cfg.halo

        def padded(n: int) -> int:
            lo = max(n + 2 * cfg.halo, cfg.min_input_size)
            return cfg.valid_input_sizes(lo, lo + cfg.alignment)[0]

        after = (padded(height) - height - before, padded(width) - width - before)
        top_left = (before, before)
        crop = 0
    else:  # same padding: the blending halo mirrored on every side, like the tiles see it
        a, crop = cfg.alignment, cfg.halo
        top_left = (crop, crop)
        after = (crop + (-height % a), crop + (-width % a))
    x = runner.normalize(mirror_pad(pixels, top_left, after), mirror_pad(valid, top_left, after))
    out = runner.forward(x[None], tta)[0][:, crop : crop + height, crop : crop + width]
    return np.ascontiguousarray(out * valid[None], dtype=np.float32)


@dataclass(frozen=True)
class SeamReport:
    """Tiled vs whole-scene inference on one scene.

    ``max_abs_diff`` / ``mean_abs_diff`` of the probabilities over valid pixels, and the
    fraction of valid pixels whose argmax class agrees.
    """

    max_abs_diff: float
    mean_abs_diff: float
    class_agreement: float


def measure_seam_error(
    info: SceneInfo,
    grid: TileGrid,
    runner: ModelRunner,
    *,
    batch_size: int = 1,
    window: BlendWindow = DEFAULT_WINDOW,
    tta: TTA = "none",
) -> SeamReport:
    """Compare tiled inference (:func:`predict_tiled`) with :func:`predict_array`.

    For valid-padding models the difference is rounding only (exact overlap-tile); for
    same-padding models it is the seam error of blending. Reads the whole scene: for
    benchmark-sized scenes.
    """
    tiled, valid = predict_tiled(info, grid, runner, batch_size=batch_size, window=window,
                                 tta=tta)
    pixels, whole_valid = read_window(info, 0, 0, info.height, info.width, bands=runner.card.bands)
    whole = predict_array(pixels, runner, whole_valid, tta)
    if not valid.any():
        return SeamReport(0.0, 0.0, 1.0)
    diff = np.abs(tiled - whole)[:, valid]
    agree = (tiled.argmax(0) == whole.argmax(0))[valid]
    return SeamReport(float(diff.max()), float(diff.mean()), float(agree.mean()))


def classify(
    probabilities: np.ndarray, threshold: float | None = None, valid: np.ndarray | None = None
) -> np.ndarray:
    """Class mask (uint8) from probabilities (K, y, x); 255 where invalid.

    Without a threshold the most probable class wins. With one, the most probable
    foreground class (index >= 1) wins only where its probability is >= ``threshold``,
    else the pixel is background (0). ``valid`` defaults to "some probability is non-zero"
    (nodata pixels carry probability 0). uint8 probabilities (0-255) are accepted.

    Examples
    --------
    >>> p = np.array([[[0.5, 0.2]], [[0.3, 0.1]], [[0.2, 0.7]]], np.float32)
    >>> classify(p).tolist(), classify(p, threshold=0.25).tolist()
    ([[0, 2]], [[1, 2]])
    """
    if probabilities.ndim != 3:
        raise InputError(
            f"probabilities of shape {probabilities.shape} are not (class, y, x); give a 3-D array."
        )
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise InputError(f"threshold {threshold} is outside 0..1; give a probability like 0.5.")
    if valid is None:
        valid = probabilities.any(axis=0)
    if threshold is None or probabilities.shape[0] < 2:
        mask = probabilities.argmax(axis=0).astype(np.uint8)
    else:
        scale = 255.0 if probabilities.dtype == np.uint8 else 1.0
        fg = probabilities[1:]
        best = fg.argmax(axis=0)
        best_p = np.take_along_axis(fg, best[None], axis=0)[0]
        mask = np.where(best_p >= threshold * scale, best + 1, 0).astype(np.uint8)
    mask[~valid] = NODATA_CLASS
    return mask
