"""Pairing discovery: which image goes with which label file in a dataset folder, by what rule."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geounet.raster.labels import VECTOR_SUFFIXES
from geounet.training.chips import CHIPS_META

RASTER_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2")
"""Image and mask files read (GDAL): GeoTIFF, and PNG/JPEG/JPEG 2000 as datasets publish them
(georeferenced by a world file or ``.aux.xml`` when they have one)."""
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


@dataclass(frozen=True)
class Found:
    """The pairs of one folder, the rule that paired them (in words) and the files left over."""

    pairs: dict[str, tuple[Path, Path | None]]
    rule: str
    unpaired: tuple[Path, ...]


def _files(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    """Visible files of ``folder`` with one of ``suffixes`` (never chips.json), sorted."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith(".")
                  and p.name != CHIPS_META)


def _strip(stem: str, suffix: str) -> str | None:
    """The stem without ``suffix`` (case-insensitive), or None when it does not end so."""
    if not suffix:
        return stem
    if stem.lower().endswith(suffix) and len(stem) > len(suffix):
        return stem[: -len(suffix)]
    return None


def _match(images: list[Path], labels: list[Path], same_dir: bool
           ) -> tuple[int, str, str, dict[str, tuple[Path, Path]]]:
    """Best (image suffix, label suffix) rule: the most pairs; on ties raster masks before
    vector labels (the vectors then give the building instances, :func:`vector_partners`),
    then earlier suffixes."""
    best: tuple[int, str, str, dict[str, tuple[Path, Path]]] = (0, "", "", {})
    best_rank = (0, False)
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
            rank = (len(pairs), bool(pairs) and all(
                m.suffix.lower() in RASTER_SUFFIXES for _, m in pairs.values()))
            if rank > best_rank:
                best, best_rank = (len(pairs), isuf, lsuf, pairs), rank
    return best


def _describe(img_dir: Path, lab_dir: Path, isuf: str, lsuf: str, labels: Iterable[Path],
              root: Path) -> str:
    """The pairing rule in words, e.g. ``masks in a sibling folder: img/NAME.tif + gt/NAME.tif``."""
    ext = sorted({p.suffix for p in labels}) or [".tif"]
    img_ext = sorted({p.suffix for p in _files(img_dir, RASTER_SUFFIXES)}) or [".tif"]
    kind = "vector labels" if all(e.lower() in VECTOR_SUFFIXES for e in ext) else "masks"
    rel_i = "" if img_dir == root else f"{img_dir.relative_to(root)}/"
    rel_l = "" if lab_dir == root else f"{lab_dir.relative_to(root)}/"
    where = "next to the images" if img_dir == lab_dir else "in a sibling folder"
    return (f"{kind} {where}: {rel_i}NAME{isuf}{img_ext[0]} + {rel_l}NAME{lsuf}{ext[0]}")


def discover(folder: Path, config: Any) -> Found:
    """Pairs of one folder (a dataset root, or its train/ or val/) under ``config``
    (a :class:`~geounet.training.layout.DatasetConfig`: its ``labels`` and ``mask_pattern``)."""
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
            return Found({p.stem: (p, None) for p in images},
                          f"one labels file for all chips: {shared.name}", ())
        return Found({}, "one labels file for all chips", ())
    if config.mask_pattern is not None:
        best: Found | None = None
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
                best = Found(pairs, f"--mask-pattern {config.mask_pattern!r} from {where}/",
                              unpaired)
        return best if best is not None else Found({}, "", ())
    seen = {p for d in {d for pair in candidates for d in pair}
            for p in _files(d, RASTER_SUFFIXES + VECTOR_SUFFIXES)}
    best_found = Found({}, "", tuple(sorted(seen)))
    best_key = (0, 0)
    for rank, (img_dir, lab_dir) in enumerate(candidates):
        images = _files(img_dir, RASTER_SUFFIXES)
        labels = _files(lab_dir, RASTER_SUFFIXES + VECTOR_SUFFIXES)
        n, isuf, lsuf, pairs = _match(images, labels, img_dir == lab_dir)
        if n == 0 or (n, -rank) <= best_key:
            continue
        used = {p for pair in pairs.values() for p in pair}
        rule = _describe(img_dir, lab_dir, isuf, lsuf, [m for _, m in pairs.values()], folder)
        best_found = Found(pairs, rule, tuple(sorted((set(images) | set(labels)) - used)))
        best_key = (n, -rank)
    return best_found


def vector_partners(images: Iterable[Path], root: Path) -> dict[Path, Path]:
    """Per-chip vector labels of images whose labels are raster masks: ``image -> file``.

    Published building datasets often hold both (``images/`` + ``masks/`` + ``labels/``, or
    ``NAME.tif`` + ``NAME.mask.tif`` + ``NAME.geojson``): the mask is the training target and
    the polygons tell touching buildings apart, which a mask cannot (docs/training.md, "Building
    instances"). Looked for, in this order: next to the image, in a label folder
    (:data:`MASK_DIRS`) inside the image's folder, in one beside it (never outside ``root``);
    named like the image, or its stem without an image suffix, plus an optional mask suffix.
    """
    root = root.resolve()
    by_dir: dict[Path, dict[str, Path]] = {}

    def keyed(folder: Path) -> dict[str, Path]:
        if folder not in by_dir:
            found: dict[str, Path] = {}
            for lsuf in ("", *MASK_SUFFIXES):
                for p in _files(folder, VECTOR_SUFFIXES):
                    key = _strip(p.stem, lsuf)
                    if key is not None:
                        found.setdefault(key, p)
            by_dir[folder] = found
        return by_dir[folder]

    out: dict[Path, Path] = {}
    for image in images:
        here = image.resolve().parent
        folders = [here] + [here / d for d in MASK_DIRS]
        if here != root and root in here.parents:
            folders += [here.parent / d for d in MASK_DIRS]
        keys = [k for k in (_strip(image.stem, s) for s in IMAGE_SUFFIXES) if k is not None]
        for folder in folders:
            hit = next((keyed(folder)[k] for k in keys if k in keyed(folder)), None)
            if hit is not None:
                out[image] = hit
                break
    return out
