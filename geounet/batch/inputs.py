"""The scenes of a batch: paths, globs, URLs and manifests resolved to one list; output names.

:func:`resolve_scenes` turns what the user gave (``scenes/**/*.tif``, ``s3://bucket/*.tif``,
``.txt``/``.csv`` manifests) into absolute paths or URLs, in order, once each;
:func:`scene_name` names a scene's outputs, and no two scenes may share one. STAC items
(``.json`` entries, STAC API item URLs) are scenes like any other; the job's ``assets`` name
their bands (:func:`scene_options`). Re-exported by
:mod:`geounet.batch.job`.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from geounet import objectstore
from geounet.batch.table import DONE_DIR, TABLE_NAMES
from geounet.errors import InputError
from geounet.raster import is_url
from geounet.raster.stac import is_stac_item
from geounet.run.options import PredictOptions

MANIFEST_SUFFIXES = (".txt", ".csv")
_GLOB_CHARS = "*?["


def _is_manifest(item: str) -> bool:
    return item.lower().endswith(MANIFEST_SUFFIXES)


def _read_manifest(path: str) -> list[str]:
    """Entries of a manifest: one path/URL per line (.txt), or a ``path`` column (.csv).

    Relative entries are taken from the manifest's own folder.
    """
    text = objectstore.read_text(path)
    if text is None:
        raise InputError(
            f"manifest {path!r} does not exist; give a .txt file with one scene path or URL per "
            "line, or a .csv file with a 'path' column."
        )
    if path.lower().endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
        columns = {name.strip().lower(): name for name in (reader.fieldnames or [])}
        if "path" not in columns:
            raise InputError(
                f"manifest {path!r} has no 'path' column (columns: {reader.fieldnames}); add a "
                "header row naming the column of scene paths or URLs 'path'."
            )
        entries = [(row.get(columns["path"]) or "").strip() for row in reader]
    else:
        entries = [line.strip() for line in text.splitlines()]
    entries = [e for e in entries if e and not e.startswith("#")]
    base = path.rsplit("/", 1)[0] if is_url(path) else os.path.dirname(
        os.path.abspath(path))
    return [e if is_url(e) or os.path.isabs(e) else objectstore.join(base, e)
            for e in entries]


def _expand(item: str) -> list[str]:
    if not any(ch in item for ch in _GLOB_CHARS):
        return [item if is_url(item) else os.path.abspath(item)]
    if objectstore.is_s3(item):
        fs = objectstore.filesystem()
        matches = [f"s3://{key}" for key in fs.glob(item[len("s3://"):])]
    elif is_url(item):
        return [item]
    else:
        matches = [os.path.abspath(p) for p in glob.glob(os.path.expanduser(item),
                                                         recursive=True)]
    if not matches:
        raise InputError(
            f"pattern {item!r} matches no scene; check the folder and the pattern (quote it so "
            "the shell does not expand it, e.g. 'scenes/*.tif')."
        )
    return sorted(matches)


def resolve_scenes(
    scenes: Iterable[str | os.PathLike[str]] = (),
    manifests: Iterable[str | os.PathLike[str]] = (),
) -> list[str]:
    """Turn paths, globs, URLs and manifests into absolute paths or URLs, in order, once each.

    Parameters
    ----------
    scenes : scene paths, glob patterns (``scenes/**/*.tif``, ``s3://bucket/*.tif``), URLs
        (``s3://``, ``https://``, ``/vsi...``), or manifests (an item ending ``.txt`` or
        ``.csv``).
    manifests : manifest files: ``.txt`` with one path or URL per line (blank lines and
        ``#`` comments skipped), or ``.csv`` with a ``path`` column. Relative entries are
        taken from the manifest's folder.

    Raises
    ------
    InputError
        No scene given, a glob matching nothing, a manifest missing or without a path column.

    Examples
    --------
    >>> resolve_scenes(["s3://bucket/a.tif"])
    ['s3://bucket/a.tif']
    """
    resolved: list[str] = []
    items = [(os.fspath(m), True) for m in manifests] + [(os.fspath(s), False) for s in scenes]
    for item, is_manifest in items:
        if is_manifest or _is_manifest(item):
            manifest = item if is_url(item) else os.path.abspath(item)
            for entry in _read_manifest(manifest):
                resolved.extend(_expand(entry))
        else:
            resolved.extend(_expand(item))
    unique = list(dict.fromkeys(resolved))
    if not unique:
        raise InputError(
            "no scenes given; pass scene paths, globs, URLs, or a manifest (.txt with one path "
            "per line, .csv with a 'path' column)."
        )
    return unique


def scene_name(scene: str) -> str:
    """The output name of a scene: its file name without suffix (``a/b/x.tif`` -> ``x``)."""
    return Path(scene.rstrip("/").rsplit("/", 1)[-1]).stem


def check_names(scenes: Sequence[str]) -> list[str]:
    seen: dict[str, str] = {}
    for scene in scenes:
        name = scene_name(scene)
        if name in seen:
            raise InputError(
                f"scenes {seen[name]!r} and {scene!r} would both write outputs named {name!r}; "
                "give each scene a distinct file name (or run them in separate --out-dir)."
            )
        if name in (Path(t).stem for t in TABLE_NAMES) or name == DONE_DIR:
            raise InputError(
                f"scene {scene!r} is named like the batch table ({name!r}); rename the scene."
            )
        seen[name] = scene
    return list(seen)


def check_assets(scenes: Sequence[str], assets: str | Sequence[str] | None) -> None:
    """Raise InputError when ``assets`` is given but no scene is a STAC item."""
    if assets is not None and not any(is_stac_item(s) for s in scenes):
        raise InputError(
            f"assets {assets!r} (--assets) name the bands of STAC items, but no scene is one "
            "(a .json file or a .../collections/C/items/ID URL); drop --assets, or give items."
        )


def scene_options(scene: str, options: PredictOptions) -> PredictOptions:
    """The options of one scene: the job's ``assets`` for a STAC item, none for a raster (so
    a batch may mix both)."""
    if is_stac_item(scene) or options.assets is None:
        return options
    return dataclasses.replace(options, assets=None)
