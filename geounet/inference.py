"""Run the model over a chunk: read window + halo, normalize, batch tiles, forward, crop or blend.

The engine core of seamless tiled inference. :func:`predict_chunk` is the one task the
pipeline runs per chunk; :func:`get_runner` gives the per-process model (loaded once);
:func:`predict_array` is the whole-scene reference the tiled result is checked against.

Examples
--------
>>> info = open_scene("scene.tif")  # doctest: +SKIP
>>> runner = get_runner("model.pt", device="auto", precision="auto")  # doctest: +SKIP
>>> grid = plan_tiles(runner.config, info.height, info.width, chunk_size=2048)  # doctest: +SKIP
>>> probs, valid = predict_chunk(info, grid.chunks()[0], grid, runner)  # doctest: +SKIP
>>> mask = classify(probs, threshold=None, valid=valid)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from geounet.blend import DEFAULT_WINDOW, BlendAccumulator, TilePiece, weight_window
from geounet.config import NODATA_CLASS, BlendWindow, Engine, Precision, choices
from geounet.errors import DeviceError, InputError
from geounet.raster import SceneInfo, mirror_pad, read_window
from geounet.tiling import ChunkWindow, Rect, TileGrid, TileWindow, clip_rect

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from geounet.model import ModelCard, UNet, UNetConfig

log = logging.getLogger(__name__)


# ---- device, precision ------------------------------------------------------------------
def resolve_device(device: str = "auto") -> torch.device:
    """Turn ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` into a usable :class:`torch.device`.

    ``auto`` is ``cuda`` when a CUDA device is visible, else ``cpu``.

    Raises
    ------
    DeviceError
        CUDA asked for but not available, or ``cuda:N`` beyond the visible devices.
    """
    import torch

    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {device!r} asked for, but torch sees no CUDA device (torch "
                f"{torch.__version__}); use --device cpu or auto, or install a CUDA build."
            )
        index = int(name[5:]) if ":" in name else torch.cuda.current_device()
        count = torch.cuda.device_count()
        if index >= count:
            raise DeviceError(
                f"device {device!r} does not exist: {count} CUDA device(s) are visible "
                f"(cuda:0..cuda:{count - 1}); pick one of them."
            )
        return torch.device("cuda", index)
    raise DeviceError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N; use one of them.")


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX512_BF16 or AMX), from ``/proc/cpuinfo``
    (:func:`geounet.engines.cpu_flags`)."""
    from geounet.engines import cpu_flags

    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def resolve_precision(precision: Precision, device: torch.device) -> str:
    """The precision actually used: ``fp32``, ``bf16`` or ``fp16``.

    ``auto``: on CUDA bf16 where supported, else fp16; on CPU bf16 when the CPU has
    AVX512_BF16/AMX (about 2.2x faster than fp32), else fp32.
    """
    import torch

    if precision not in choices(Precision):
        raise InputError(f"precision {precision!r} is not one of {choices(Precision)}; pick one.")
    if device.type == "cuda":
        if precision == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return str(precision)
    if precision == "auto":
        return "bf16" if cpu_supports_bf16() else "fp32"
    if precision == "fp16":
        raise DeviceError(
            "precision 'fp16' needs a CUDA device; on CPU use 'bf16', 'fp32' or 'auto'."
        )
    if precision == "bf16" and not cpu_supports_bf16():
        warnings.warn(
            "this CPU has no native bf16 (AVX512_BF16/AMX): bf16 will be emulated and slower "
            "than fp32; use precision 'auto' or 'fp32'.",
            stacklevel=3,
        )
    return str(precision)


# ---- the runner -------------------------------------------------------------------------
class ModelRunner:
    """A loaded model with its card, device and precision: built once per worker process.

    Parameters
    ----------
    model : the :class:`~geounet.model.UNet` (any mode; it is put in eval mode).
    card : its :class:`~geounet.model.ModelCard` (bands, normalization, classes).
    device : ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    precision : ``auto``, ``fp32``, ``bf16`` or ``fp16``.
    engine : ``torch`` (default), ``onnxruntime``, ``openvino`` or ``auto``
        (:func:`geounet.engines.resolve_engine`); the other engines run the model exported
        from ``checkpoint`` (cached next to it, :func:`geounet.engines.make_backend`).
    checkpoint : the checkpoint file the model came from (keys the export cache); None for a
        model built in memory (exported to a temporary folder).
    backend : an already opened engine backend to share (runners of other bands).

    Attributes
    ----------
    calls : forward passes (batches) run so far.
    tiles : tiles run so far.
    """

    def __init__(
        self,
        model: UNet,
        card: ModelCard,
        device: str = "auto",
        precision: Precision = "auto",
        engine: Engine = "torch",
        checkpoint: str | os.PathLike[str] | None = None,
        backend: Any = None,
    ) -> None:
        import torch

        from geounet.engines import make_backend, resolve_engine

        self.card = card
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.engine = resolve_engine(engine, self.device.type, precision=self.precision)
        if self.engine != "torch" and backend is None:
            backend = make_backend(self.engine, model, checkpoint, len(card.bands),
                                   self.precision, torch.get_num_threads())
        self.backend = backend if self.engine != "torch" else None
        self.model = model.to(self.device).eval()
        if self.device.type == "cpu":
            self.model = self.model.to(memory_format=torch.channels_last)
        self._mean = np.asarray(card.mean, dtype=np.float32).reshape(-1, 1, 1)
        self._inv_std = (1.0 / np.asarray(card.std, dtype=np.float32)).reshape(-1, 1, 1)
        self.calls = 0
        self.tiles = 0
        self._lock = threading.Lock()

    @property
    def config(self) -> UNetConfig:
        """The model's architecture."""
        return self.card.architecture

    @property
    def num_classes(self) -> int:
        """K, the number of output classes."""
        return int(self.config.num_classes)

    def __repr__(self) -> str:
        return (
            f"ModelRunner(device={self.device}, precision={self.precision}, "
            f"engine={self.engine}, config={self.config})"
        )

    def normalize(self, pixels: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Model input from raw pixels: ``(x - mean) / std`` per band from the model card.

        Never guessed from the data; uint8 and uint16 alike. Invalid pixels become 0 (the
        band mean), so nodata values cannot leak into their neighbours' predictions.
        """
        if pixels.shape[0] != self._mean.shape[0]:
            raise InputError(
                f"{pixels.shape[0]} bands given, the model card has {self._mean.shape[0]} "
                f"(bands {self.card.bands}); read the card's bands."
            )
        x = (pixels.astype(np.float32) - self._mean) * self._inv_std
        if valid is not None:
            x *= valid[None]
        return x

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Softmax probabilities (N, K, h, w) float32 of a normalized batch (N, C, H, W)."""
        import torch

        with self._lock:
            self.calls += 1
            self.tiles += int(batch.shape[0])
        # Threads of one process may run forwards at once (the in-process threaded scheduler:
        # each thread's torch ops use cores // threads torch threads); the model is read-only
        # in inference mode and the engine backends keep one request per thread.
        if self.backend is not None:  # ONNX Runtime / OpenVINO: logits from the engine
            logits_np = self.backend(np.ascontiguousarray(batch, dtype=np.float32))
            with torch.inference_mode():
                probs = torch.softmax(torch.from_numpy(logits_np), dim=1)
                return probs.contiguous().numpy()
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
            if self.device.type == "cuda":
                x = x.pin_memory().to(self.device, non_blocking=True)
                dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
                with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
                    logits = self.model(x)
                return torch.softmax(logits.float(), dim=1).cpu().numpy()
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                logits = self.model(x)
            probs = torch.softmax(logits.float(), dim=1)
            return probs.contiguous().numpy()


_RUNNERS: dict[tuple[Any, ...], ModelRunner] = {}
_RUNNER_LOCK = threading.Lock()
_LOADS = {"count": 0}


def runner_load_count() -> int:
    """How many times :func:`get_runner` loaded a checkpoint in this process."""
    return _LOADS["count"]


def clear_runner_cache() -> None:
    """Forget the cached runners (frees their models)."""
    with _RUNNER_LOCK:
        _RUNNERS.clear()


BUILTIN_MODEL = Path(__file__).parent / "weights" / "builtin.pt"
"""The checkpoint used when no model is given (made by ``examples/make_model.py``)."""


def default_model_path() -> Path:
    """The built-in model's checkpoint: what ``model=None`` (no ``--model``) uses.

    Raises
    ------
    InputError
        This installation has no built-in model.
    """
    if not BUILTIN_MODEL.is_file():
        raise InputError(
            "no model given and this geounet has no built-in model "
            f"(geounet/weights/{BUILTIN_MODEL.name}); pass a checkpoint with --model PATH "
            "(model=PATH), e.g. one written by `geounet train`."
        )
    return BUILTIN_MODEL


_default_model_path = default_model_path  # older private name, kept for callers of it


def get_runner(
    model_path: str | os.PathLike[str] | None,
    device: str = "auto",
    precision: Precision = "auto",
    bands: tuple[int, ...] | None = None,
    engine: Engine = "torch",
) -> ModelRunner:
    """The process-wide runner for a checkpoint, loaded once, reused (ARCHITECTURE invariant 9).

    Parameters
    ----------
    model_path : a geounet checkpoint; None uses the built-in model (:func:`default_model_path`).
    device, precision : see :class:`ModelRunner`.
    bands : 1-based scene bands to read instead of the model card's (same count). Runners
        for other bands share the one loaded model.
    engine : ``torch``, ``onnxruntime``, ``openvino`` or ``auto`` (:mod:`geounet.engines`);
        the export is made here, on the worker, once per process and cached on disk.

    Examples
    --------
    >>> r1 = get_runner("model.pt", "cpu", "fp32")  # doctest: +SKIP
    >>> r1 is get_runner("model.pt", "cpu", "fp32")  # doctest: +SKIP
    True
    >>> get_runner("model.pt", "cpu", "fp32", bands=(3, 2, 1)).model is r1.model  # doctest: +SKIP
    True
    """
    from geounet.model import load_checkpoint

    path = default_model_path() if model_path is None else Path(model_path)
    try:
        stat = path.stat()
        stamp: Any = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        stamp = None
    key = (str(path.resolve()), stamp, str(device), str(precision), str(engine))
    with _RUNNER_LOCK:
        runner = _RUNNERS.get(key)
        if runner is None:
            model, card = load_checkpoint(path, map_location="cpu")
            runner = ModelRunner(model, card, device=device, precision=precision,
                                 engine=engine, checkpoint=path)
            _LOADS["count"] += 1
            _RUNNERS[key] = runner
            log.info("loaded %s as %r", path, runner)
        if bands is None or tuple(bands) == tuple(runner.card.bands):
            return runner
        band_key = (*key, tuple(int(b) for b in bands))
        view = _RUNNERS.get(band_key)
        if view is None:  # the same loaded model; only the card's band list differs
            card = dataclasses.replace(runner.card, bands=band_key[-1])
            view = ModelRunner(runner.model, card, device=str(runner.device),
                               precision=runner.precision,  # type: ignore[arg-type]
                               engine=runner.engine,  # type: ignore[arg-type]
                               backend=runner.backend)
            _RUNNERS[band_key] = view
        return view


# ---- chunk inference --------------------------------------------------------------------
def _check_grid(grid: TileGrid, runner: ModelRunner) -> None:
    cfg = runner.config
    if grid.padding != cfg.padding or grid.alignment % cfg.alignment:
        raise InputError(
            f"tile grid ({grid.padding}, alignment {grid.alignment}) does not fit the model "
            f"({cfg.padding}, alignment {cfg.alignment}); build it with "
            f"plan_tiles(runner.config, ...)."
        )
    if cfg.padding == "valid":
        if grid.halo != cfg.halo:
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
    chunk's and its neighbours' tile outputs there; empty for valid padding).
    """

    probabilities: np.ndarray
    valid: np.ndarray
    pieces: tuple[TilePiece, ...] = ()


def _run_tiles(
    info: SceneInfo,
    chunk: ChunkWindow,
    grid: TileGrid,
    runner: ModelRunner,
    *,
    touching: bool,
    batch_size: int,
    window: BlendWindow,
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
        for (tile, ty, tx), tile_probs in zip(group, runner.forward(batch)):
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
    return ChunkPrediction(probs, core_valid, tuple(pieces))


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
                      window=window)


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
    ``(y0, x0, height, width)`` in scene pixels, float32 (K, height, width), bool.
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
    grid : from :func:`~geounet.tiling.plan_tiles` for ``runner.config``.
    runner : from :func:`get_runner`.
    batch_size : tiles per forward pass (1 is best on CPU; larger on a GPU).
    window : blending window for same-padding models.

    Returns
    -------
    (probabilities, valid) or None
        float32 (K, height, width) softmax probabilities, 0 at nodata; bool (height, width).
        None, without calling the model, when every pixel of the chunk core is nodata.
    """
    result = _run_tiles(info, chunk, grid, runner, touching=True, batch_size=batch_size,
                        window=window)
    return None if result is None else (result.probabilities, result.valid)


def predict_tiled(
    info: SceneInfo,
    grid: TileGrid,
    runner: ModelRunner,
    *,
    batch_size: int = 1,
    window: BlendWindow = DEFAULT_WINDOW,
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
        result = compute_chunk(info, chunk, grid, runner, batch_size=batch_size, window=window)
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
    pixels: np.ndarray, runner: ModelRunner, valid: np.ndarray | None = None
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
    out = runner.forward(x[None])[0][:, crop : crop + height, crop : crop + width]
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
) -> SeamReport:
    """Compare tiled inference (:func:`predict_tiled`) with :func:`predict_array`.

    For valid-padding models the difference is rounding only (exact overlap-tile); for
    same-padding models it is the seam error of blending. Reads the whole scene: for
    benchmark-sized scenes.
    """
    tiled, valid = predict_tiled(info, grid, runner, batch_size=batch_size, window=window)
    pixels, whole_valid = read_window(info, 0, 0, info.height, info.width, bands=runner.card.bands)
    whole = predict_array(pixels, runner, whole_valid)
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
