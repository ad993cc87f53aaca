"""Mask-value coding and class names: how raw label values become named classes."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geounet.errors import InputError, LabelError
from geounet.raster.labels import VECTOR_SUFFIXES
from geounet.training.chips import CHIPS_META, NODATA
from geounet.training.pairing import RASTER_SUFFIXES
from geounet.training.record import ChipRecord

DEFAULT_FOREGROUND = "buildings"
"""Foreground class name of binary masks when ``classes`` does not name it."""
LEGACY_CLASSES = ("background", "buildings", "roads")
"""Class names of unnamed class-index masks with values 0..2 (the synth/chips default)."""


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
    """The error for mask values that cannot be read, with the rule and the options that fix it."""
    example = list(example if example is not None else values)[:4]
    shown = ",".join(str(v) for v in list(values)[:8]) + (",..." if len(values) > 8 else "")
    return LabelError(
        f"mask values {{{shown}}} {why}; the rule: 0/1 and 0/255 masks are binary "
        "(background + one class), 0..N-1 are class indices named by --classes, 255 is "
        "nodata otherwise. Say what the values mean with --mask-values (one value per class "
        f"in class order, e.g. --mask-values {','.join(str(v) for v in example)}) "
        "and --classes."
    )


def read_meta_classes(root: Path) -> tuple[str, ...] | None:
    """Class names from the chips.json of ``root``, if any."""
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


def tag_classes(records: Sequence[ChipRecord]) -> tuple[str, ...] | None:
    """Class names from the first raster mask's ``classes`` tag, if any."""
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


def vector_classes(records: Sequence[ChipRecord], shared: Path | None) -> tuple[str, ...]:
    """Classes of vector labels: the known layers present, else background and buildings."""
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


def _given_coding(coding: tuple[int, ...], values: set[int], declared: set[float],
                  named: tuple[str, ...] | None
                  ) -> tuple[tuple[int, ...] | None, tuple[str, ...], str]:
    """:func:`label_coding` under ``--mask-values``: every mask value is a given one or
    nodata, one value per class."""
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


def label_coding(records: Sequence[ChipRecord], config: Any,
                  named: tuple[str, ...] | None) -> tuple[tuple[int, ...] | None,
                                                          tuple[str, ...], str]:
    """(mask value per class or None for class indices, classes, rule in words) under
    ``config`` (a :class:`~geounet.training.layout.DatasetConfig`: its ``mask_values`` and
    ``classes``)."""
    values, declared, fractional, mixed = _scan_masks(records)
    if fractional:
        raise _mask_values_error(sorted(values), "include fractions (a probability map?)")
    if mixed and config.mask_values is None and not declared - {0.0} and set(values) <= {
            0, 1, 255}:
        raise _mask_values_error(sorted(values), "mix 0/1 masks and 0/255 masks (no mask "
                                                 "holds both 1 and 255)", (0, 1))
    if config.mask_values is not None:
        return _given_coding(tuple(config.mask_values), values, declared, named)
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
