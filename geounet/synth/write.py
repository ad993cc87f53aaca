"""Scene writing: the output directory, GeoTIFFs window by window, vector truth, synth.json."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from geounet.config import DType
from geounet.errors import InputError, OutputExistsError
from geounet.synth.config import (
    CLASS_NAMES,
    DEFAULT_CRS,
    DEFAULT_ORIGIN,
    MASK_NAME,
    MASK_NODATA,
    OUTPUT_NAMES,
    SCENE_NAME,
    SUMMARY_NAME,
    TRUTH_NAME,
    ScenePlan,
    SynthConfig,
    SynthResult,
    SynthSummary,
)
from geounet.synth.plan import plan_scene
from geounet.synth.render import render_indexed_window, window_indexes

logger = logging.getLogger(__name__)

_FIXED_GPKG_DATE = "2000-01-01T00:00:00.000Z"


def synthesize_scene(
    out_dir: str | Path,
    size: int = 4096,
    seed: int = 0,
    *,
    height: int | None = None,
    width: int | None = None,
    band_count: int = 3,
    dtype: DType = "uint8",
    crs: str = DEFAULT_CRS,
    pixel_size: float = 0.5,
    nodata_border: int = 0,
    chunk_size: int = 1024,
    origin: tuple[float, float] = DEFAULT_ORIGIN,
    overwrite: bool = False,
) -> SynthResult:
    """Write a synthetic scene with ground truth into ``out_dir``.

    Writes ``scene.tif`` (tiled DEFLATE GeoTIFF), ``truth.gpkg`` (layers ``buildings``:
    polygons, ``roads``: centerlines with a ``width`` attribute in metres), ``truth_mask.tif``
    (uint8: 0 background, 1 buildings, 2 roads, 255 nodata) and ``synth.json`` (summary).
    Each file appears under its final name only when complete.

    Parameters
    ----------
    out_dir : directory to write into (created if missing).
    size : side of a square scene in pixels; ``height`` / ``width`` override it.
    seed : random seed; the same arguments give byte-identical files.
    band_count : 3 (RGB) or 4 (RGB + NIR).
    dtype : ``uint8`` or ``uint16`` (12-bit values, up to 4095).
    crs : projected CRS of the scene, in metres.
    pixel_size : metres per pixel.
    nodata_border : width of a nodata frame in pixels; when > 0 the scene declares nodata 0.
    chunk_size : rendering window side (multiple of 256); affects memory and speed only.
    origin : (x, y) of the upper-left corner in the CRS.
    overwrite : replace existing output files in ``out_dir``.

    Returns
    -------
    SynthResult

    Raises
    ------
    InputError, GeoreferenceError : invalid arguments.
    OutputExistsError : an output file exists and ``overwrite`` is False.

    Examples
    --------
    >>> r = synthesize_scene("demo", size=512, seed=1, band_count=4)  # doctest: +SKIP
    >>> r.summary.class_fractions  # doctest: +SKIP
    (0.68, 0.22, 0.10)
    """
    config = SynthConfig(
        height=size if height is None else height,
        width=size if width is None else width,
        seed=seed,
        band_count=band_count,
        dtype=dtype,
        crs=crs,
        pixel_size=float(pixel_size),
        nodata_border=nodata_border,
        chunk_size=chunk_size,
        origin=(float(origin[0]), float(origin[1])),
    )
    return write_synthetic_scene(out_dir, config, overwrite=overwrite)


def write_synthetic_scene(
    out_dir: str | Path, config: SynthConfig, *, overwrite: bool = False
) -> SynthResult:
    """Write the scene described by ``config``; see :func:`synthesize_scene`."""
    out_dir = Path(out_dir)
    _check_outputs(out_dir, overwrite)
    created = _make_directory(out_dir)
    tmp = None
    try:
        plan = plan_scene(config)
        tmp = Path(tempfile.mkdtemp(prefix=".synth-", dir=out_dir))
        counts = _render(config, plan, tmp / SCENE_NAME, tmp / MASK_NAME)
        road_length = _write_truth(config, plan, tmp / TRUTH_NAME)
        summary = _summary(config, plan, counts, road_length)
        (tmp / SUMMARY_NAME).write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
        for name in OUTPUT_NAMES:
            os.replace(tmp / name, out_dir / name)
    except BaseException:
        # nothing is left behind: no temporary files, no directory this call created
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        _remove_created(created)
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    logger.info(
        "synthesized %d x %d scene with %d buildings and %d roads in %s",
        config.height,
        config.width,
        summary.n_buildings,
        summary.n_roads,
        out_dir,
    )
    return SynthResult(
        out_dir=out_dir,
        scene_path=out_dir / SCENE_NAME,
        truth_path=out_dir / TRUTH_NAME,
        mask_path=out_dir / MASK_NAME,
        summary_path=out_dir / SUMMARY_NAME,
        summary=summary,
    )


def _check_outputs(out_dir: Path, overwrite: bool) -> None:
    """Refuse a file as ``out_dir``, a directory where an output goes, and existing outputs
    without ``overwrite``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(
            f"output directory {str(out_dir)!r} is a file; give a directory path."
        )
    existing = [name for name in OUTPUT_NAMES if (out_dir / name).exists()]
    not_files = [name for name in existing if not (out_dir / name).is_file()]
    if not_files:
        raise OutputExistsError(
            f"{str(out_dir / not_files[0])!r} is a directory, not a file, so it cannot be "
            f"replaced by synth's {not_files[0]}; remove it or choose another directory."
        )
    if existing and not overwrite:
        raise OutputExistsError(
            f"{str(out_dir)!r} already holds {', '.join(existing)}; "
            f"use --overwrite (overwrite=True) to replace them, or choose another directory."
        )


def _summary(config: SynthConfig, plan: ScenePlan, counts: np.ndarray,
             road_length: float) -> SynthSummary:
    """What ``synth.json`` says of the written scene (``counts``: pixels per class and
    nodata)."""
    valid = int(counts[:3].sum())
    return SynthSummary(
        height=config.height,
        width=config.width,
        band_count=config.band_count,
        dtype=config.dtype,
        crs=config.crs,
        pixel_size=config.pixel_size,
        nodata=config.nodata,
        seed=int(config.seed),
        n_buildings=len(plan.buildings),
        n_roads=len(plan.roads),
        road_length_m=round(road_length, 1),
        class_fractions=(
            round(float(counts[0]) / max(valid, 1), 4),
            round(float(counts[1]) / max(valid, 1), 4),
            round(float(counts[2]) / max(valid, 1), 4),
        ),
        nodata_fraction=round(float(counts[3]) / (config.height * config.width), 4),
    )


def _make_directory(out_dir: Path) -> list[Path]:
    """Create ``out_dir`` and missing parents; return the directories created (deepest last)."""
    created = []
    for directory in [*reversed(out_dir.parents), out_dir]:
        if directory.is_dir():
            continue
        try:
            directory.mkdir()
        except OSError as exc:
            _remove_created(created)
            raise InputError(
                f"output directory {str(out_dir)!r} cannot be created ({exc.strerror or exc}); "
                f"choose a directory you can write to."
            ) from exc
        created.append(directory)
    return created


def _remove_created(created: list[Path]) -> None:
    """Remove the directories :func:`_make_directory` created, if they are still empty."""
    for directory in reversed(created):
        try:
            directory.rmdir()
        except OSError:
            return


def _transform(config: SynthConfig) -> Any:
    """The scene's affine transform (north up, square pixels)."""
    from rasterio.transform import from_origin

    return from_origin(config.origin[0], config.origin[1], config.pixel_size, config.pixel_size)


def _render(config: SynthConfig, plan: ScenePlan, scene_path: Path, mask_path: Path) -> np.ndarray:
    """Write scene and mask window by window; return pixel counts per class + nodata."""
    import rasterio
    from rasterio.windows import Window

    common = {
        "driver": "GTiff",
        "height": config.height,
        "width": config.width,
        "crs": config.crs,
        "transform": _transform(config),
        "tiled": True,
        "blockxsize": config.block_size,
        "blockysize": config.block_size,
        "compress": "deflate",
    }
    scene_profile = dict(
        common, count=config.band_count, dtype=config.dtype, predictor=2, nodata=config.nodata
    )
    if config.band_count == 4:  # NIR, not GDAL's default alpha for a 4th band (a mask)
        scene_profile.update(photometric="RGB", alpha="UNSPECIFIED")
    mask_profile = dict(common, count=1, dtype="uint8", nodata=MASK_NODATA)
    indexes = window_indexes(plan)
    counts = np.zeros(256, dtype=np.int64)
    step = config.chunk_size
    names = ("red", "green", "blue", "nir")
    with rasterio.Env(GDAL_CACHEMAX=256 * 1024 * 1024), rasterio.open(
        scene_path, "w", **scene_profile
    ) as scene, rasterio.open(mask_path, "w", **mask_profile) as mask_file:
        for band in range(config.band_count):
            scene.set_band_description(band + 1, names[band])
        mask_file.set_band_description(1, "class")
        mask_file.update_tags(1, classes=",".join(CLASS_NAMES), nodata_class=str(MASK_NODATA))
        for y0 in range(0, config.height, step):
            for x0 in range(0, config.width, step):
                height = min(step, config.height - y0)
                width = min(step, config.width - x0)
                pixels, mask = render_indexed_window(config, plan, indexes, y0, x0, height, width)
                window = Window(x0, y0, width, height)
                scene.write(pixels, window=window)
                mask_file.write(mask, 1, window=window)
                counts += np.bincount(mask.ravel(), minlength=256)
                logger.debug("rendered window y=%d x=%d", y0, x0)
    return np.array([counts[0], counts[1], counts[2], counts[MASK_NODATA]])


def _write_truth(config: SynthConfig, plan: ScenePlan, path: Path) -> float:
    """Write the vector truth in the scene CRS; return the total road length in metres."""
    import geopandas as gpd
    import pyogrio
    import shapely

    transform = _transform(config)

    def to_world(geoms: np.ndarray) -> np.ndarray:
        def apply(coords: np.ndarray) -> np.ndarray:
            x = transform.c + coords[:, 0] * transform.a
            y = transform.f + coords[:, 1] * transform.e
            return np.column_stack([x, y])

        return shapely.transform(np.asarray(geoms, dtype=object), apply)

    scene_box = shapely.box(0, 0, config.width, config.height)
    buildings = shapely.intersection(plan.buildings, scene_box)
    keep_b = ~shapely.is_empty(buildings)
    roads = plan.roads  # already clipped to the scene and connected
    keep_r = ~shapely.is_empty(roads)
    kind_names = np.array(["asphalt", "concrete", "dirt"])
    building_ids = np.arange(1, len(plan.buildings) + 1)[keep_b]
    gdf_b = gpd.GeoDataFrame(
        {"id": building_ids.astype(np.int64), "class": "buildings"},
        geometry=to_world(buildings[keep_b]),
        crs=config.crs,
    )
    gdf_r = gpd.GeoDataFrame(
        {
            "id": np.arange(1, len(plan.roads) + 1)[keep_r].astype(np.int64),
            "class": "roads",
            "width": np.round(plan.road_width_m[keep_r], 3),
            "surface": kind_names[plan.road_kind[keep_r]],
        },
        geometry=to_world(roads[keep_r]),
        crs=config.crs,
    )
    # a fixed timestamp in gpkg_contents keeps the file byte-identical for a seed
    previous = {"OGR_CURRENT_DATE": pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")}
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": _FIXED_GPKG_DATE})
    try:
        gdf_b.to_file(path, layer="buildings", driver="GPKG", engine="pyogrio")
        gdf_r.to_file(path, layer="roads", driver="GPKG", engine="pyogrio")
    finally:
        pyogrio.set_gdal_config_options(previous)
    return float(shapely.length(roads[keep_r]).sum() * config.pixel_size)
