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
import json
import logging
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from geounet.errors import InputError, LabelError
from geounet.labels import VECTOR_SUFFIXES
from geounet.training.chips import CHIPS_META, NODATA, SPLIT_FILE

log = logging.getLogger(__name__)

RASTER_SUFFIXES = (".tif", ".tiff")
MASK_SUFFIXES = (
    ".mask", "_mask", "-mask", "_masks", "-masks", ".masks", "_label", "_labels", "-label",
    "-labels", ".label", ".labels", "_gt", "-gt", ".gt", "_seg", "-seg", "_segmentation",
    "_annotation", "_annotations", "_target", "_truth", "_buildings", "_footprints",
)
"""Name endings that mark a label file next to (or apart from) its image, tried in order."""
IMAGE_SUFFIXES = ("", "_sat", "_img", "_image", "-image", "_rgb", "_ortho", "_tile")
"""Name endings of images (DeepGlobe: ``NAME_sat.tif`` + ``NAME_mask.tif``)."""
IMAGE_DIRS = ("images", "image", "imgs", "img", "rgb", "sat", "tiles", "ortho", "x")
MASK_DIRS = (
    "masks", "mask", "gt", "labels", "label", "binarymasks", "binary_masks", "annotations",
    "annotation", "targets", "target", "segmentations", "truth", "vectors", "geojson", "y",
)
TRAIN_DIRS = ("train", "training")
VAL_DIRS = ("val", "valid", "validation")
DEFAULT_FOREGROUND = "buildings"
"""Foreground class name of binary masks when ``classes`` does not name it."""
LEGACY_CLASSES = ("background", "buildings", "roads")
"""Class names of unnamed class-index masks with values 0..2 (the synth/chips default)."""


@dataclass(frozen=True)
class ChipRecord:
    """One image and its labels, and the split it belongs to (``train`` or ``val``).

    Attributes
    ----------
    name : chip name (the image's stem).
    image : the image GeoTIFF.
    mask : a raster mask (same size as the image), a per-chip vector label file, or None
        when ``labels`` holds the labels of every chip.
    split : ``train`` or ``val``.
    mask_values : raw mask value of each class in class order (e.g. ``(0, 255)``); None when
        the mask holds class indices (255 nodata).
    classes : class names (needed to burn vector labels).
    labels : one vector labels file for all chips.
    line_width : metres; width of line labels without a ``width`` attribute.
    """

    name: str
    image: Path
    mask: Path | None
    split: str
    mask_values: tuple[int, ...] | None = None
    classes: tuple[str, ...] = ()
    labels: Path | None = None
    line_width: float | None = None


def decode_mask(raw: np.ndarray, mask_values: Sequence[int] | None,
                nodata: float | None = None) -> np.ndarray:
    """Raw mask values -> uint8 class indices (255 nodata).

    With ``mask_values`` the value ``mask_values[i]`` becomes class ``i`` and every other value
    255; without, the mask already holds class indices. A declared ``nodata`` (other than 0,
    which is always background) becomes 255.

    Examples
    --------
    >>> decode_mask(np.array([[0, 255]], np.uint8), (0, 255)).tolist()
    [[0, 1]]
    """
    if mask_values is None:
        out = np.where((raw >= 0) & (raw <= NODATA), raw, NODATA).astype(np.uint8)
    else:
        out = np.full(raw.shape, NODATA, dtype=np.uint8)
        for index, value in enumerate(mask_values):
            out[raw == value] = index
    if nodata is not None and nodata != 0 and (mask_values is None or nodata not in
                                                mask_values):
        out[raw == nodata] = NODATA
    return out


def read_target(rec: ChipRecord, img: Any, window: Any = None) -> np.ndarray:
    """The class mask (uint8, 255 nodata) of ``rec`` over ``window`` of its open image ``img``.

    Raster masks are read and decoded (:func:`decode_mask`); vector labels are burnt onto the
    image's grid (:func:`geounet.labels.rasterize_file`), so masks without georeferencing and
    labels in any CRS line up with the image.
    """
    import rasterio
    from rasterio.windows import Window

    from geounet.labels import VECTOR_SUFFIXES, rasterize_file

    if window is None:
        window = Window(0, 0, img.width, img.height)
    if rec.mask is None or rec.mask.suffix.lower() in VECTOR_SUFFIXES:
        source = rec.mask if rec.mask is not None else rec.labels
        if source is None:
            raise LabelError(f"chip {rec.name!r} has no labels; give a mask or a labels file.")
        return rasterize_file(source, img.crs, img.window_transform(window),
                              int(window.height), int(window.width), rec.classes,
                              line_width=rec.line_width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(rec.mask) as msk:
            if (msk.height, msk.width) != (img.height, img.width):
                raise LabelError(
                    f"chip {rec.name!r}: image is {img.height}x{img.width} px but its mask is "
                    f"{msk.height}x{msk.width}; image and mask must be the same size."
                )
            return decode_mask(msk.read(1, window=window), rec.mask_values, msk.nodata)


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
    """

    root: Path
    records: tuple[ChipRecord, ...]
    classes: tuple[str, ...]
    pairing: str
    mask_rule: str
    split_rule: str
    unpaired: tuple[Path, ...] = field(default=())
    n_buffer: int = 0

    def describe(self) -> str:
        """A few lines for the log: pairs, rule, classes, split."""
        n_val = sum(r.split == "val" for r in self.records)
        return (f"dataset {str(self.root)!r}: {len(self.records) + self.n_buffer} pairs "
                f"({self.pairing}); labels: {self.mask_rule}; classes "
                f"{','.join(self.classes)}; split: {len(self.records) - n_val} train, {n_val} "
                f"val, {self.n_buffer} buffer ({self.split_rule})")


@dataclass(frozen=True)
class _Found:
    pairs: dict[str, tuple[Path, Path | None]]
    rule: str
    unpaired: tuple[Path, ...]


def _files(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith(".")
                  and p.name != CHIPS_META)


def _strip(stem: str, suffix: str) -> str | None:
    if not suffix:
        return stem
    if stem.lower().endswith(suffix) and len(stem) > len(suffix):
        return stem[: -len(suffix)]
    return None


def _match(images: list[Path], labels: list[Path], same_dir: bool
           ) -> tuple[int, str, str, dict[str, tuple[Path, Path]]]:
    """Best (image suffix, label suffix) rule: the most pairs, earlier suffixes on ties."""
    best: tuple[int, str, str, dict[str, tuple[Path, Path]]] = (0, "", "", {})
    for lsuf in ("", *MASK_SUFFIXES):
        by_key: dict[str, Path] = {}
        for p in labels:
            if same_dir and not lsuf and p.suffix.lower() not in VECTOR_SUFFIXES:
                continue  # beside the images, a raster with the same stem is the image
            key = _strip(p.stem, lsuf)
            if key is not None and (key not in by_key or p.suffix.lower() in RASTER_SUFFIXES):
                by_key[key] = p
        if not by_key:
            continue
        taken = set(by_key.values()) if same_dir else set()
        for isuf in IMAGE_SUFFIXES:
            pairs: dict[str, tuple[Path, Path]] = {}
            for p in images:
                if p in taken:
                    continue
                key = _strip(p.stem, isuf)
                if key is not None and key in by_key:
                    pairs[p.stem] = (p, by_key[key])
            if len(pairs) > best[0]:
                best = (len(pairs), isuf, lsuf, pairs)
    return best


def _describe(img_dir: Path, lab_dir: Path, isuf: str, lsuf: str, labels: Iterable[Path],
              root: Path) -> str:
    ext = sorted({p.suffix for p in labels}) or [".tif"]
    kind = "vector labels" if all(e.lower() in VECTOR_SUFFIXES for e in ext) else "masks"
    rel_i = "" if img_dir == root else f"{img_dir.relative_to(root)}/"
    rel_l = "" if lab_dir == root else f"{lab_dir.relative_to(root)}/"
    where = "next to the images" if img_dir == lab_dir else "in a sibling folder"
    return (f"{kind} {where}: {rel_i}NAME{isuf}.tif + {rel_l}NAME{lsuf}{ext[0]}")


def _discover(folder: Path, config: DatasetConfig) -> _Found:
    """Pairs of one folder (a dataset root, or its train/ or val/)."""
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    names = {p.name.lower(): p for p in subdirs}
    image_dirs = [names[n] for n in IMAGE_DIRS if n in names]
    label_dirs = [names[n] for n in MASK_DIRS if n in names]
    if not image_dirs:  # `*/` + `binarymasks/`: any other folder holding rasters
        image_dirs = [p for p in subdirs if p not in label_dirs and _files(p, RASTER_SUFFIXES)]
    candidates = [(folder, folder)] + [(i, m) for i in image_dirs for m in label_dirs]
    if config.labels is not None:  # one labels file for all chips: every raster is an image
        shared = Path(config.labels)
        for img_dir in [d for d in [*image_dirs, folder] if _files(d, RASTER_SUFFIXES)][:1]:
            images = [p for p in _files(img_dir, RASTER_SUFFIXES)
                      if not any(_strip(p.stem, s) for s in MASK_SUFFIXES)]
            return _Found({p.stem: (p, None) for p in images},
                          f"one labels file for all chips: {shared.name}", ())
        return _Found({}, "one labels file for all chips", ())
    if config.mask_pattern is not None:
        best: _Found | None = None
        for img_dir in [folder, *image_dirs]:
            images = _files(img_dir, RASTER_SUFFIXES)
            masks = {p: img_dir / config.mask_pattern.format(stem=p.stem) for p in images}
            taken = {m.resolve() for m in masks.values() if m.exists()}
            pairs = {p.stem: (p, m) for p, m in masks.items()
                     if m.exists() and p.resolve() not in taken}
            unpaired = tuple(p for p, m in masks.items()
                             if not m.exists() and p.resolve() not in taken)
            if best is None or len(pairs) > len(best.pairs):
                where = img_dir.relative_to(folder) if img_dir != folder else "."
                best = _Found(pairs, f"--mask-pattern {config.mask_pattern!r} from {where}/",
                              unpaired)
        return best if best is not None else _Found({}, "", ())
    seen = {p for d in {d for pair in candidates for d in pair}
            for p in _files(d, RASTER_SUFFIXES + VECTOR_SUFFIXES)}
    best_found = _Found({}, "", tuple(sorted(seen)))
    best_key = (0, 0)
    for rank, (img_dir, lab_dir) in enumerate(candidates):
        images = _files(img_dir, RASTER_SUFFIXES)
        labels = _files(lab_dir, RASTER_SUFFIXES + VECTOR_SUFFIXES)
        n, isuf, lsuf, pairs = _match(images, labels, img_dir == lab_dir)
        if n == 0 or (n, -rank) <= best_key:
            continue
        used = {p for pair in pairs.values() for p in pair}
        rule = _describe(img_dir, lab_dir, isuf, lsuf, [m for _, m in pairs.values()], folder)
        best_found = _Found(pairs, rule, tuple(sorted((set(images) | set(labels)) - used)))
        best_key = (n, -rank)
    return best_found


def _scan_masks(records: Sequence[ChipRecord]) -> tuple[set[int], set[float], bool, bool]:
    """Distinct values, declared nodata values, whether any value is not a whole number, and
    whether some masks hold 1 and others 255 but none both (0/1 and 0/255 masks mixed)."""
    import rasterio

    values: set[int] = set()
    nodata: set[float] = set()
    fractional = False
    with_one = with_255 = with_both = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        for rec in records:
            if rec.mask is None or rec.mask.suffix.lower() in VECTOR_SUFFIXES:
                continue
            try:
                with rasterio.open(rec.mask) as src:
                    data = src.read(1)
                    if src.nodata is not None:
                        nodata.add(float(src.nodata))
            except rasterio.errors.RasterioIOError as exc:
                raise LabelError(f"mask {str(rec.mask)!r} cannot be read ({exc}); replace it "
                                 "or remove the pair.") from exc
            found = np.unique(data)
            if found.dtype.kind == "f":
                found = found[np.isfinite(found)]
                if (found != np.round(found)).any():
                    fractional = True
            values.update(int(v) for v in found)
            one, full = bool((found == 1).any()), bool((found == 255).any())
            with_one, with_255, with_both = (with_one or one, with_255 or full,
                                             with_both or (one and full))
    return values, nodata, fractional, with_one and with_255 and not with_both


def _mask_values_error(values: Sequence[int], why: str,
                       example: Sequence[int] | None = None) -> LabelError:
    example = list(example if example is not None else values)[:4]
    shown = ",".join(str(v) for v in list(values)[:8]) + (",..." if len(values) > 8 else "")
    return LabelError(
        f"mask values {{{shown}}} {why}; the rule: 0/1 and 0/255 masks are binary "
        "(background + one class), 0..N-1 are class indices named by --classes, 255 is "
        "nodata otherwise. Say what the values mean with --mask-values (one value per class "
        f"in class order, e.g. --mask-values {','.join(str(v) for v in example)}) "
        "and --classes."
    )


def _read_meta_classes(root: Path) -> tuple[str, ...] | None:
    meta = root / CHIPS_META
    if meta.exists():
        try:
            classes = json.loads(meta.read_text()).get("classes")
        except (OSError, ValueError) as exc:
            raise LabelError(f"{CHIPS_META} in {str(root)!r} is not JSON ({exc}); fix or delete "
                             "it.") from exc
        if classes:
            return tuple(str(c) for c in classes)
    return None


def _tag_classes(records: Sequence[ChipRecord]) -> tuple[str, ...] | None:
    import rasterio

    for rec in records[:1]:
        if rec.mask is not None and rec.mask.suffix.lower() in RASTER_SUFFIXES:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                with rasterio.open(rec.mask) as src:
                    tag = src.tags().get("classes")
            if tag:
                return tuple(tag.split(","))
    return None


def _vector_classes(records: Sequence[ChipRecord], shared: Path | None) -> tuple[str, ...]:
    import pyogrio

    source = shared or next((r.mask for r in records if r.mask is not None), None)
    if source is not None:
        try:
            layers = {str(row[0]) for row in pyogrio.list_layers(source)}
        except Exception:  # unreadable: load_class_shapes reports it with the fix
            layers = set()
        known = [c for c in LEGACY_CLASSES[1:] if c in layers]
        if known:
            return ("background", *known)
    return ("background", DEFAULT_FOREGROUND)


def _label_coding(records: Sequence[ChipRecord], config: DatasetConfig,
                  named: tuple[str, ...] | None) -> tuple[tuple[int, ...] | None,
                                                          tuple[str, ...], str]:
    """(mask value per class or None for class indices, classes, rule in words)."""
    values, declared, fractional, mixed = _scan_masks(records)
    if fractional:
        raise _mask_values_error(sorted(values), "include fractions (a probability map?)")
    if mixed and config.mask_values is None and not declared - {0.0} and set(values) <= {
            0, 1, 255}:
        raise _mask_values_error(sorted(values), "mix 0/1 masks and 0/255 masks (no mask "
                                                 "holds both 1 and 255)", (0, 1))
    if config.mask_values is not None:
        coding = config.mask_values
        classes = named or ("background", *([DEFAULT_FOREGROUND] if len(coding) == 2 else
                                            [f"class_{i}" for i in range(1, len(coding))]))
        if len(classes) != len(coding):
            raise InputError(f"{len(coding)} mask values {list(coding)} for {len(classes)} "
                             f"classes {list(classes)}; give one value per class.")
        nodata = {int(v) for v in declared if v != 0 and math.isfinite(v)} or (
            {NODATA} - set(coding))
        extra = sorted(values - set(coding) - nodata)
        if extra:
            raise _mask_values_error(extra, f"are not in --mask-values {list(coding)} nor "
                                            "nodata; list every class value", sorted(values))
        rule = f"--mask-values {','.join(map(str, coding))}"
        return (None if coding == tuple(range(len(coding))) else coding), classes, rule
    nodata = {int(v) for v in declared  # 0 is always background; NaN marks no value
              if v != 0 and math.isfinite(v)}
    data = values - nodata
    if (named is not None and len(named) != 2 and config.mask_values is None
            and data <= {0, 255} and 255 in data):
        raise _mask_values_error(
            sorted(values), f"hold only 0 and 255 but {len(named)} classes {list(named)} are "
            "named: 255 is either the one foreground class of a 0/255 mask or nodata of a "
            "class-index mask; say which")
    if named is None and data <= {0} and values & nodata:
        raise _mask_values_error(sorted(values), f"are only background 0 and the masks' "
                                                 f"declared nodata {sorted(nodata)}, so no "
                                                 "class has a pixel; if that value marks the class")
    if data <= {0, 1}:
        coding, n, rule = None, 2, "0/1 masks"
    elif data <= {0, 255}:
        coding, n, rule = (0, 255), 2, "0/255 masks (255 = foreground)"
    elif max(data - {NODATA}) < 255 and min(data) >= 0:
        data = data - {NODATA}
        coding, n, rule = None, max(data) + 1, "class-index masks (255 = nodata)"
    else:
        raise _mask_values_error(sorted(values), "are not 0/1, 0/255 nor class indices "
                                                 "0..254")
    if not values:
        rule = "no raster masks"
    if named is not None:
        if coding is None and n > len(named):
            raise LabelError(
                f"masks hold class {n - 1} but the model has {len(named)} classes "
                f"{list(named)} (0..{len(named) - 1}, 255 nodata); fix the masks or give the "
                "class names that match them (--classes, or chips.json)."
            )
        source = "--classes" if config.classes else "the chips"
        return coding, named, rule + f"; classes named by {source}"
    if n == 2:
        return coding, ("background", DEFAULT_FOREGROUND), rule + (
            f"; binary: background,{DEFAULT_FOREGROUND} (name the foreground with --classes)")
    raise _mask_values_error(sorted(values), f"look like {n} class indices but no class names "
                                             "are given")


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
    if not root.is_dir():
        raise LabelError(f"chips directory {str(root)!r} does not exist; give a folder of "
                         "images and masks (or run geounet chips).")
    if config.labels is not None and not Path(config.labels).is_file():
        raise LabelError(f"labels file {config.labels!r} does not exist; give a GeoJSON or "
                         "GeoPackage with the labels of all chips.")
    subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    split_dirs = [(subdirs[n], "train") for n in TRAIN_DIRS if n in subdirs] + [
        (subdirs[n], "val") for n in VAL_DIRS if n in subdirs]
    root_found = _discover(root, config)
    found: list[tuple[_Found, str | None]] = []
    if split_dirs and not root_found.pairs:
        found = [(_discover(folder, config), split) for folder, split in split_dirs]
    else:
        found = [(root_found, None)]
    shared = Path(config.labels) if config.labels is not None else None
    records: list[ChipRecord] = []
    unpaired: list[Path] = []
    for item, split in found:
        unpaired.extend(item.unpaired)
        for name, (image, mask) in sorted(item.pairs.items()):
            records.append(ChipRecord(name, image, mask, split or "train",
                                      labels=shared, line_width=config.line_width))
    pairing = "; ".join(sorted({f"{s + '/: ' if s else ''}{f.rule}" for f, s in found
                                if f.pairs}))
    if unpaired:
        shown = ", ".join(str(p.relative_to(root)) for p in unpaired[:5])
        more = f" and {len(unpaired) - 5} more" if len(unpaired) > 5 else ""
        message = f"{len(unpaired)} file(s) without a partner, left out: {shown}{more}"
        if records:
            warnings.warn(message + f" (pairing rule: {pairing}).", stacklevel=2)
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
    if split_dirs and found[0][0] is not root_found:
        both = sorted({r.name for r in records if r.split == "train"}
                      & {r.name for r in records if r.split == "val"})
        if both:
            warnings.warn(
                f"{len(both)} chip name(s) are in both train/ and val/ of {str(root)!r}, "
                f"e.g. {both[0]!r}; if they are the same chip, validation scores are inflated.",
                stacklevel=2,
            )
    named = config.classes or _read_meta_classes(root) or _tag_classes(records)
    if all(r.mask is None or r.mask.suffix.lower() in VECTOR_SUFFIXES for r in records):
        classes = named or _vector_classes(records, shared)
        coding, mask_rule = None, (f"vector labels burnt on each chip's grid")
    else:
        coding, classes, mask_rule = _label_coding(records, config, named)
    records = [replace(r, mask_values=coding, classes=classes) for r in records]
    records, split_rule, n_buffer = _split(root, records, found[0][1] is not None or (
        len(found) > 1), config, val_fraction, seed)
    dataset = Dataset(root, tuple(records), tuple(classes), pairing, mask_rule, split_rule,
                      tuple(unpaired), n_buffer)
    log.info("%s", dataset.describe())
    if not any(r.split == "train" for r in records):
        raise LabelError(
            f"no training chips in {str(root)!r}: all {len(records)} are validation chips; "
            "put some under train/ (or mark them train in split.csv)."
        )
    return dataset


def _split(root: Path, records: list[ChipRecord], from_folders: bool, config: DatasetConfig,
           val_fraction: float, seed: int) -> tuple[list[ChipRecord], str, int]:
    from geounet.training.split import random_split, spatial_split

    if from_folders:
        return records, "train/ and val/ folders", 0
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
        kept = [replace(r, split=table[r.name]) for r in records if table[r.name] != "buffer"]
        return kept, SPLIT_FILE, len(records) - len(kept)
    bounds = _bounds(records)
    if bounds is None:
        split = random_split(len(records), val_fraction=val_fraction, seed=seed)
        rule = f"random {val_fraction:g} (chips without georeferencing)"
    else:
        boxes, tolerance = bounds
        split = spatial_split(boxes, val_fraction=val_fraction, seed=seed,
                              split_block=config.split_block, tolerance=tolerance)
        rule = (f"spatial {val_fraction:g}: blocks of up to {config.split_block}x"
                f"{config.split_block} touching chips; train chips touching val are buffer")
    kept = [replace(r, split=s) for r, s in zip(records, split) if s != "buffer"]
    return kept, rule, len(records) - len(kept)


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
            shutil.copyfile(rec.image, tmp / "images" / f"{rec.name}.tif")
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
