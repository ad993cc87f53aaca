"""A stack of georeferenced files as one raster: a GDAL VRT with one band per file band, on
the finest file's grid (cut to where every file has data), coarser files resampled onto it,
nodata kept per band and internal masks / alpha bands combined into one dataset mask.

Used by :mod:`geounet.raster.stac` for the assets of a STAC item; the VRT is plain XML, carried
in :class:`~geounet.raster.Stack` to every task, which opens it like any scene.
"""

from __future__ import annotations

import math
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from geounet.errors import GeoreferenceError, GeounetError, SceneError, UnsupportedFormatError
from geounet.raster.scene import check_complete, gdal_env, is_url

_VRT_RESAMPLING = {"cubic_spline": "cubicspline"}
_SAME = 1e-6  # pixels: grids closer than this are one grid

_GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16",
               "uint32": "UInt32", "int32": "Int32", "uint64": "UInt64", "int64": "Int64",
               "float32": "Float32", "float64": "Float64"}


@dataclass(frozen=True)
class StackFile:
    """What the stack needs of one asset file (metadata only)."""

    key: str
    href: str
    path: str
    crs: Any
    transform: Any
    width: int
    height: int
    dtypes: tuple[str, ...]
    nodata: tuple[float | None, ...]
    alpha: tuple[bool, ...]
    masked: bool
    nbits: tuple[str | None, ...]


def open_stack_file(key: str, href: str, path: str, context: str) -> StackFile:
    """The metadata of one file of a stack (``key`` names it, ``href`` is where it is said to
    be, ``path`` its GDAL name, ``context`` what holds it, for messages: ``STAC item '...'``).

    Raises
    ------
    SceneError
        The file cannot be opened or is truncated.
    GeoreferenceError
        It has no CRS or geotransform.
    """
    import rasterio
    from rasterio.enums import MaskFlags
    from rasterio.errors import NotGeoreferencedWarning

    try:
        with gdal_env(path=path), warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                if not is_url(path):
                    check_complete(ds, path)  # a truncated local file fails now, not mid-run
                alpha = tuple(ci.name == "alpha" for ci in ds.colorinterp)
                file = StackFile(
                    key, href, path, ds.crs, ds.transform, int(ds.width), int(ds.height),
                    tuple(str(d) for d in ds.dtypes),
                    tuple(None if v is None else float(v) for v in ds.nodatavals), alpha,
                    any(alpha) or any(MaskFlags.per_dataset in f for f in ds.mask_flag_enums),
                    tuple(ds.tags(b, ns="IMAGE_STRUCTURE").get("NBITS")
                          for b in range(1, ds.count + 1)))
    except GeounetError:
        raise
    except Exception as exc:  # noqa: BLE001 - GDAL raises several classes for bad files
        raise SceneError(
            f"asset {key!r} of {context} ({href}) cannot be opened as a raster "
            f"({type(exc).__name__}: {exc}); check its href and, for s3:// or http(s):// "
            "assets, the access settings (the AWS_* variables, docs/batch.md)."
        ) from exc
    if file.crs is None or tuple(file.transform)[:6] == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0):
        raise GeoreferenceError(
            f"asset {key!r} of {context} ({href}) has no CRS or geotransform, so "
            "it cannot be stacked with the others by its place on the map; georeference the "
            "file (gdal_edit.py -a_srs EPSG:XXXX -a_ullr ...) or choose other assets."
        )
    return file


def check_stack(bands: Sequence[tuple[str, StackFile, int]], context: str) -> None:
    """Raise unless every band ``(label, file, band)`` is in one CRS and of one data type."""
    first = bands[0]
    for label, file, band in bands[1:]:
        if file.crs != first[1].crs:
            raise GeoreferenceError(
                f"{context}: assets {first[0]!r} ({first[1].crs}) and {label!r} "
                f"({file.crs}) are in different CRSs; geounet stacks assets of one CRS: choose "
                f"assets of one CRS, or reproject them first (gdalwarp -t_srs {first[1].crs})."
            )
    if len({file.dtypes[band - 1] for _, file, band in bands}) > 1:
        dtypes = {f"{label} ({file.dtypes[band - 1]})" for label, file, band in bands}
        raise UnsupportedFormatError(
            f"{context}: the assets asked for have different data types "
            f"({', '.join(sorted(dtypes))}); geounet reads all bands as one type: choose assets "
            "of one type, or convert them (gdal_translate -ot)."
        )


def stack_grid(files: Sequence[StackFile], context: str) -> tuple[Any, int, int]:
    """``(transform, width, height)``: the finest file's grid, cut to where every file has
    data (whole pixels of that grid)."""
    from affine import Affine

    ref = min(files, key=lambda f: abs(f.transform.determinant))  # the first of the finest
    if all(f.transform.almost_equals(ref.transform, precision=1e-9) and
           (f.width, f.height) == (ref.width, ref.height) for f in files):
        return ref.transform, ref.width, ref.height
    rotated = [f.key for f in files if f.transform.b or f.transform.d]
    if rotated:
        raise GeoreferenceError(
            f"{context}: asset(s) {', '.join(rotated)} have a rotated grid and the "
            "assets' grids differ; geounet stacks north-up grids only: warp them to one grid "
            "first (gdalwarp), or choose assets on one grid."
        )
    inverse = ~ref.transform
    boxes = []
    for f in files:
        (x0, y0), (x1, y1) = inverse * (f.transform * (0, 0)), inverse * (
            f.transform * (f.width, f.height))
        boxes.append((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    col0 = math.ceil(max(b[0] for b in boxes) - 1e-3)
    row0 = math.ceil(max(b[1] for b in boxes) - 1e-3)
    col1 = math.floor(min(b[2] for b in boxes) + 1e-3)
    row1 = math.floor(min(b[3] for b in boxes) + 1e-3)
    if col1 <= col0 or row1 <= row0:
        raise GeoreferenceError(
            f"{context}: the assets asked for ({', '.join(f.key for f in files)}) "
            "do not overlap on the map; choose assets that cover one area."
        )
    return ref.transform * Affine.translation(col0, row0), col1 - col0, row1 - row0


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else repr(float(value))


def _add_source(band: ET.Element, file: StackFile, source_band: str, grid: Any,
                resampling: str, nodata: float | None, *, transparent: bool = False) -> None:
    """Place ``file``'s band on the VRT grid: copied when its grid is the VRT's shifted by whole
    pixels, else resampled (``resampling``). Source pixels equal to ``nodata`` are left out of
    the resampling, and with ``transparent`` (always) not painted at all."""
    from geounet.raster.fitting import auto_resampling
    from geounet.raster.scene import resampling_of

    inverse = ~grid
    x0, y0 = inverse * (file.transform * (0, 0))
    x1, y1 = inverse * (file.transform * (file.width, file.height))
    same = (abs(x1 - x0 - file.width) < _SAME and abs(y1 - y0 - file.height) < _SAME
            and abs(x0 - round(x0)) < _SAME and abs(y0 - round(y0)) < _SAME)
    if same:
        x0, y0, x1, y1 = round(x0), round(y0), round(x1), round(y1)
    if same and not transparent:
        source = ET.SubElement(band, "SimpleSource")
    elif same:
        source = ET.SubElement(band, "ComplexSource")
    else:
        if resampling == "auto":
            resampling = auto_resampling(abs(file.transform.a), abs(grid.a))
        name = resampling_of(resampling).name  # InputError for an unknown name
        source = ET.SubElement(band, "ComplexSource",
                               resampling=_VRT_RESAMPLING.get(name, name))
    ET.SubElement(source, "SourceFilename", relativeToVRT="0").text = file.path
    ET.SubElement(source, "SourceBand").text = source_band
    ET.SubElement(source, "SrcRect", xOff="0", yOff="0", xSize=str(file.width),
                  ySize=str(file.height))
    ET.SubElement(source, "DstRect", xOff=_number(x0), yOff=_number(y0),
                  xSize=_number(x1 - x0), ySize=_number(y1 - y0))
    if nodata is not None and (transparent or not same):
        ET.SubElement(source, "NODATA").text = _number(nodata)


def stack_vrt(bands: Sequence[tuple[str, StackFile, int]], grid: Any, width: int, height: int,
              resampling: str = "auto") -> str:
    """The VRT XML of ``bands`` (``(label, file, band)``) on ``grid`` (an affine transform,
    ``width`` x ``height`` px): one VRT band each, the files' nodata kept, and one dataset
    mask valid where every masked file (internal mask or alpha) is."""
    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    ET.SubElement(root, "SRS").text = bands[0][1].crs.to_wkt()
    ET.SubElement(root, "GeoTransform").text = ", ".join(_number(v) for v in grid.to_gdal())
    for index, (label, file, band) in enumerate(bands, start=1):
        element = ET.SubElement(root, "VRTRasterBand", band=str(index),
                                dataType=_GDAL_TYPES.get(file.dtypes[band - 1], "Float64"))
        ET.SubElement(element, "Description").text = label
        nodata = file.nodata[band - 1]
        if nodata is not None:
            ET.SubElement(element, "NoDataValue").text = _number(nodata)
        if file.nbits[band - 1]:
            meta = ET.SubElement(element, "Metadata", domain="IMAGE_STRUCTURE")
            ET.SubElement(meta, "MDI", key="NBITS").text = str(file.nbits[band - 1])
        _add_source(element, file, str(band), grid, resampling, nodata)
    masked = list({file.path: file for _, file, _ in bands if file.masked}.values())
    if masked:
        mask = ET.SubElement(ET.SubElement(root, "MaskBand"), "VRTRasterBand", dataType="Byte")
        for order, file in enumerate(masked):
            # the first mask is painted whole; each later one only where it is 0 (its 255s are
            # "nodata", left as they are): 255 remains where every mask is 255
            _add_source(mask, file, "mask,1", grid, "nearest", None if order == 0 else 255.0,
                        transparent=order > 0)
    return ET.tostring(root, encoding="unicode")
