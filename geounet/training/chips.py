"""Cut a scene and vector labels into georeferenced training chips with a spatially blocked split.

Label rasterization lives in :mod:`geounet.raster.labels` (shared with :mod:`geounet.evaluation`);
its names are re-exported here for older imports.
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

from geounet.errors import GeoreferenceError, InputError, LabelError, OutputExistsError, option
from geounet.raster.labels import (
    DEFAULT_CLASS_LAYERS,
    ClassShapes,
    check_class_layers,
    load_label_shapes,
    rasterize_shapes,
)
from geounet.training.metrics import NODATA

log = logging.getLogger(__name__)

SPLIT_FILE = "split.csv"
CHIPS_META = "chips.json"
SPLIT_COLUMNS = (
    "name", "split", "row", "col", "block", "y0", "x0", "height", "width",
    "labelled_fraction", "nodata_fraction",
)


@dataclass(frozen=True)
class ChipSummary:
    """What :func:`make_chips` wrote.

    Attributes
    ----------
    out_dir : the chips directory (``images/``, ``masks/``, ``split.csv``, ``chips.json``).
    classes : class names in index order, ``background`` first.
    n_train, n_val : chips written per split.
    n_skipped : chip windows skipped (mostly nodata, or fewer labelled pixels than asked).
    n_buffer : chips written but used by neither split: training-side chips that touch a
        validation chip (``split.csv`` says ``buffer``).
    """

    out_dir: Path
    classes: tuple[str, ...]
    n_train: int
    n_val: int
    n_skipped: int
    n_buffer: int = 0

    @property
    def n_chips(self) -> int:
        """Total chips written."""
        return self.n_train + self.n_val + self.n_buffer


def check_chips_out(out_dir: Path, overwrite: bool, *sources: str | os.PathLike[str]) -> None:
    """Refuse an ``out_dir`` that holds (or is) one of ``sources``, which replacing it would
    delete, and an existing non-empty ``out_dir`` without ``overwrite``."""
    target = out_dir.resolve()
    for source in sources:
        path = Path(source).resolve()
        if path == target or target in path.parents or path in target.parents:
            raise InputError(
                f"chips directory {str(out_dir)!r} and the input {str(source)!r} overlap "
                "(one holds the other): writing the chips would replace or mix with the "
                "input; choose an --out outside it."
            )
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"chips directory {str(out_dir)!r} exists and is not empty; choose another --out "
            "or pass --overwrite."
        )


def publish_chips_dir(tmp: Path, out_dir: Path, rows: list[dict[str, Any]],
                      meta: dict[str, Any]) -> None:
    """Finish a chips folder built in ``tmp`` (its split file and ``chips.json``) and move it
    to ``out_dir`` in one rename, replacing an older folder: a chips folder appears only
    when complete."""
    with open(tmp / SPLIT_FILE, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=SPLIT_COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(rows)
    (tmp / CHIPS_META).write_text(json.dumps(meta, indent=2))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)


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
    go wholly to train or val, and training chips that share an edge with a validation chip
    are marked ``buffer`` (used by neither), so no validation chip touches a training chip
    (:mod:`geounet.training.split`).

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
    class_layers = dict(DEFAULT_CLASS_LAYERS if class_layers is None else class_layers)
    _check_options(class_layers, chip_size, min_labelled, max_nodata, val_fraction, split_block)
    out_dir = Path(out_dir)
    check_chips_out(out_dir, overwrite, scene, labels)
    classes = ("background", *class_layers.keys())
    scene = Path(scene)
    src = _open_scene(scene)
    with src:
        shapes = _scene_shapes(src, scene, labels, class_layers, line_width)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
        try:
            records, skipped = _cut_chips(src, scene, shapes, classes, tmp, chip_size=chip_size,
                                          max_nodata=max_nodata, min_labelled=min_labelled,
                                          split_block=split_block)
            if not records:
                raise LabelError(
                    f"every chip of {str(scene)!r} was skipped ({option('max_nodata', max_nodata)}, "
                    f"{option('min_labelled', min_labelled)}); relax these limits or check "
                    "the labels."
                )
            for record, split in zip(records, _split_blocks(records, src.transform,
                                                            val_fraction, seed)):
                record["split"] = split
            meta = {
                "classes": list(classes), "class_layers": class_layers,
                "scene": scene.name, "labels": Path(labels).name, "chip_size": chip_size,
                "split_block": split_block, "val_fraction": val_fraction, "seed": seed,
            }
            publish_chips_dir(tmp, out_dir, records, meta)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    n_val = sum(r["split"] == "val" for r in records)
    n_buffer = sum(r["split"] == "buffer" for r in records)
    log.info("wrote %d chips (%d val, %d buffer), skipped %d, to %s", len(records), n_val,
             n_buffer, skipped, out_dir)
    return ChipSummary(out_dir, classes, len(records) - n_val - n_buffer, n_val, skipped,
                       n_buffer)


def _check_options(class_layers: dict[str, str], chip_size: int, min_labelled: float,
                   max_nodata: float, val_fraction: float, split_block: int) -> None:
    """Validate the class layers, chip size, limits and split block of :func:`make_chips`."""
    check_class_layers(class_layers)
    if chip_size < 8:
        raise InputError(f"chip size {chip_size} is too small; use at least 8 (e.g. 256).")
    for name, value in (("min_labelled", min_labelled), ("max_nodata", max_nodata),
                        ("val_fraction", val_fraction)):
        if not 0.0 <= value <= 1.0:
            raise InputError(f"{name} {value} is outside 0-1; give a fraction such as 0.2.")
    if split_block < 1:
        raise InputError(f"split_block {split_block} is not positive; use e.g. 4.")


def _open_scene(scene: Path) -> Any:
    """The scene opened with rasterio (a SceneError when it cannot be)."""
    import rasterio

    try:
        return rasterio.open(scene)
    except Exception as exc:
        from geounet.errors import SceneError

        raise SceneError(f"scene {str(scene)!r} cannot be opened ({exc}); give a GeoTIFF.") from exc


def _scene_shapes(src: Any, scene: Path, labels: str | os.PathLike[str],
                  class_layers: dict[str, str], line_width: float | None) -> list[ClassShapes]:
    """The labels in the scene's CRS; an error when the scene has no CRS or no label overlaps it."""
    from shapely.geometry import box

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
    return shapes


def _cut_chips(src: Any, scene: Path, shapes: list[ClassShapes], classes: tuple[str, ...],
               tmp: Path, *, chip_size: int, max_nodata: float, min_labelled: float,
               split_block: int) -> tuple[list[dict[str, Any]], int]:
    """Write the chips that pass the limits under ``tmp``; their records (``split`` holds the
    block until the split) and the count skipped."""
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
    for row in range(math.ceil(src.height / chip_size)):
        for col in range(math.ceil(src.width / chip_size)):
            record = _write_chip(src, scene, shapes, classes, tmp, (image_profile, mask_profile),
                                 row, col, chip_size=chip_size, max_nodata=max_nodata,
                                 min_labelled=min_labelled, split_block=split_block)
            if record is None:
                skipped += 1
            else:
                records.append(record)
    return records, skipped


def _write_chip(src: Any, scene: Path, shapes: list[ClassShapes], classes: tuple[str, ...],
                tmp: Path, profiles: tuple[dict[str, Any], dict[str, Any]], row: int, col: int,
                *, chip_size: int, max_nodata: float, min_labelled: float,
                split_block: int) -> dict[str, Any] | None:
    """Write the image and mask of chip (row, col); its record, or None when it is skipped."""
    import rasterio
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    image_profile, mask_profile = profiles
    y0, x0 = row * chip_size, col * chip_size
    height = min(chip_size, src.height - y0)
    width = min(chip_size, src.width - x0)
    window = Window(x0, y0, width, height)
    image = src.read(window=window)
    valid = src.dataset_mask(window=window) > 0
    nodata_fraction = 1.0 - float(valid.mean())
    if nodata_fraction > max_nodata or not valid.any():
        return None
    transform = window_transform(window, src.transform)
    mask = rasterize_shapes(shapes, transform, height, width)
    labelled = float((mask[valid] > 0).mean())
    if labelled < min_labelled:
        return None
    mask[~valid] = NODATA
    name = f"{scene.stem}_r{row:04d}_c{col:04d}"
    common = {"height": height, "width": width, "transform": transform}
    with rasterio.open(tmp / "images" / f"{name}.tif", "w", **image_profile, **common) as dst:
        dst.write(image)
    with rasterio.open(tmp / "masks" / f"{name}.tif", "w", **mask_profile, **common) as dst:
        dst.write(mask, 1)
        dst.update_tags(classes=",".join(classes))
    block = (row // split_block, col // split_block)
    return {
        "name": name, "split": block, "row": row, "col": col,
        "block": f"{block[0]}_{block[1]}", "y0": y0, "x0": x0,
        "height": height, "width": width,
        "labelled_fraction": round(labelled, 6),
        "nodata_fraction": round(nodata_fraction, 6),
    }


def _split_blocks(records: Sequence[dict[str, Any]], transform: Any, val_fraction: float,
                  seed: int) -> list[str]:
    """Whole blocks to train or val; training chips touching a val chip become ``buffer``."""
    from geounet.training.split import assign_units, touching_pairs

    blocks = [r["split"] for r in records]
    if val_fraction > 0 and len(set(blocks)) < 2:
        warnings.warn(
            f"all chips fall in {len(set(blocks))} split block; no validation chips. Use a "
            "smaller split_block (--split-block) or a larger scene.", stacklevel=3,
        )
        return ["train"] * len(records)
    # pixel boxes (x0, -y0-h, x0+w, -y0): touching in pixels is touching on the ground
    boxes = [(r["x0"], -r["y0"] - r["height"], r["x0"] + r["width"], -r["y0"])
             for r in records]
    return assign_units(blocks, touching_pairs(boxes, 0.5), val_fraction, seed)
