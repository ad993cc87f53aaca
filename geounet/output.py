"""Prediction outputs: the georeferenced Zarr v3 store written chunk by chunk, and the COG made from it.

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
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from geounet.config import NODATA_CLASS, ProbabilityDtype, choices
from geounet.errors import InputError, OutputExistsError, UnsupportedFormatError

log = logging.getLogger(__name__)

OutputFormat = Literal["zarr", "tif"]
"""Prediction output formats, chosen by the output path's suffix."""

SUFFIXES: dict[str, OutputFormat] = {".zarr": "zarr", ".tif": "tif", ".tiff": "tif"}
COG_BLOCK_SIZE = 512
_DONE_DIR = "_geounet_done"
_TMP_TAG = ".geounet-partial"
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


def output_format(path: str | os.PathLike[str]) -> OutputFormat:
    """Return the output format for a path from its suffix.

    Raises
    ------
    UnsupportedFormatError
        For any suffix other than ``.zarr``, ``.tif`` or ``.tiff``.

    Examples
    --------
    >>> output_format("pred.zarr"), output_format("pred.tif")
    ('zarr', 'tif')
    """
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise UnsupportedFormatError(
            f"output {str(path)!r} has suffix {suffix or '(none)'!r}, which geounet cannot write; "
            f"name the output with one of {', '.join(SUFFIXES)} "
            "(.zarr for a Zarr v3 store, .tif for a Cloud-Optimized GeoTIFF)."
        )
    return SUFFIXES[suffix]


def check_output(path: str | os.PathLike[str], *, overwrite: bool) -> OutputFormat:
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
            f"output {str(path)!r} already exists; pass overwrite=True (--overwrite) to "
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
    changed = sorted(k for k in set(stored) | set(run) if stored.get(k) != run.get(k))
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


CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "background": (0, 0, 0),
    "buildings": (255, 40, 40),
    "roads": (255, 220, 0),
}
"""Display colours of known classes in the COG's colour table (others get a fixed palette);
the same as the quicklook's outlines (``geounet.quicklook.LAYER_COLORS``)."""
_PALETTE = ((31, 119, 180), (44, 160, 44), (148, 103, 189), (140, 86, 75), (227, 119, 194),
            (127, 127, 127), (188, 189, 34), (23, 190, 207))


def class_colours(classes: tuple[str, ...] | list[str]) -> list[tuple[int, int, int]]:
    """RGB display colour of each class, index = class value."""
    return [CLASS_COLOURS.get(name, _PALETTE[i % len(_PALETTE)]) for i, name in enumerate(classes)]


def class_band_pam(classes: tuple[str, ...] | list[str]) -> str:
    """GDAL PAM XML (``.aux.xml``) making band 1 categorical: colour table (nodata 255
    transparent), category names and a thematic raster attribute table."""
    from xml.etree import ElementTree as ET

    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    names = ET.SubElement(band, "CategoryNames")
    colours = class_colours(classes)
    for value in range(NODATA_CLASS + 1):
        name = classes[value] if value < len(classes) else ""
        ET.SubElement(names, "Category").text = "nodata" if value == NODATA_CLASS else name
    table = ET.SubElement(band, "ColorTable")
    for value in range(NODATA_CLASS + 1):
        r, g, b = colours[value] if value < len(classes) else (0, 0, 0)
        alpha = 255 if value < len(classes) else 0
        ET.SubElement(table, "Entry", c1=str(r), c2=str(g), c3=str(b), c4=str(alpha))
    rat = ET.SubElement(band, "GDALRasterAttributeTable", tableType="thematic")
    # GDAL field types: 0 integer, 2 string; usages: 5 MinMax, 2 Name, 6-8 Red/Green/Blue
    fields = [("value", 0, 5), ("class", 2, 2), ("red", 0, 6), ("green", 0, 7), ("blue", 0, 8)]
    for index, (name, kind, usage) in enumerate(fields):
        defn = ET.SubElement(rat, "FieldDefn", index=str(index))
        ET.SubElement(defn, "Name").text = name
        ET.SubElement(defn, "Type").text = str(kind)
        ET.SubElement(defn, "Usage").text = str(usage)
    rows = [(v, classes[v], *colours[v]) for v in range(len(classes))]
    rows.append((NODATA_CLASS, "nodata", 0, 0, 0))
    for index, row in enumerate(rows):
        element = ET.SubElement(rat, "Row", index=str(index))
        for value in row:
            ET.SubElement(element, "F").text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


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


def write_cog(
    store: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    block_size: int = COG_BLOCK_SIZE,
    compress: str = "DEFLATE",
) -> Path:
    """Write a Cloud-Optimized GeoTIFF from a prediction store, streaming chunk by chunk.

    Band 1 is the class index (255 at nodata), bands 2..K+1 the class probabilities (band
    descriptions are the class names). The bands are grey (band 1) and undefined (TIFF
    photometric MINISBLACK), never RGB or alpha. Nodata is declared as the dataset's internal
    mask (one GeoTIFF nodata value would also hide probability 255 = 1.0 in bands 2..K+1).
    A GDAL sidecar ``OUT.aux.xml`` gives band 1 a colour table, category names and a thematic
    raster attribute table (value, class, colour), so GIS tools show it as categories; GDAL
    keeps none of these inside a multi-band GeoTIFF. Memory holds one
    store chunk at a time: the bands are first written block by block into a tiled GeoTIFF,
    then GDAL's COG driver copies it with overviews (nearest resampling) into place.

    Parameters
    ----------
    store : prediction store (Zarr) written by :func:`create_store` / :func:`write_chunk`.
    out : the ``.tif`` to write; built as a hidden temporary file, renamed when complete.
    overwrite : replace an existing ``out``.

    Examples
    --------
    >>> write_cog("pred.zarr", "pred.tif")  # doctest: +SKIP
    """
    import rasterio
    import rasterio.shutil
    import zarr
    from affine import Affine
    from rasterio.enums import ColorInterp
    from rasterio.windows import Window

    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(
            f"output {str(out)!r} already exists; pass overwrite=True (--overwrite) to replace it."
        )
    group = zarr.open_group(str(store), mode="r")
    probs = group["probabilities"]
    mask = group["mask"]
    num_classes, height, width = probs.shape
    meta = dict(group.attrs.get("geounet", {}))
    classes = list(meta.get("classes", [f"class_{i}" for i in range(num_classes)]))
    chunk = int(meta.get("chunk_size", probs.chunks[1]))
    ref = dict(group["spatial_ref"].attrs)
    crs_wkt = ref.get("crs_wkt")
    c, a, b, f, d, e = (float(v) for v in ref["GeoTransform"].split())
    dtype = str(probs.dtype)
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": num_classes + 1,
        "dtype": dtype,
        "tiled": True,
        "blockxsize": block_size,
        "blockysize": block_size,
        "compress": "ZSTD" if compress.upper() == "ZSTD" else "DEFLATE",
        "BIGTIFF": "IF_SAFER",
        # grey + undefined bands: GDAL's default for 4 uint8 bands is RGB + alpha
        "photometric": "MINISBLACK",
    }
    if crs_wkt:
        profile["crs"] = crs_wkt
        profile["transform"] = Affine(a, b, c, d, e, f)
    staging = temporary_path(out, ".tiled.tif")
    partial = temporary_path(out)
    remove_path(staging)
    remove_path(partial)
    try:
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
            with rasterio.open(staging, "w", **profile) as dst:
                dst.colorinterp = [ColorInterp.gray] + [ColorInterp.undefined] * num_classes
                dst.descriptions = ("class", *classes)
                dst.update_tags(1, classes=",".join(classes), nodata_class=str(NODATA_CLASS))
                for y0 in range(0, height, chunk):
                    for x0 in range(0, width, chunk):
                        window = Window(
                            x0, y0, min(chunk, width - x0), min(chunk, height - y0)
                        )
                        rows = slice(y0, y0 + window.height)
                        cols = slice(x0, x0 + window.width)
                        classes_block = mask[rows, cols]
                        dst.write(classes_block.astype(dtype, copy=False), 1, window=window)
                        dst.write(probs[:, rows, cols], list(range(2, num_classes + 2)),
                                  window=window)
                        dst.write_mask(
                            np.where(classes_block == NODATA_CLASS, 0, 255).astype(np.uint8),
                            window=window,
                        )
            rasterio.shutil.copy(
                staging,
                partial,
                driver="COG",
                BLOCKSIZE=block_size,
                COMPRESS=profile["compress"],
                OVERVIEW_RESAMPLING="NEAREST",
                BIGTIFF="IF_SAFER",
            )
        aux = Path(f"{out}.aux.xml")
        partial_aux = temporary_path(out, ".aux.xml")
        partial_aux.write_text(class_band_pam(classes))
        os.replace(partial_aux, aux)
        replace_path(partial, out)
    finally:
        remove_path(staging)
        remove_path(partial)
        remove_path(temporary_path(out, ".aux.xml"))
    log.info("wrote COG %s (%d x %d, %d bands)", out, width, height, num_classes + 1)
    return out
