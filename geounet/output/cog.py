"""The Cloud-Optimized GeoTIFF made from a prediction store: class band and probabilities,
the internal nodata mask, and the GDAL sidecar that makes band 1 categorical (colour table,
category names, thematic raster attribute table).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from geounet.config import NODATA_CLASS
from geounet.errors import OutputExistsError, option
from geounet.output.paths import remove_path, replace_path, temporary_path

log = logging.getLogger(__name__)

COG_BLOCK_SIZE = 512
COG_DEFLATE_LEVEL = 3
COG_CACHE_BYTES = 256 * 2**20
"""GDAL block cache while a COG is written: GDAL's default (5% of RAM) fills with the staging
file's blocks and grows the process with the scene (1.6 GB at 16384² on a 24 GB machine);
256 MiB keeps the write's memory flat from 4096² up (issue 11)."""
"""DEFLATE level of the published COG (with TIFF predictor 2): on realistic probabilities
3.5% larger than level 6 without a predictor, compressed in half the CPU time
(``benchmarks/bench_cog.py``; benchmarks/RESULTS.md, "Publishing the COG")."""


CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "background": (0, 0, 0),
    "buildings": (255, 40, 40),
    "roads": (255, 220, 0),
}
"""Display colours of known classes in the COG's colour table (others get a fixed palette);
the same as the quicklook's outlines (``geounet.output.quicklook.LAYER_COLORS``)."""
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
    keeps none of these inside a multi-band GeoTIFF.

    Memory holds one store chunk at a time, plus GDAL's block cache (``GDAL_CACHEMAX``). The
    bands are first written chunk by chunk into an uncompressed tiled staging GeoTIFF next to
    ``out``, in which GDAL builds the overviews (nearest); GDAL's COG driver then compresses
    it once into place, overviews copied as they are. The staging file takes about 4/3 of the
    raw pixel bytes on disk while it exists (1.4 GB for a 16384 x 16384 uint8 store of 3
    classes). The COG's bands use horizontal differencing (TIFF predictor 2, 3 for float32)
    and DEFLATE at level :data:`COG_DEFLATE_LEVEL`. GDAL compresses on one thread unless
    ``GDAL_NUM_THREADS`` is set.

    Parameters
    ----------
    store : prediction store (Zarr) written by :func:`~geounet.output.create_store` /
        :func:`~geounet.output.write_chunk`.
    out : the ``.tif`` to write; built as a hidden temporary file, renamed when complete.
    overwrite : replace an existing ``out``.
    block_size : tile side of the COG (and the overview threshold: overviews are added until
        the smallest fits in one tile).
    compress : ``DEFLATE`` (default) or ``ZSTD``.

    Examples
    --------
    >>> write_cog("pred.zarr", "pred.tif")  # doctest: +SKIP
    """
    import rasterio
    import rasterio.shutil
    import zarr

    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(
            f"output {str(out)!r} already exists; pass {option('overwrite', True)} to replace it."
        )
    group = zarr.open_group(str(store), mode="r")
    probs = group["probabilities"]
    mask = group["mask"]
    num_classes, height, width = probs.shape
    meta = dict(group.attrs.get("geounet", {}))
    classes = list(meta.get("classes", [f"class_{i}" for i in range(num_classes)]))
    chunk = int(meta.get("chunk_size", probs.chunks[1]))
    profile = _staging_profile(group, probs, block_size)
    staging = temporary_path(out, ".tiled.tif")
    partial = temporary_path(out)
    remove_path(staging)
    remove_path(partial)
    try:
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True, GDAL_CACHEMAX=COG_CACHE_BYTES):
            _write_staging(staging, profile, probs, mask, classes, chunk,
                           _overview_factors(height, width, block_size))
            rasterio.shutil.copy(
                staging,
                partial,
                driver="COG",
                BLOCKSIZE=block_size,
                OVERVIEWS="FORCE_USE_EXISTING",
                BIGTIFF="IF_SAFER",
                **_cog_options(compress),
            )
        _publish(partial, out, classes)
    finally:
        remove_path(staging)
        remove_path(partial)
        remove_path(temporary_path(out, ".aux.xml"))
    log.info("wrote COG %s (%d x %d, %d bands)", out, width, height, num_classes + 1)
    return out


def _cog_options(compress: str = "DEFLATE") -> dict[str, str]:
    """GDAL COG driver creation options of the published COG for ``compress``.

    ``PREDICTOR=YES`` is horizontal differencing (TIFF predictor 2 for integers, 3 for
    float32), which every TIFF reader decodes; DEFLATE at :data:`COG_DEFLATE_LEVEL`; ZSTD at
    GDAL's default level.
    """
    if compress.upper() == "ZSTD":
        return {"COMPRESS": "ZSTD", "PREDICTOR": "YES"}
    return {"COMPRESS": "DEFLATE", "PREDICTOR": "YES", "LEVEL": str(COG_DEFLATE_LEVEL)}


def _overview_factors(height: int, width: int, block_size: int) -> list[int]:
    """Decimation factors 2, 4, ... until the smallest overview fits in one ``block_size``
    tile (none for a raster that already does): as many levels as GDAL's COG driver makes."""
    factors: list[int] = []
    factor = 1
    while -(-height // factor) > block_size or -(-width // factor) > block_size:
        factor *= 2
        factors.append(factor)
    return factors


def _staging_profile(group: Any, probs: Any, block_size: int) -> dict[str, Any]:
    """The rasterio profile of the staging GeoTIFF: bands, tiles, georeference, uncompressed
    (the COG driver compresses once, from it)."""
    from affine import Affine

    num_classes, height, width = probs.shape
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
        "compress": "NONE",
        "BIGTIFF": "IF_SAFER",
        # grey + undefined bands: GDAL's default for 4 uint8 bands is RGB + alpha
        "photometric": "MINISBLACK",
    }
    if crs_wkt:
        profile["crs"] = crs_wkt
        profile["transform"] = Affine(a, b, c, d, e, f)
    return profile


def _write_staging(
    staging: Path,
    profile: dict[str, Any],
    probs: Any,
    mask: Any,
    classes: list[str],
    chunk: int,
    overview_factors: list[int],
) -> None:
    """Copy the store into the staging GeoTIFF one store chunk at a time, with its nodata mask,
    then build its overviews (nearest, the mask's too) at ``overview_factors``."""
    import rasterio
    from rasterio.enums import ColorInterp, Resampling
    from rasterio.windows import Window

    num_classes, height, width = probs.shape
    dtype = profile["dtype"]
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
        if overview_factors:
            dst.build_overviews(overview_factors, Resampling.nearest)


def _publish(partial: Path, out: Path, classes: list[str]) -> None:
    """Write the categorical sidecar ``OUT.aux.xml``, then rename the finished COG into place."""
    aux = Path(f"{out}.aux.xml")
    partial_aux = temporary_path(out, ".aux.xml")
    partial_aux.write_text(class_band_pam(classes))
    os.replace(partial_aux, aux)
    replace_path(partial, out)
