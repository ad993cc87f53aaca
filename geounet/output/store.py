"""The prediction store: the georeferenced Zarr v3 store written chunk by chunk, its resume
markers and the record of the outputs published from it.

The store is the one place chunk results land: each task writes whole Zarr chunks of its own
region (Zarr chunks equal geounet's chunks, so concurrent writers never share a chunk) and then
leaves a small completion marker, which is what resume reads. Outputs are built under a
temporary name in the same directory and renamed into place only when complete.

Layout (see docs/CONTRACTS.md, "Prediction store"):

- ``probabilities`` (class, y, x): uint8 0-255 (``p * 255`` rounded) or float32; 0 at nodata
- ``mask`` (y, x): uint8 class index, 255 = nodata
- ``x``, ``y``: pixel-centre coordinates (degrees lon/lat for a geographic CRS; absent for a
  rotated grid); ``spatial_ref``: CF grid mapping with the full ``GeoTransform``
- group attribute ``geounet``: classes, model card, chunk size, version
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geounet.config import NODATA_CLASS, ProbabilityDtype, choices
from geounet.errors import InputError
from geounet.output.paths import remove_path

log = logging.getLogger(__name__)

_DONE_DIR = "_geounet_done"
_SEAMS_DIR = "seams"  # in _DONE_DIR: each chunk's tile outputs near its seams (same padding)
_OUTPUTS_FILE = "outputs.record"  # in _DONE_DIR; not *.json, which are chunk markers


@dataclass(frozen=True)
class StoreSpec:
    """What a task needs to write its region of a prediction store: cheap to pickle.

    Attributes
    ----------
    path : directory of the (temporary) Zarr store.
    probability_dtype : ``uint8`` or ``float32``.
    """

    path: str
    probability_dtype: ProbabilityDtype = "uint8"

    def __post_init__(self) -> None:
        if self.probability_dtype not in choices(ProbabilityDtype):
            raise InputError(
                f"probability dtype {self.probability_dtype!r} is not supported; "
                f"use one of {', '.join(choices(ProbabilityDtype))}."
            )


def _pixel_transform(transform: tuple[float, ...] | None) -> tuple[float, ...]:
    return tuple(transform[:6]) if transform is not None else (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _axis_coordinates(
    crs_wkt: str | None, transform: tuple[float, ...], height: int, width: int
) -> list[tuple[str, np.ndarray, dict[str, Any]]]:
    """The 1-D ``x``/``y`` pixel-centre coordinates a store gets, with CF attributes.

    A north-up grid gets both, labelled by the CRS: ``longitude``/``latitude`` in
    ``degrees_east``/``degrees_north`` for a geographic CRS, ``projection_x/y_coordinate`` in
    the CRS's linear unit otherwise, ``pixel`` without a CRS. A rotated or sheared grid gets
    none: no 1-D coordinate can say where its pixels are, and one that ignored the rotation
    would make ``xarray.sel`` silently wrong. The full transform is always in the grid
    mapping's ``GeoTransform`` (what rioxarray's ``.rio.transform()`` reads).
    """
    from geounet.georef import is_geographic, rotated, units_name

    a, b, c, d, e, f = transform
    if rotated(transform):
        return []
    xs = c + a * (np.arange(width) + 0.5)
    ys = f + e * (np.arange(height) + 0.5)
    if not crs_wkt:
        return [(name, values, {"axis": name.upper(), "units": "pixel", "standard_name": name})
                for name, values in (("x", xs), ("y", ys))]
    if is_geographic(crs_wkt):
        return [
            ("x", xs, {"axis": "X", "units": "degrees_east", "standard_name": "longitude",
                       "long_name": "longitude"}),
            ("y", ys, {"axis": "Y", "units": "degrees_north", "standard_name": "latitude",
                       "long_name": "latitude"}),
        ]
    unit = units_name(crs_wkt)
    return [(name, values, {"axis": name.upper(), "units": unit,
                            "standard_name": f"projection_{name}_coordinate",
                            "long_name": f"{name} coordinate of projection"})
            for name, values in (("x", xs), ("y", ys))]


def create_store(
    path: str | os.PathLike[str],
    *,
    height: int,
    width: int,
    classes: tuple[str, ...],
    chunk_size: int,
    crs_wkt: str | None,
    transform: tuple[float, ...] | None,
    probability_dtype: ProbabilityDtype = "uint8",
    attrs: dict[str, Any] | None = None,
    run: dict[str, Any] | None = None,
) -> StoreSpec:
    """Create an empty prediction store (Zarr v3 group) laid out as in docs/CONTRACTS.md.

    Parameters
    ----------
    path : directory to create (must not exist).
    height, width : scene size in pixels.
    classes : class names; ``len(classes)`` probability layers.
    chunk_size : Zarr chunk side; equal to the chunk side so each chunk task writes whole chunks.
    crs_wkt, transform : georeferencing of the scene (affine ``a, b, c, d, e, f``); with
        ``crs_wkt=None`` and ``transform=None`` the store is in pixel space.
    probability_dtype : ``uint8`` (0-255) or ``float32``.
    attrs : extra entries of the ``geounet`` group attribute (e.g. ``model_card``).
    run : fingerprint of the run, compared on resume (see :func:`check_resumable`).

    Examples
    --------
    >>> spec = create_store(tmp / "p.zarr", height=300, width=257, classes=("a", "b"),
    ...                     chunk_size=128, crs_wkt=None, transform=None)  # doctest: +SKIP
    """
    import zarr

    spec = StoreSpec(str(path), probability_dtype)
    a, b, c, d, e, f = _pixel_transform(transform)
    num_classes = len(classes)
    # Zarr chunks never larger than the array (zarr allocates whole chunks when writing);
    # the chunk grid still starts at multiples of chunk_size, as the tasks' regions do.
    chunk_y, chunk_x = min(chunk_size, height), min(chunk_size, width)
    group = zarr.open_group(str(path), mode="w-", zarr_format=3)
    group.attrs["geounet"] = {
        "classes": list(classes),
        "chunk_size": int(chunk_size),
        "probability_dtype": probability_dtype,
        "nodata_class": NODATA_CLASS,
        **(attrs or {}),
    }
    if run is not None:
        group.attrs["geounet_run"] = run
    geo_attrs = {"grid_mapping": "spatial_ref", "coordinates": "spatial_ref"}
    group.create_array(
        "probabilities",
        shape=(num_classes, height, width),
        chunks=(num_classes, chunk_y, chunk_x),
        dtype=probability_dtype,
        fill_value=0,
        dimension_names=("class", "y", "x"),
        attributes={**geo_attrs, "classes": list(classes), "long_name": "class probabilities",
                    "scale": 1 / 255 if probability_dtype == "uint8" else 1.0},
    )
    group.create_array(
        "mask",
        shape=(height, width),
        chunks=(chunk_y, chunk_x),
        dtype="uint8",
        fill_value=NODATA_CLASS,
        dimension_names=("y", "x"),
        attributes={**geo_attrs, "nodata": NODATA_CLASS, "classes": list(classes),
                    "long_name": "class index"},
    )
    for name, values, attributes in _axis_coordinates(crs_wkt, (a, b, c, d, e, f), height, width):
        arr = group.create_array(
            name,
            shape=values.shape,
            chunks=values.shape,
            dtype="float64",
            dimension_names=(name,),
            attributes=attributes,
        )
        arr[:] = values
    ref_attrs: dict[str, Any] = {"GeoTransform": f"{c} {a} {b} {f} {d} {e}"}
    if crs_wkt:
        ref_attrs.update({"crs_wkt": crs_wkt, "spatial_ref": crs_wkt})
    ref = group.create_array("spatial_ref", shape=(), dtype="int64", fill_value=0,
                             attributes=ref_attrs)
    ref[...] = 0
    (Path(path) / _DONE_DIR).mkdir()
    return spec


def read_run(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Return the run fingerprint stored in a (temporary) store, or None if there is none."""
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception:  # noqa: BLE001 - any unreadable store is "no usable run"
        return None
    run = group.attrs.get("geounet_run")
    return dict(run) if isinstance(run, dict) else None


def changed_settings(stored: dict[str, Any], run: dict[str, Any]) -> list[str]:
    """Names of the run settings (scene, model, options) that differ between an earlier run's
    record ``stored`` and this run's ``run``, sorted: the one rule of "same run"."""
    return sorted(k for k in set(stored) | set(run) if stored.get(k) != run.get(k))


def check_resumable(path: str | os.PathLike[str], run: dict[str, Any]) -> bool:
    """Return True if a temporary store exists and was started by the same run.

    Raises
    ------
    InputError
        If a store exists but was started with other settings (scene, model, sizes, dtype).
    """
    if not Path(path).is_dir():
        return False
    stored = read_run(path)
    if stored is None:
        log.warning("partial store %s is unreadable; starting from scratch", path)
        return False
    changed = changed_settings(stored, run)
    if changed:
        raise InputError(
            f"cannot resume: since the interrupted run in {str(path)!r} "
            f"{'; '.join(_describe_change(k, stored.get(k), run.get(k)) for k in changed)}; "
            "mixing them would give a wrong output. Rerun with the same scene, model and "
            "settings, or without --resume to start over."
        )
    return True


def _describe_change(key: str, before: Any, after: Any) -> str:
    """One change between a stored run fingerprint and the new one, in words."""
    if key == "model" and isinstance(before, dict) and isinstance(after, dict):
        if before.get("sha256") != after.get("sha256"):
            return (f"the model changed (content sha256 {str(before.get('sha256'))[:12]} -> "
                    f"{str(after.get('sha256'))[:12]}, {before.get('name')} -> "
                    f"{after.get('name')})")
    if key == "scene" and isinstance(before, dict) and isinstance(after, dict):
        fields = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        return "the scene changed (" + ", ".join(
            f"{k} {before.get(k)!r} -> {after.get(k)!r}" for k in fields) + ")"
    return f"setting {key} changed ({before!r} -> {after!r})"


def done_chunks(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Return the completion records of a (temporary) store, keyed by chunk id."""
    done: dict[str, dict[str, Any]] = {}
    folder = Path(path) / _DONE_DIR
    if not folder.is_dir():
        return done
    for marker in folder.glob("*.json"):
        try:
            done[marker.stem] = json.loads(marker.read_text())
        except (OSError, ValueError):  # a marker cut short by a kill: recompute that chunk
            continue
    return done


def _output_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    stat = os.stat(path)
    return {"path": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def record_output(store: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Note in a (temporary) store that ``path`` was written from it (size and time), so a
    resumed run does not redo it or refuse it as an existing output."""
    folder = Path(store) / _DONE_DIR
    if not folder.is_dir():
        return
    (folder / _OUTPUTS_FILE).write_text(
        json.dumps({**read_outputs(store), os.path.abspath(path): _output_record(path)}))


def read_outputs(store: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Outputs recorded by :func:`record_output` (absolute path -> record)."""
    try:
        data = json.loads((Path(store) / _DONE_DIR / _OUTPUTS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def recorded_output(store: str | os.PathLike[str], path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is still exactly the file :func:`record_output` noted in ``store``."""
    record = read_outputs(store).get(os.path.abspath(path))
    try:
        return record is not None and record == _output_record(path)
    except OSError:
        return False


def chunk_id(y0: int, x0: int) -> str:
    """Name of a chunk's completion marker, from its core origin."""
    return f"{y0}_{x0}"


def mark_done(spec: StoreSpec, y0: int, x0: int, record: dict[str, Any]) -> None:
    """Record that a chunk is written (atomically: written aside, then renamed)."""
    folder = Path(spec.path) / _DONE_DIR
    final = folder / f"{chunk_id(y0, x0)}.json"
    partial = folder / f".{final.name}.{os.getpid()}"
    partial.write_text(json.dumps(record))
    os.replace(partial, final)


def save_seam_data(spec: StoreSpec, y0: int, x0: int, arrays: dict[str, np.ndarray]) -> None:
    """Keep a chunk's arrays for its neighbours' seams (same padding: the tile outputs the
    seam exchange needs) beside the completion markers, atomically; they go with them when
    the store is finalized."""
    folder = Path(spec.path) / _DONE_DIR / _SEAMS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{chunk_id(y0, x0)}.npz"
    partial = folder / f".{chunk_id(y0, x0)}.{os.getpid()}.npz"
    np.savez(partial, **arrays)
    os.replace(partial, final)


def load_seam_data(path: str | os.PathLike[str], y0: int, x0: int) -> dict[str, np.ndarray]:
    """The arrays :func:`save_seam_data` kept for the chunk at ``(y0, x0)``.

    Raises
    ------
    FileNotFoundError
        When that chunk has not run yet.
    """
    with np.load(Path(path) / _DONE_DIR / _SEAMS_DIR / f"{chunk_id(y0, x0)}.npz") as data:
        return {name: data[name] for name in data.files}


def seam_data_chunks(path: str | os.PathLike[str]) -> set[str]:
    """Chunk ids (:func:`chunk_id`) with seam data kept in a (temporary) store."""
    folder = Path(path) / _DONE_DIR / _SEAMS_DIR
    return {f.stem for f in folder.glob("*.npz") if not f.name.startswith(".")}


def quantize(probabilities: np.ndarray, dtype: ProbabilityDtype) -> np.ndarray:
    """Convert float probabilities to the storage dtype (uint8: ``round(p * 255)``)."""
    if dtype == "float32":
        return probabilities.astype(np.float32, copy=False)
    return np.rint(np.clip(probabilities, 0.0, 1.0) * 255.0).astype(np.uint8)


def write_chunk(
    spec: StoreSpec,
    y0: int,
    x0: int,
    probabilities: np.ndarray,
    mask: np.ndarray,
    valid: np.ndarray,
) -> None:
    """Write one chunk's probabilities and class mask into its region of the store.

    Parameters
    ----------
    spec : the store.
    y0, x0 : origin of the chunk core in scene pixels (a multiple of the Zarr chunk side).
    probabilities : float (class, height, width) in 0-1.
    mask : uint8 (height, width) class index.
    valid : bool (height, width); invalid pixels become probability 0 and class 255.
    """
    import zarr

    height, width = mask.shape
    probs = quantize(probabilities, spec.probability_dtype)
    probs = np.where(valid[None], probs, np.zeros((), probs.dtype))
    classes = np.where(valid, mask.astype(np.uint8, copy=False), np.uint8(NODATA_CLASS))
    store = spec.path
    zarr.open_array(f"{store}/probabilities", mode="r+")[:, y0:y0 + height, x0:x0 + width] = probs
    zarr.open_array(f"{store}/mask", mode="r+")[y0:y0 + height, x0:x0 + width] = classes


def finalize_store(path: str | os.PathLike[str]) -> None:
    """Drop resume bookkeeping and consolidate metadata so ``xarray.open_zarr`` opens it quietly."""
    import zarr

    path = Path(path)
    remove_path(path / _DONE_DIR)
    group = zarr.open_group(str(path), mode="r+")
    if "geounet_run" in group.attrs:
        del group.attrs["geounet_run"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "consolidated metadata is not in the v3 spec"
        zarr.consolidate_metadata(str(path))


def open_prediction(path: str | os.PathLike[str]) -> Any:
    """Open a prediction store as an ``xarray.Dataset`` (CRS via rioxarray's ``.rio``).

    Examples
    --------
    >>> ds = open_prediction("pred.zarr")  # doctest: +SKIP
    >>> ds.rio.crs, ds.mask.rio.nodata  # doctest: +SKIP
    """
    import rioxarray  # noqa: F401 - registers the .rio accessor
    import xarray as xr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return xr.open_zarr(str(path))
