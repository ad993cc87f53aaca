"""Dataset layouts: find image/label pairs (ChipRecord), read mask values, name the classes, split.

Training data comes as users have it: ``images/`` + ``masks/`` with identical names (what
``geounet chips`` writes), masks next to the images (``NAME.tif`` + ``NAME.mask.tif``,
``NAME_mask.tif``, ``NAME-label.tif``, ``NAME_gt.tif``...), sibling folders (``img/`` + ``gt/``,
``images/`` + ``labels/``, ``*/`` + ``binarymasks/``...), a mask-name pattern
(``{stem}.mask.tif``), per-chip vector labels (``NAME.geojson``/``NAME.gpkg``) or one vector
labels file for all chips. :func:`open_dataset` detects the layout, logs the rule it used, reads
the mask values (0/1, 0/255 or class indices), names the classes and splits the chips.
"""

from __future__ import annotations

import csv
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from geounet.errors import InputError, LabelError
from geounet.raster.labels import VECTOR_SUFFIXES
from geounet.training.chips import NODATA, SPLIT_FILE
from geounet.training.coding import label_coding, read_meta_classes, tag_classes, vector_classes
from geounet.training.pairing import (
    TRAIN_DIRS,
    VAL_DIRS,
    Found,
    discover,
    vector_partners,
)
from geounet.training.record import ChipRecord, read_target

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetConfig:
    """How to read a training dataset (CLI option names match the fields).

    Attributes
    ----------
    mask_pattern : mask path from the image's, relative to the image's folder, with
        ``{stem}`` (image name without suffix), e.g. ``"{stem}.mask.tif"`` or
        ``"../gt/{stem}.tif"``; None detects the layout.
    mask_values : the mask value of each class in class order, e.g. ``(0, 255)``; None
        detects 0/1, 0/255 or class indices.
    classes : class names; ``background`` is prepended when missing (``("buildings",)`` means
        ``background, buildings``); None: ``chips.json``, mask tags, else detected.
    labels : one vector labels file for all chips (burnt onto each chip's grid).
    line_width : metres; buffer width of line labels without a ``width`` attribute.
    split_block : chips per block side of the spatial split.
    """

    mask_pattern: str | None = None
    mask_values: tuple[int, ...] | None = None
    classes: tuple[str, ...] | None = None
    labels: str | None = None
    line_width: float | None = None
    split_block: int = 4

    def __post_init__(self) -> None:
        if self.mask_pattern is not None and "{stem}" not in self.mask_pattern:
            raise InputError(
                f"mask pattern {self.mask_pattern!r} has no {{stem}}; write the mask name "
                "from the image name, e.g. --mask-pattern '{stem}.mask.tif'."
            )
        if self.mask_values is not None:
            values = tuple(int(v) for v in self.mask_values)
            if len(values) < 2 or len(set(values)) != len(values):
                raise InputError(
                    f"mask values {list(values)} must be two or more distinct values, one per "
                    "class in class order; e.g. --mask-values 0,255."
                )
            object.__setattr__(self, "mask_values", values)
        if self.classes is not None:
            names = tuple(str(c).strip() for c in self.classes)
            if not names or any(not n for n in names) or len(set(names)) != len(names):
                raise InputError(
                    f"classes {list(self.classes)} must be distinct non-empty names; e.g. "
                    "--classes background,buildings."
                )
            if "background" in names and names[0] != "background":
                raise InputError(
                    f"classes {list(names)}: 'background' must come first (class 0); e.g. "
                    "--classes background,buildings."
                )
            if names[0] != "background":
                names = ("background", *names)
            if len(names) < 2:
                raise InputError("classes name only 'background'; add the foreground class, "
                                 "e.g. --classes background,buildings.")
            object.__setattr__(self, "classes", names)
            if self.mask_values is not None and len(self.mask_values) != len(names):
                raise InputError(
                    f"{len(self.mask_values)} mask values {list(self.mask_values)} for "
                    f"{len(names)} classes {list(names)}; give one value per class."
                )
        if self.split_block < 1:
            raise InputError(f"split_block {self.split_block} must be >= 1; e.g. 4.")


@dataclass(frozen=True)
class Dataset:
    """What :func:`open_dataset` found.

    Attributes
    ----------
    root : the dataset folder.
    records : chip pairs used (train and val; buffer chips left out).
    classes : class names, ``background`` first.
    pairing : the pairing rule used, in words.
    mask_rule : how label values became classes, in words.
    split_rule : how the split was made, in words.
    unpaired : files that found no partner.
    n_buffer : chips left out because they touch a validation chip.
    buffer : those chips (split ``buffer``; used only by a final refit on every chip).
    """

    root: Path
    records: tuple[ChipRecord, ...]
    classes: tuple[str, ...]
    pairing: str
    mask_rule: str
    split_rule: str
    unpaired: tuple[Path, ...] = field(default=())
    n_buffer: int = 0
    buffer: tuple[ChipRecord, ...] = field(default=())
    instance_rule: str = ""

    def describe(self) -> str:
        """A few lines for the log: pairs, rule, classes, split (and the building instances
        when vector labels beside raster masks give them)."""
        n_val = sum(r.split == "val" for r in self.records)
        instances = f"; building instances: {self.instance_rule}" if self.instance_rule else ""
        return (f"dataset {str(self.root)!r}: {len(self.records) + self.n_buffer} pairs "
                f"({self.pairing}); labels: {self.mask_rule}; classes "
                f"{','.join(self.classes)}{instances}; split: {len(self.records) - n_val} "
                f"train, {n_val} val, {self.n_buffer} buffer ({self.split_rule})")


def open_dataset(
    root: str | os.PathLike[str],
    config: DatasetConfig | None = None,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> Dataset:
    """Find the labelled chips of ``root`` and how to read them; log the rules used.

    Pairing: ``config.mask_pattern`` if given; else the layout with the most pairs among
    labels next to the images and sibling folders (``images/``, ``img/``, ... with ``masks/``,
    ``gt/``, ``labels/``, ``binarymasks/``, ...), names matched as identical or with a known
    suffix (``.mask``, ``_mask``, ``-label``, ``_gt``, ...); a label file is never also an image.
    ``train/`` and ``val/`` subfolders are read the same way and give the split. Unpaired files
    are logged (first few + count); nothing paired is an error.

    Mask values (raster masks): 0/1 and 0/255 are binary, 0..N-1 class indices (255 nodata);
    ``config.mask_values`` overrides. Classes: ``config.classes``, else ``chips.json``, else
    the masks' ``classes`` tag, else ``background,buildings`` for binary masks and
    ``background,buildings,roads`` for unnamed 0..2 indices; anything else is an error naming
    ``--mask-values`` and ``--classes``.

    Split: ``split.csv``, else the subfolders, else spatial (:mod:`geounet.training.split`)
    when every image has a CRS, else random.

    Parameters
    ----------
    root : the dataset folder.
    config : :class:`DatasetConfig`.
    val_fraction : validation share when the dataset has no split.
    seed : seed of the split.

    Returns
    -------
    Dataset

    Raises
    ------
    LabelError : no pairs, unreadable or ambiguous masks, a bad split file.

    Examples
    --------
    >>> ds = open_dataset("buildings/", DatasetConfig(classes=("buildings",)))  # doctest: +SKIP
    >>> ds.classes
    ('background', 'buildings')
    """
    config = config or DatasetConfig()
    root = Path(root)
    _check_inputs(root, config)
    found, from_subdirs = _find_pairs(root, config)
    shared = Path(config.labels) if config.labels is not None else None
    records, unpaired = _pair_records(found, config, shared)
    records, unpaired, instance_rule = _instance_labels(root, records, unpaired)
    pairing = "; ".join(sorted({f"{s + '/: ' if s else ''}{f.rule}" for f, s in found
                                if f.pairs}))
    _check_pairs(root, records, unpaired, pairing)
    if from_subdirs:
        _warn_shared_names(root, records)
    coding, classes, mask_rule = _classes(root, records, config, shared)
    records = [replace(r, mask_values=coding, classes=classes) for r in records]
    records, split_rule, buffer = _split(root, records, found[0][1] is not None or (
        len(found) > 1), config, val_fraction, seed)
    dataset = Dataset(root, tuple(records), tuple(classes), pairing, mask_rule, split_rule,
                      tuple(unpaired), len(buffer), tuple(buffer), instance_rule)
    log.info("%s", dataset.describe())
    if not any(r.split == "train" for r in records):
        raise LabelError(
            f"no training chips in {str(root)!r}: all {len(records)} are validation chips; "
            "put some under train/ (or mark them train in split.csv)."
        )
    return dataset


def _check_inputs(root: Path, config: DatasetConfig) -> None:
    """The chips folder and the shared labels file (when given) exist."""
    if not root.is_dir():
        raise LabelError(f"chips directory {str(root)!r} does not exist; give a folder of "
                         "images and masks (or run geounet chips).")
    if config.labels is not None and not Path(config.labels).is_file():
        raise LabelError(f"labels file {config.labels!r} does not exist; give a GeoJSON or "
                         "GeoPackage with the labels of all chips.")


def _find_pairs(root: Path, config: DatasetConfig
                ) -> tuple[list[tuple[Found, str | None]], bool]:
    """The pairs of the root, else of its train/ and val/ folders (with their split); and
    whether they came from those folders."""
    subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    split_dirs = [(subdirs[n], "train") for n in TRAIN_DIRS if n in subdirs] + [
        (subdirs[n], "val") for n in VAL_DIRS if n in subdirs]
    root_found = discover(root, config)
    found: list[tuple[Found, str | None]] = []
    if split_dirs and not root_found.pairs:
        found = [(discover(folder, config), split) for folder, split in split_dirs]
    else:
        found = [(root_found, None)]
    return found, bool(split_dirs) and found[0][0] is not root_found


def _pair_records(found: list[tuple[Found, str | None]], config: DatasetConfig,
                  shared: Path | None) -> tuple[list[ChipRecord], list[Path]]:
    """One record per pair (sorted by name within a folder) and the unpaired files."""
    records: list[ChipRecord] = []
    unpaired: list[Path] = []
    for item, split in found:
        unpaired.extend(item.unpaired)
        for name, (image, mask) in sorted(item.pairs.items()):
            records.append(ChipRecord(name, image, mask, split or "train",
                                      labels=shared, line_width=config.line_width))
    return records, unpaired


def _instance_labels(root: Path, records: list[ChipRecord], unpaired: list[Path]
                     ) -> tuple[list[ChipRecord], list[Path], str]:
    """Records whose raster masks have per-chip vector labels beside them get those as
    ``instances`` (:func:`~geounet.training.pairing.vector_partners`); the vector files are
    then no longer unpaired. Also the rule in words (empty when no chip has them)."""
    rasters = [r.image for r in records
               if r.mask is not None and r.mask.suffix.lower() not in VECTOR_SUFFIXES]
    partners = vector_partners(rasters, root)
    if not partners:
        return records, unpaired, ""
    used = {p.resolve() for p in partners.values()}
    records = [replace(r, instances=partners.get(r.image)) for r in records]
    unpaired = [p for p in unpaired if p.resolve() not in used]
    first = next(iter(partners.values()))
    where = first.parent.relative_to(root.resolve()) if first.parent != root.resolve() else None
    example = f"{where}/{first.name}" if where else first.name
    return records, unpaired, (
        f"polygons of the per-chip vector labels beside the masks for {len(partners)} of "
        f"{len(rasters)} chips (e.g. {example}); the masks give the classes")


def _check_pairs(root: Path, records: list[ChipRecord], unpaired: list[Path],
                 pairing: str) -> None:
    """Warn about unpaired files; no pair at all is an error naming the expected layouts."""
    if unpaired:
        shown = ", ".join(str(p.relative_to(root)) for p in unpaired[:5])
        more = f" and {len(unpaired) - 5} more" if len(unpaired) > 5 else ""
        message = f"{len(unpaired)} file(s) without a partner, left out: {shown}{more}"
        if records:
            warnings.warn(message + f" (pairing rule: {pairing}).", stacklevel=3)
    if not records:
        raise LabelError(
            f"no chip pairs (image + labels) in {str(root)!r}"
            + (f" ({len(unpaired)} unpaired file(s), e.g. "
               f"{', '.join(str(p.relative_to(root)) for p in unpaired[:3])})" if unpaired
               else "")
            + "; expected images with masks of the same name (images/ + masks/, img/ + gt/, "
            "...), masks next to them (NAME.tif + NAME.mask.tif, NAME_mask.tif, ...), per-chip "
            "GeoJSON, or --labels FILE; give --mask-pattern '{stem}.mask.tif' for other names."
        )


def _warn_shared_names(root: Path, records: list[ChipRecord]) -> None:
    """Warn when a chip name is in both train/ and val/ (perhaps the same chip twice)."""
    both = sorted({r.name for r in records if r.split == "train"}
                  & {r.name for r in records if r.split == "val"})
    if both:
        warnings.warn(
            f"{len(both)} chip name(s) are in both train/ and val/ of {str(root)!r}, "
            f"e.g. {both[0]!r}; if they are the same chip, validation scores are inflated.",
            stacklevel=3,
        )


def _classes(root: Path, records: list[ChipRecord], config: DatasetConfig,
             shared: Path | None) -> tuple[tuple[int, ...] | None, tuple[str, ...], str]:
    """Mask value per class (None: class indices), class names, and the rule in words."""
    named = config.classes or read_meta_classes(root) or tag_classes(records)
    if all(r.mask is None or r.mask.suffix.lower() in VECTOR_SUFFIXES for r in records):
        classes = named or vector_classes(records, shared)
        return None, classes, "vector labels burnt on each chip's grid"
    return label_coding(records, config, named)


def _split(root: Path, records: list[ChipRecord], from_folders: bool, config: DatasetConfig,
           val_fraction: float, seed: int
           ) -> tuple[list[ChipRecord], str, list[ChipRecord]]:
    """Split the records: by folders, ``split.csv``, spatially, or at random (in that order);
    returns the train/val records, the rule in words and the buffer records."""
    from geounet.training.split import random_split, spatial_split

    if from_folders:
        return records, "train/ and val/ folders", []
    split_file = root / SPLIT_FILE
    if split_file.exists():
        with open(split_file, newline="") as fh:
            table = {row["name"]: row["split"] for row in csv.DictReader(fh)}
        missing = sorted({r.name for r in records} - set(table))
        if missing:
            raise LabelError(
                f"{SPLIT_FILE} in {str(root)!r} does not list {len(missing)} chip(s), "
                f"e.g. {missing[0]!r}; regenerate it with geounet chips or delete it."
            )
        bad = sorted(set(table.values()) - {"train", "val", "buffer"})
        if bad:
            raise LabelError(f"{SPLIT_FILE} has split values {bad}; use train, val or buffer.")
        split = [table[r.name] for r in records]
        rule = SPLIT_FILE
    elif (bounds := _bounds(records)) is None:
        split = random_split(len(records), val_fraction=val_fraction, seed=seed)
        rule = f"random {val_fraction:g} (chips without georeferencing)"
    else:
        boxes, tolerance = bounds
        split = spatial_split(boxes, val_fraction=val_fraction, seed=seed,
                              split_block=config.split_block, tolerance=tolerance)
        rule = (f"spatial {val_fraction:g}: blocks of up to {config.split_block}x"
                f"{config.split_block} touching chips; train chips touching val are buffer")
    kept = [replace(r, split=s) for r, s in zip(records, split) if s != "buffer"]
    buffer = [replace(r, split=s) for r, s in zip(records, split) if s == "buffer"]
    return kept, rule, buffer


def _bounds(records: Sequence[ChipRecord]) -> tuple[list[tuple[float, ...]], float] | None:
    """Chip boxes in the first chip's CRS and half the smallest pixel, or None if any chip
    lacks georeferencing."""
    import rasterio
    from rasterio.warp import transform_bounds

    boxes: list[tuple[float, ...]] = []
    half_pixel = np.inf
    crs = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        for rec in records:
            with rasterio.open(rec.image) as src:
                if src.crs is None or src.transform.is_identity:
                    return None
                crs = crs or src.crs
                b = tuple(src.bounds)
                if src.crs != crs:
                    b = transform_bounds(src.crs, crs, *b)
                    half_pixel = min(half_pixel, 0.5 * (b[2] - b[0]) / src.width)
                else:
                    half_pixel = min(half_pixel, 0.5 * abs(src.res[0]), 0.5 * abs(src.res[1]))
                boxes.append(b)
    return boxes, float(half_pixel)


def _copy_as_geotiff(image: Path, target: Path) -> None:
    """Copy a chip image as GeoTIFF: a GeoTIFF byte for byte, a PNG/JPEG/JPEG 2000 (with its
    world-file georeferencing, if any) rewritten, pixels unchanged."""
    import shutil

    import rasterio

    if image.suffix.lower() in (".tif", ".tiff"):
        shutil.copyfile(image, target)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(image) as src:
            profile = {"driver": "GTiff", "height": src.height, "width": src.width,
                       "count": src.count, "dtype": src.dtypes[0], "compress": "deflate"}
            if src.crs is not None:
                profile.update(crs=src.crs, transform=src.transform)
            if src.nodata is not None:
                profile["nodata"] = src.nodata
            with rasterio.open(target, "w", **profile) as dst:
                dst.write(src.read())


def export_chips(
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: DatasetConfig | None = None,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    overwrite: bool = False,
) -> Dataset:
    """Rewrite a dataset in any layout as a ``geounet chips`` directory.

    ``out_dir`` gets ``images/NAME.tif`` (copies), ``masks/NAME.tif`` (uint8 class indices,
    255 nodata, on the image's grid, tag ``classes``), ``split.csv`` and ``chips.json``, so
    the pairing, mask values, classes and split are fixed once and can be inspected. Buffer
    chips (touching a validation chip) are left out. Written atomically.

    Parameters
    ----------
    root : the dataset folder (see :func:`open_dataset`).
    out_dir : the chips directory to write.
    config, val_fraction, seed : as :func:`open_dataset`.
    overwrite : replace an existing non-empty ``out_dir``.

    Returns
    -------
    Dataset : as read from ``root``.

    Examples
    --------
    >>> export_chips("buildings/", "chips/")  # doctest: +SKIP
    """
    import shutil
    import tempfile

    import rasterio

    from geounet.training.chips import check_chips_out, publish_chips_dir

    out_dir = Path(out_dir)
    check_chips_out(out_dir, overwrite, root, *([config.labels] if config and config.labels
                                                 else []))
    dataset = open_dataset(root, config, val_fraction=val_fraction, seed=seed)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        rows = []
        for rec in dataset.records:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                with rasterio.open(rec.image) as img:
                    mask = read_target(rec, img)
                    profile = {"driver": "GTiff", "height": img.height, "width": img.width,
                               "count": 1, "dtype": "uint8", "nodata": NODATA,
                               "compress": "deflate"}
                    if img.crs is not None:
                        profile.update(crs=img.crs, transform=img.transform)
            _copy_as_geotiff(rec.image, tmp / "images" / f"{rec.name}.tif")
            with rasterio.open(tmp / "masks" / f"{rec.name}.tif", "w", **profile) as dst:
                dst.write(mask, 1)
                dst.update_tags(classes=",".join(dataset.classes))
            valid = mask != NODATA
            rows.append({"name": rec.name, "split": rec.split, "height": mask.shape[0],
                         "width": mask.shape[1],
                         "labelled_fraction": round(float((mask[valid] > 0).mean())
                                                    if valid.any() else 0.0, 6),
                         "nodata_fraction": round(1.0 - float(valid.mean()), 6)})
        meta = {"classes": list(dataset.classes), "source": Path(root).name,
                "pairing": dataset.pairing, "labels": dataset.mask_rule,
                "split": dataset.split_rule, "n_buffer": dataset.n_buffer,
                "val_fraction": val_fraction, "seed": seed}
        publish_chips_dir(tmp, out_dir, rows, meta)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote %d chips to %s", len(dataset.records), out_dir)
    return dataset
