"""Output paths: the prediction format a path names, refusing existing outputs, and building
an output under a temporary name in the same directory that is renamed into place only when
complete.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from geounet.config import RasterFormat
from geounet.errors import InputError, OutputExistsError, UnsupportedFormatError, option

SUFFIXES: dict[str, RasterFormat] = {".zarr": "zarr", ".tif": "cog", ".tiff": "cog"}
"""Prediction output suffix -> format (:data:`geounet.config.RasterFormat`)."""
_TMP_TAG = ".geounet-partial"


def output_format(path: str | os.PathLike[str]) -> RasterFormat:
    """Return the output format for a path from its suffix.

    Raises
    ------
    UnsupportedFormatError
        For any suffix other than ``.zarr``, ``.tif`` or ``.tiff``.

    Examples
    --------
    >>> output_format("pred.zarr"), output_format("pred.tif")
    ('zarr', 'cog')
    """
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise UnsupportedFormatError(
            f"output {str(path)!r} has suffix {suffix or '(none)'!r}, which geounet cannot write; "
            f"name the output with one of {', '.join(SUFFIXES)} "
            "(.zarr for a Zarr v3 store, .tif for a Cloud-Optimized GeoTIFF)."
        )
    return SUFFIXES[suffix]


def check_output(path: str | os.PathLike[str], *, overwrite: bool) -> RasterFormat:
    """Validate an output path before any work: known suffix, parent exists, not existing.

    Raises
    ------
    UnsupportedFormatError, OutputExistsError, InputError
    """
    fmt = output_format(path)
    check_new_path(path, overwrite=overwrite)
    return fmt


def check_new_path(path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """The checks every geounet output gets before any work: its folder exists, and it does not
    exist yet unless ``overwrite``.

    Raises
    ------
    InputError, OutputExistsError
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(
            f"output folder {str(path.parent)!r} does not exist; create it first or choose "
            "another output path."
        )
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"output {str(path)!r} already exists; pass {option('overwrite', True)} to "
            "replace it, or choose another path."
        )
    return path


def temporary_path(path: str | os.PathLike[str], suffix: str = "") -> Path:
    """Return the temporary name an output is built under: hidden, in the same directory.

    Examples
    --------
    >>> temporary_path("out/pred.zarr").name
    '.pred.zarr.geounet-partial'
    """
    path = Path(path)
    return path.with_name(f".{path.name}{_TMP_TAG}{suffix}")


def remove_path(path: str | os.PathLike[str]) -> None:
    """Delete a file or directory tree if it exists."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def replace_path(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Move a finished temporary output onto its final name, replacing what was there.

    A file is replaced atomically (``os.replace``); a directory (Zarr store) replacing an
    existing one is swapped through a second temporary name so the old output is removed only
    after the new one is complete.
    """
    source, target = Path(source), Path(target)
    if target.is_dir() and not target.is_symlink():
        trash = target.with_name(f".{target.name}.geounet-old")
        remove_path(trash)
        os.replace(target, trash)
        os.replace(source, target)
        remove_path(trash)
    else:
        if source.is_dir() and (target.exists() or target.is_symlink()):
            target.unlink()
        os.replace(source, target)
    return target
