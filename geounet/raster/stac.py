"""STAC items as scenes: the assets named by the user stacked into one raster (a GDAL VRT).

A STAC item (``item.json``, local or at a URL: ``s3://``, ``http(s)://``) keeps one file per
band or group of bands (its *assets*, usually COGs). :func:`open_item` parses it with pystac
(relative asset hrefs are taken from where the item was read), picks the assets asked for
(by asset key, else by the ``eo:bands`` common name or band name), opens each file's metadata
through GDAL, and describes one :class:`~geounet.raster.SceneInfo` whose
:class:`~geounet.raster.Stack` is a VRT with one band per asset band, in the order asked.
Every later step (the model card check, the warp to the model's pixel size, windows, the
store) sees one multi-band raster.

The stack's grid:

- every asset must be in one CRS (assets in different CRSs are refused, naming them; reproject
  them first, e.g. with ``gdalwarp -t_srs``);
- the grid is the finest asset's (the first of the finest when several share it), cut to where
  every asset has data (their intersection, in whole pixels of that grid);
- a band on that grid (or on a whole-pixel shift of it) is copied as it is; a coarser band (a
  20 m band beside 10 m ones) is resampled onto it by the VRT with the resampling the run uses
  (``auto``: lanczos when enlarging, :func:`geounet.raster.fitting.auto_resampling`);
- nodata is each asset's own; internal masks and alpha bands of assets are combined (a pixel
  is valid where every masked asset's mask is), alpha bands are never stack bands.

The files are read by GDAL as any scene is: ``s3://`` through ``/vsis3/`` (the AWS variables
of :mod:`geounet.objectstore`), ``http(s)://`` through ``/vsicurl/``.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from geounet.errors import (
    GeoreferenceError,
    GeounetError,
    InputError,
    SceneError,
    UnsupportedFormatError,
)
from geounet.raster.scene import SceneInfo, Stack, check_complete, gdal_env, is_url, open_scene

ReadText = Callable[[str], "str | None"]
"""Reads the text at a URL pystac cannot read itself (``s3://``), or None if it is missing."""

_API_ITEM = re.compile(r"/collections/[^/]+/items/[^/?#]+/?$")
_VSI = {"s3": "/vsis3/", "gs": "/vsigs/", "gcs": "/vsigs/", "az": "/vsiaz/",
        "azure": "/vsiaz/", "oss": "/vsioss/"}
_VRT_RESAMPLING = {"cubic_spline": "cubicspline"}
_SAME = 1e-6  # pixels: grids closer than this are one grid


def is_stac_item(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a STAC item: a ``.json`` file or URL, or a STAC API item URL
    (``.../collections/C/items/ID``).

    Examples
    --------
    >>> is_stac_item("item.json"), is_stac_item("https://h/v1/collections/s2/items/S2B_1")
    (True, True)
    >>> is_stac_item("scene.tif")
    False
    """
    text = os.fspath(path).split("?", 1)[0].split("#", 1)[0]
    return text.lower().endswith(".json") or bool(_API_ITEM.search(text))


def gdal_path(href: str) -> str:
    """The GDAL name of an asset href: ``s3://b/k`` -> ``/vsis3/b/k``, ``https://...`` ->
    ``/vsicurl/https://...``, a local path made absolute (VRT sources are absolute).

    Examples
    --------
    >>> gdal_path("s3://bucket/b04.tif"), gdal_path("https://h/b04.tif")
    ('/vsis3/bucket/b04.tif', '/vsicurl/https://h/b04.tif')
    """
    if href.startswith("/vsi"):
        return href
    scheme, sep, rest = href.partition("://")
    if not sep:
        return os.path.abspath(href)
    scheme = scheme.lower()
    if scheme in ("http", "https"):
        return "/vsicurl/" + href
    if scheme == "file":
        return rest
    if scheme in _VSI:
        return _VSI[scheme] + rest
    raise InputError(
        f"asset href {href!r} has a scheme GDAL cannot read ({scheme}://); use a local path, "
        "s3://, gs://, az:// or http(s):// hrefs."
    )


def read_item(href: str | os.PathLike[str], *, read_text: ReadText | None = None) -> Any:
    """Parse the STAC item at ``href`` (a ``pystac.Item`` whose self href is ``href``, so its
    relative asset hrefs resolve against where it was read).

    ``read_text`` reads URLs other than local files and ``http(s)://`` (``s3://``...);
    default: fsspec with its own configuration (:func:`geounet.objectstore.read_text` reads
    ``s3://`` with geounet's, as predict and batch do).

    Raises
    ------
    SceneError
        The item is missing, unreadable or not JSON.
    InputError
        The JSON is no single STAC item (a Collection, Catalog or ItemCollection).
    """
    import pystac

    href = os.fspath(href)
    href = href if is_url(href) else os.path.abspath(href)
    data = _item_json(href, read_text)
    kind = data.get("type") if isinstance(data, dict) else None
    if kind != "Feature" or "assets" not in data:
        what = {"FeatureCollection": "an ItemCollection (several items)",
                "Collection": "a STAC Collection", "Catalog": "a STAC Catalog"}.get(
                    str(kind), "JSON but no STAC item (no 'type': 'Feature' with 'assets')")
        raise InputError(
            f"scene {href!r} is {what}; give one STAC item (its .json file, or its "
            ".../collections/C/items/ID URL), whose assets --assets names."
        )
    # the item is where it was read: a stale self link must not move its relative hrefs
    data["links"] = [link for link in data.get("links") or []
                     if not (isinstance(link, dict) and link.get("rel") == "self")]
    try:
        return pystac.Item.from_dict(data, href=href, migrate=True, preserve_dict=False)
    except Exception as exc:  # noqa: BLE001 - pystac raises several classes for bad items
        raise SceneError(
            f"STAC item {href!r} cannot be parsed ({type(exc).__name__}: {exc}); check it with "
            "a STAC validator (stac-validator) or re-export it."
        ) from exc


def _fsspec_text(url: str) -> str:
    import fsspec

    with fsspec.open(url, "r") as handle:
        return str(handle.read())


def _item_json(href: str, read_text: ReadText | None) -> Any:
    from pystac.stac_io import DefaultStacIO

    scheme = href.partition("://")[0].lower() if "://" in href else ""
    try:
        if scheme and scheme not in ("http", "https", "file"):
            text = read_text(href) if read_text is not None else _fsspec_text(href)
            if text is None:
                raise FileNotFoundError(href)
        else:
            text = DefaultStacIO().read_text(href)
    except UnicodeDecodeError:
        text = "\0"  # binary: not JSON (below)
    except FileNotFoundError:
        raise SceneError(
            f"STAC item {href!r} does not exist; check the path or URL (relative paths are "
            f"taken from {os.getcwd()!r})."
        ) from None
    except Exception as exc:  # noqa: BLE001 - urllib, s3fs and the OS raise many classes
        raise SceneError(
            f"STAC item {href!r} cannot be read ({type(exc).__name__}: {exc}); check the URL "
            "and the access settings (for s3:// the AWS_* variables, docs/batch.md)."
        ) from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise SceneError(
            f"scene {href!r} is not a STAC item: it is not JSON ({exc}); --assets is for "
            "STAC items (.json files or .../items/ID URLs): give an item, or drop --assets "
            "to read a raster."
        ) from None


# --------------------------------------------------------------------------------------
# choosing the bands
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Choice:
    """One name of ``assets``: the asset that holds it and which of its bands (None: all)."""

    name: str
    key: str
    band: int | None


def _band_names(asset: Any) -> list[set[str]]:
    """Per band of an asset, the names it answers to (``eo:bands``/``bands``: common name,
    name), lower-case."""
    entries = asset.extra_fields.get("eo:bands") or asset.extra_fields.get("bands") or []
    names = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            names.append(set())
            continue
        found = {entry.get("common_name"), entry.get("eo:common_name"), entry.get("name")}
        names.append({str(n).lower() for n in found if n})
    return names


def _describe_assets(item: Any) -> str:
    parts = []
    for key, asset in item.assets.items():
        common = sorted({n for names in _band_names(asset) for n in names} - {key.lower()})
        parts.append(f"{key} ({', '.join(common)})" if common else key)
    return ", ".join(parts) or "none"


def choose_assets(item: Any, names: Sequence[str]) -> list[_Choice]:
    """The asset (and band) of each name: an asset key (exact, else ignoring case), else a band
    whose ``eo:bands`` common name or name it is (a single-band asset before a band of a
    multi-band one).

    Raises
    ------
    InputError
        A name no asset answers to (the available assets are listed), or one several do.
    """
    keys = {key.lower(): key for key in item.assets}
    chosen = []
    for name in names:
        if name in item.assets or name.lower() in keys:
            chosen.append(_Choice(name, name if name in item.assets else keys[name.lower()],
                                  None))
            continue
        single, multi = [], []
        for key, asset in item.assets.items():
            bands = _band_names(asset)
            for index, band_names in enumerate(bands):
                if name.lower() in band_names:
                    (single if len(bands) == 1 else multi).append(
                        _Choice(name, key, None if len(bands) == 1 else index + 1))
        found = single or multi
        if len(found) != 1:
            problem = ("no asset or band named" if not found else
                       f"several assets ({', '.join(c.key for c in found)}) with a band named")
            raise InputError(
                f"STAC item {item.get_self_href()!r} has {problem} {name!r}; its assets: "
                f"{_describe_assets(item)}. Give --assets as asset keys or common names, "
                "e.g. --assets red,green,blue."
            )
        chosen.append(found[0])
    return chosen


def _parse_assets(assets: str | Sequence[str] | None, item: Any) -> list[str]:
    names = [assets] if isinstance(assets, str) else list(assets or [])
    names = [n.strip() for part in names for n in str(part).split(",")]
    if not names or not all(names):
        raise InputError(
            f"STAC item {item.get_self_href()!r} needs --assets naming the bands to read, in "
            f"the model's order (e.g. --assets red,green,blue); its assets: "
            f"{_describe_assets(item)}."
        )
    return names


# --------------------------------------------------------------------------------------
# the files and their stack
# --------------------------------------------------------------------------------------

_GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16",
               "uint32": "UInt32", "int32": "Int32", "uint64": "UInt64", "int64": "Int64",
               "float32": "Float32", "float64": "Float64"}


@dataclass(frozen=True)
class _File:
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


def _open_file(key: str, href: str, item_href: str) -> _File:
    import rasterio
    from rasterio.enums import MaskFlags
    from rasterio.errors import NotGeoreferencedWarning

    path = gdal_path(href)
    try:
        with gdal_env(path=path), warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                if not is_url(path):
                    check_complete(ds, path)  # a truncated local file fails now, not mid-run
                alpha = tuple(ci.name == "alpha" for ci in ds.colorinterp)
                file = _File(
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
            f"asset {key!r} of STAC item {item_href!r} ({href}) cannot be opened as a raster "
            f"({type(exc).__name__}: {exc}); check its href and, for s3:// or http(s):// "
            "assets, the access settings (the AWS_* variables, docs/batch.md)."
        ) from exc
    if file.crs is None or tuple(file.transform)[:6] == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0):
        raise GeoreferenceError(
            f"asset {key!r} of STAC item {item_href!r} ({href}) has no CRS or geotransform, so "
            "it cannot be stacked with the others by its place on the map; georeference the "
            "file (gdal_edit.py -a_srs EPSG:XXXX -a_ullr ...) or choose other assets."
        )
    return file


def _stack_bands(choices: Sequence[_Choice], files: dict[str, _File], item_href: str
                 ) -> list[tuple[str, _File, int]]:
    """``(label, file, band)`` for every band of the stack, in the order asked."""
    bands = []
    for choice in choices:
        file = files[choice.key]
        count = len(file.dtypes)
        indexes = ([choice.band] if choice.band is not None
                   else [b for b in range(1, count + 1) if not file.alpha[b - 1]])
        if not indexes or any(b > count for b in indexes):
            raise SceneError(
                f"asset {choice.key!r} of STAC item {item_href!r} ({file.href}) has "
                f"{count} band(s), none of them the band {choice.name!r} asked for; check "
                "its eo:bands or give the asset key in --assets."
            )
        base = choice.key if choice.name == choice.key else f"{choice.name}={choice.key}"
        many = count - sum(file.alpha) > 1
        bands += [(f"{base}:{b}" if many else base, file, b) for b in indexes]
    first = bands[0]
    for label, file, band in bands[1:]:
        if file.crs != first[1].crs:
            raise GeoreferenceError(
                f"STAC item {item_href!r}: assets {first[0]!r} ({first[1].crs}) and {label!r} "
                f"({file.crs}) are in different CRSs; geounet stacks assets of one CRS: choose "
                f"assets of one CRS, or reproject them first (gdalwarp -t_srs {first[1].crs})."
            )
    if len({file.dtypes[band - 1] for _, file, band in bands}) > 1:
        dtypes = {f"{label} ({file.dtypes[band - 1]})" for label, file, band in bands}
        raise UnsupportedFormatError(
            f"STAC item {item_href!r}: the assets asked for have different data types "
            f"({', '.join(sorted(dtypes))}); geounet reads all bands as one type: choose assets "
            "of one type, or convert them (gdal_translate -ot)."
        )
    return bands


def _stack_grid(files: Sequence[_File], item_href: str) -> tuple[Any, int, int]:
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
            f"STAC item {item_href!r}: asset(s) {', '.join(rotated)} have a rotated grid and the "
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
            f"STAC item {item_href!r}: the assets asked for ({', '.join(f.key for f in files)}) "
            "do not overlap on the map; choose assets that cover one area."
        )
    return ref.transform * Affine.translation(col0, row0), col1 - col0, row1 - row0


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else repr(float(value))


def _add_source(band: ET.Element, file: _File, source_band: str, grid: Any,
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


def stack_vrt(bands: Sequence[tuple[str, _File, int]], grid: Any, width: int, height: int,
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


def open_item(href: str | os.PathLike[str], assets: str | Sequence[str] | None, *,
              resampling: str = "auto", read_text: ReadText | None = None) -> SceneInfo:
    """The scene of a STAC item: the bands ``assets`` names, stacked on one grid.

    Parameters
    ----------
    href : the item: a local ``.json`` file or a URL (``s3://``, ``http(s)://``).
    assets : asset keys or ``eo:bands`` common names, in the model's band order
        (``["red", "green", "blue"]`` or ``"red,green,blue"``); an asset of several bands
        gives all of them (alpha bands left out).
    resampling : how a coarser asset is resampled onto the finest one's grid (a GDAL name);
        ``auto``: lanczos (enlarging, :func:`geounet.raster.fitting.auto_resampling`).
    read_text : reads an item at a URL that is neither local nor ``http(s)://`` (``s3://``).

    Returns
    -------
    SceneInfo
        ``path`` is the item's; ``stack`` holds the VRT every read opens.

    Raises
    ------
    SceneError, InputError, GeoreferenceError, UnsupportedFormatError
        The item or an asset is missing or unreadable; an asset name is unknown (the item's
        assets are listed); assets in different CRSs, of different types, or not overlapping.

    Examples
    --------
    >>> info = open_item("item.json", "red,green,blue")  # doctest: +SKIP
    >>> info.stack.bands  # doctest: +SKIP
    ('red=B04', 'green=B03', 'blue=B02')
    """
    item = read_item(href, read_text=read_text)
    item_href = str(item.get_self_href())
    choices = choose_assets(item, _parse_assets(assets, item))
    files: dict[str, _File] = {}
    for choice in choices:
        if choice.key not in files:
            asset_href = item.assets[choice.key].get_absolute_href()
            files[choice.key] = _open_file(choice.key, str(asset_href), item_href)
    bands = _stack_bands(choices, files, item_href)
    used = list({file.path: file for _, file, _ in bands}.values())
    grid, width, height = _stack_grid(used, item_href)
    stack = Stack(stack_vrt(bands, grid, width, height, resampling),
                  tuple(file.path for file in used), tuple(label for label, _, _ in bands))
    return open_scene(item_href, stack=stack)
