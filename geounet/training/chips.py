"""Cut a scene and vector labels into georeferenced training chips with a spatially blocked split.

Also home of the label rasterizer shared with :mod:`geounet.evaluation`: polygons are burnt as
they are, lines are buffered by their ``width`` attribute (metres) or ``line_width``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geounet.errors import GeoreferenceError, InputError, LabelError, OutputExistsError
from geounet.training.metrics import NODATA

log = logging.getLogger(__name__)

DEFAULT_CLASS_LAYERS: dict[str, str] = {"buildings": "buildings", "roads": "roads"}
"""Class name -> GeoPackage layer; class indices follow this order after ``background`` (0)."""

SPLIT_FILE = "split.csv"
CHIPS_META = "chips.json"
SPLIT_COLUMNS = (
    "name", "split", "row", "col", "block", "y0", "x0", "height", "width",
    "labelled_fraction", "nodata_fraction",
)


@dataclass(frozen=True)
class ClassShapes:
    """Label geometries of one class, in the target CRS, ready to burn.

    Attributes
    ----------
    index : class index burnt into the mask (1 for the first class layer).
    name : class name.
    geometries : shapely polygons (lines already buffered).
    """

    index: int
    name: str
    geometries: tuple[Any, ...]


@dataclass(frozen=True)
class ChipSummary:
    """What :func:`make_chips` wrote.

    Attributes
    ----------
    out_dir : the chips directory (``images/``, ``masks/``, ``split.csv``, ``chips.json``).
    classes : class names in index order, ``background`` first.
    n_train, n_val : chips written per split.
    n_skipped : chip windows skipped (mostly nodata, or fewer labelled pixels than asked).
    """

    out_dir: Path
    classes: tuple[str, ...]
    n_train: int
    n_val: int
    n_skipped: int

    @property
    def n_chips(self) -> int:
        """Total chips written."""
        return self.n_train + self.n_val


def _check_class_layers(class_layers: Mapping[str, str]) -> None:
    if not class_layers:
        raise InputError("class_layers is empty; give at least one, e.g. {'buildings': 'buildings'}.")
    if len(class_layers) > 254:
        raise InputError(f"{len(class_layers)} classes do not fit a uint8 mask; use at most 254.")
    if "background" in class_layers:
        raise InputError(
            "class 'background' is reserved for index 0; name the class layers otherwise."
        )


def load_label_shapes(
    labels: str | os.PathLike[str],
    crs: Any,
    *,
    class_layers: Mapping[str, str] | None = None,
    line_width: float | None = None,
) -> list[ClassShapes]:
    """Read label layers, reproject them to ``crs`` and buffer lines into polygons.

    Parameters
    ----------
    labels : GeoPackage (or any multi-layer vector file pyogrio reads).
    crs : target CRS (the scene's), anything :mod:`pyproj` accepts.
    class_layers : class name -> layer name; class index = position + 1.
    line_width : metres; width of line features without a ``width`` attribute.

    Returns
    -------
    One :class:`ClassShapes` per class layer found (missing layers warn; all missing raises).

    Examples
    --------
    >>> shapes = load_label_shapes("truth.gpkg", "EPSG:32633")  # doctest: +SKIP
    """
    import geopandas as gpd
    import pyogrio
    from pyproj import CRS

    class_layers = dict(DEFAULT_CLASS_LAYERS if class_layers is None else class_layers)
    _check_class_layers(class_layers)
    path = Path(labels)
    if not path.exists():
        raise LabelError(f"label file {str(path)!r} does not exist; give a GeoPackage path.")
    try:
        available = {str(row[0]) for row in pyogrio.list_layers(path)}
    except Exception as exc:  # pyogrio raises DataSourceError and friends
        raise LabelError(
            f"label file {str(path)!r} cannot be read as a vector file ({exc}); "
            "give a GeoPackage with one layer per class."
        ) from exc
    if crs is None:
        raise GeoreferenceError(
            "the scene has no CRS, so labels cannot be placed on it; georeference the scene first."
        )
    target = CRS.from_user_input(crs)
    result: list[ClassShapes] = []
    for index, (name, layer) in enumerate(class_layers.items(), start=1):
        if layer not in available:
            warnings.warn(
                f"label layer {layer!r} for class {name!r} is not in {str(path)!r} "
                f"(layers: {sorted(available)}); the class gets no labels.",
                stacklevel=2,
            )
            result.append(ClassShapes(index, name, ()))
            continue
        gdf = gpd.read_file(path, layer=layer)
        if gdf.crs is None:
            raise LabelError(
                f"label layer {layer!r} has no CRS; set one (e.g. with ogr2ogr -a_srs) first."
            )
        gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
        result.append(ClassShapes(index, name, tuple(_to_polygons(gdf, target, line_width, layer))))
    if not any(layer in available for layer in class_layers.values()):
        raise LabelError(
            f"none of the label layers {sorted(class_layers.values())} is in {str(path)!r} "
            f"(layers: {sorted(available)}); pass class_layers naming them."
        )
    return result


def _to_polygons(gdf: Any, target: Any, line_width: float | None, layer: str) -> list[Any]:
    """Reproject to ``target``; buffer lines by ``width`` (metres) or ``line_width``."""
    import geopandas as gpd

    if len(gdf) == 0:
        return []
    kinds = gdf.geometry.geom_type
    is_line = kinds.isin(["LineString", "MultiLineString", "LinearRing"]).to_numpy()
    is_area = kinds.isin(["Polygon", "MultiPolygon"]).to_numpy()
    if not (is_line | is_area).all():
        bad = sorted(set(kinds[~(is_line | is_area)]))
        raise LabelError(
            f"layer {layer!r} has {bad} geometries; labels must be polygons or lines."
        )
    out: list[Any] = list(gdf[is_area].to_crs(target).geometry)
    if is_line.any():
        lines = gdf[is_line]
        if "width" in lines.columns:
            widths = lines["width"].astype(float).to_numpy()
        else:
            widths = np.full(len(lines), np.nan)
        if line_width is not None:
            widths = np.where(np.isnan(widths), float(line_width), widths)
        if np.isnan(widths).any() or (widths <= 0).any():
            raise LabelError(
                f"layer {layer!r} has line features without a positive 'width' attribute; "
                "give line_width (metres), e.g. --line-width 6."
            )
        metric = target if (target.is_projected and _unit_is_metre(target)) else None
        if metric is None:
            metric = gpd.GeoSeries(lines.geometry, crs=lines.crs).to_crs(4326).estimate_utm_crs()
        buffered = gpd.GeoSeries(lines.geometry, crs=lines.crs).to_crs(metric).buffer(widths / 2.0)
        out.extend(buffered.to_crs(target))
    return [g for g in out if g is not None and not g.is_empty]


def _unit_is_metre(crs: Any) -> bool:
    try:
        return crs.axis_info[0].unit_name in ("metre", "meter")
    except (IndexError, AttributeError):
        return False


def rasterize_shapes(
    shapes: Sequence[ClassShapes], transform: Any, height: int, width: int
) -> np.ndarray:
    """Burn class shapes onto a grid: uint8 mask, 0 background, later classes on top.

    Parameters
    ----------
    shapes : from :func:`load_label_shapes`, in the grid's CRS.
    transform : affine transform of the grid (e.g. a chip window's transform).
    height, width : grid size in pixels.

    Examples
    --------
    >>> mask = rasterize_shapes(shapes, transform, 256, 256)  # doctest: +SKIP
    """
    from rasterio.features import rasterize
    from rasterio.transform import array_bounds
    from shapely.geometry import box

    mask = np.zeros((height, width), dtype=np.uint8)
    if height == 0 or width == 0:
        return mask
    window = box(*array_bounds(height, width, transform))
    for cls in sorted(shapes, key=lambda c: c.index):
        geoms = [g for g in cls.geometries if g.intersects(window)]
        if geoms:
            rasterize(
                [(g, cls.index) for g in geoms], out=mask, transform=transform, dtype=np.uint8
            )
    return mask


def _assign_blocks(
    blocks: Sequence[tuple[int, int]], val_fraction: float, seed: int
) -> dict[tuple[int, int], str]:
    """Map each block (block_row, block_col) holding chips to ``train`` or ``val``, seeded.

    ``round(len(blocks) * val_fraction)`` blocks go to validation, at least one (and at least
    one stays for training) when there are two or more blocks and ``val_fraction > 0``.
    """
    blocks = sorted(set(blocks))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(blocks))
    n_val = int(round(len(blocks) * val_fraction))
    if val_fraction > 0 and len(blocks) > 1:
        n_val = min(max(n_val, 1), len(blocks) - 1)
    val = {blocks[i] for i in order[:n_val]}
    if val_fraction > 0 and not val:
        warnings.warn(
            f"all chips fall in {len(blocks)} split block; no validation chips. Use a smaller "
            "split_block (--split-block) or a larger scene.", stacklevel=3,
        )
    return {b: ("val" if b in val else "train") for b in blocks}


def make_chips(
    scene: str | os.PathLike[str],
    labels: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    chip_size: int = 256,
    class_layers: Mapping[str, str] | None = None,
    line_width: float | None = None,
    min_labelled: float = 0.0,
    max_nodata: float = 0.5,
    val_fraction: float = 0.2,
    split_block: int = 4,
    seed: int = 0,
    overwrite: bool = False,
) -> ChipSummary:
    """Cut ``scene`` + vector ``labels`` into image/mask GeoTIFF chip pairs.

    Chips lie on a grid anchored at the scene origin; edge chips are clipped to the scene (the
    trainer mirror-pads them). Masks hold the class index (0 background, 1.. the class layers
    in order), 255 where the scene is nodata. Blocks of ``split_block`` x ``split_block`` chips
    go wholly to train or val so that neighbouring chips do not leak across the split.

    Parameters
    ----------
    scene : GeoTIFF (any GDAL raster) with a CRS.
    labels : GeoPackage with one layer per class (any CRS: reprojected to the scene's).
    out_dir : output directory: ``images/NAME.tif``, ``masks/NAME.tif``, ``split.csv`` and
        ``chips.json`` (classes, source, chip size).
    chip_size : chip side in pixels.
    class_layers : class name -> layer name (default buildings, roads).
    line_width : metres; buffer width of line labels lacking a ``width`` attribute.
    min_labelled : skip chips whose labelled (non-background) share of valid pixels is lower.
    max_nodata : skip chips whose nodata share is higher (0-1).
    val_fraction : share of blocks that go to validation.
    split_block : chips per block side for the spatial split.
    seed : seed of the block assignment.
    overwrite : replace an existing ``out_dir``.

    Returns
    -------
    ChipSummary

    Raises
    ------
    LabelError : labels missing the scene, unreadable or without usable layers.
    OutputExistsError : ``out_dir`` exists and is not empty, without ``overwrite``.

    Examples
    --------
    >>> make_chips("scene.tif", "truth.gpkg", "chips", chip_size=128)  # doctest: +SKIP
    ChipSummary(out_dir=..., classes=('background', 'buildings', 'roads'), ...)
    """
    import rasterio
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform
    from shapely.geometry import box

    class_layers = dict(DEFAULT_CLASS_LAYERS if class_layers is None else class_layers)
    _check_class_layers(class_layers)
    if chip_size < 8:
        raise InputError(f"chip size {chip_size} is too small; use at least 8 (e.g. 256).")
    for name, value in (("min_labelled", min_labelled), ("max_nodata", max_nodata),
                        ("val_fraction", val_fraction)):
        if not 0.0 <= value <= 1.0:
            raise InputError(f"{name} {value} is outside 0-1; give a fraction such as 0.2.")
    if split_block < 1:
        raise InputError(f"split_block {split_block} is not positive; use e.g. 4.")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"chips directory {str(out_dir)!r} exists and is not empty; "
            "choose another --out or pass --overwrite."
        )
    classes = ("background", *class_layers.keys())
    scene = Path(scene)
    try:
        src = rasterio.open(scene)
    except Exception as exc:
        from geounet.errors import SceneError

        raise SceneError(f"scene {str(scene)!r} cannot be opened ({exc}); give a GeoTIFF.") from exc
    with src:
        if src.crs is None:
            raise GeoreferenceError(
                f"scene {str(scene)!r} has no CRS; labels cannot be placed on it. "
                "Georeference it first (e.g. gdal_edit.py -a_srs)."
            )
        shapes = load_label_shapes(labels, src.crs, class_layers=class_layers,
                                   line_width=line_width)
        scene_box = box(*src.bounds)
        if not any(g.intersects(scene_box) for cls in shapes for g in cls.geometries):
            raise LabelError(
                f"no label in {str(labels)!r} overlaps scene {str(scene)!r} "
                f"(scene bounds {tuple(round(v, 3) for v in src.bounds)} in {src.crs}); "
                "check that the labels belong to this scene and carry the right CRS."
            )
        rows = math.ceil(src.height / chip_size)
        cols = math.ceil(src.width / chip_size)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
        try:
            (tmp / "images").mkdir()
            (tmp / "masks").mkdir()
            records: list[dict[str, Any]] = []
            skipped = 0
            image_profile = {
                "driver": "GTiff", "count": src.count, "dtype": src.dtypes[0], "crs": src.crs,
                "nodata": src.nodata, "compress": "deflate",
            }
            mask_profile = {
                "driver": "GTiff", "count": 1, "dtype": "uint8", "crs": src.crs,
                "nodata": NODATA, "compress": "deflate",
            }
            for row in range(rows):
                for col in range(cols):
                    y0, x0 = row * chip_size, col * chip_size
                    height = min(chip_size, src.height - y0)
                    width = min(chip_size, src.width - x0)
                    window = Window(x0, y0, width, height)
                    image = src.read(window=window)
                    valid = src.dataset_mask(window=window) > 0
                    nodata_fraction = 1.0 - float(valid.mean())
                    if nodata_fraction > max_nodata or not valid.any():
                        skipped += 1
                        continue
                    transform = window_transform(window, src.transform)
                    mask = rasterize_shapes(shapes, transform, height, width)
                    labelled = float((mask[valid] > 0).mean())
                    if labelled < min_labelled:
                        skipped += 1
                        continue
                    mask[~valid] = NODATA
                    name = f"{scene.stem}_r{row:04d}_c{col:04d}"
                    common = {"height": height, "width": width, "transform": transform}
                    with rasterio.open(tmp / "images" / f"{name}.tif", "w",
                                       **image_profile, **common) as dst:
                        dst.write(image)
                    with rasterio.open(tmp / "masks" / f"{name}.tif", "w",
                                       **mask_profile, **common) as dst:
                        dst.write(mask, 1)
                        dst.update_tags(classes=",".join(classes))
                    block = (row // split_block, col // split_block)
                    records.append({
                        "name": name, "split": block, "row": row, "col": col,
                        "block": f"{block[0]}_{block[1]}", "y0": y0, "x0": x0,
                        "height": height, "width": width,
                        "labelled_fraction": round(labelled, 6),
                        "nodata_fraction": round(nodata_fraction, 6),
                    })
            if not records:
                raise LabelError(
                    f"every chip of {str(scene)!r} was skipped (max_nodata={max_nodata}, "
                    f"min_labelled={min_labelled}); relax these limits or check the labels."
                )
            blocks = _assign_blocks([r["split"] for r in records], val_fraction, seed)
            for record in records:
                record["split"] = blocks[record["split"]]
            with open(tmp / SPLIT_FILE, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=SPLIT_COLUMNS)
                writer.writeheader()
                writer.writerows(records)
            meta = {
                "classes": list(classes), "class_layers": class_layers,
                "scene": scene.name, "labels": Path(labels).name, "chip_size": chip_size,
                "split_block": split_block, "val_fraction": val_fraction, "seed": seed,
            }
            (tmp / CHIPS_META).write_text(json.dumps(meta, indent=2))
            if out_dir.exists():
                shutil.rmtree(out_dir)
            os.replace(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    n_val = sum(r["split"] == "val" for r in records)
    log.info("wrote %d chips (%d val), skipped %d, to %s", len(records), n_val, skipped, out_dir)
    return ChipSummary(out_dir, classes, len(records) - n_val, n_val, skipped)
