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
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from geounet.errors import InputError, SceneError
from geounet.raster.scene import SceneInfo, Stack, is_url, open_scene
from geounet.raster.stack import StackFile, check_stack, open_stack_file, stack_grid, stack_vrt

ReadText = Callable[[str], "str | None"]
"""Reads the text at a URL pystac cannot read itself (``s3://``), or None if it is missing."""

_API_ITEM = re.compile(r"/collections/[^/]+/items/[^/?#]+/?$")
_VSI = {"s3": "/vsis3/", "gs": "/vsigs/", "gcs": "/vsigs/", "az": "/vsiaz/",
        "azure": "/vsiaz/", "oss": "/vsioss/"}


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
            f"scene {href!r} is not a STAC item: it is not JSON ({exc}); --assets (assets=) "
            "is for STAC items (.json files or .../items/ID URLs): give an item, or drop --assets "
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
                f"{_describe_assets(item)}. Give --assets (assets=) as asset keys or "
                "common names, e.g. --assets red,green,blue."
            )
        chosen.append(found[0])
    return chosen


def _parse_assets(assets: str | Sequence[str] | None, item: Any) -> list[str]:
    names = [assets] if isinstance(assets, str) else list(assets or [])
    names = [n.strip() for part in names for n in str(part).split(",")]
    if not names or not all(names):
        raise InputError(
            f"STAC item {item.get_self_href()!r} needs --assets (assets=) naming the bands to "
            f"read, in the model's order (e.g. --assets red,green,blue); its assets: "
            f"{_describe_assets(item)}."
        )
    return names


def _stack_bands(choices: Sequence[_Choice], files: dict[str, StackFile], item_href: str
                 ) -> list[tuple[str, StackFile, int]]:
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
    check_stack(bands, f"STAC item {item_href!r}")
    return bands


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
    files: dict[str, StackFile] = {}
    for choice in choices:
        if choice.key not in files:
            asset_href = item.assets[choice.key].get_absolute_href()
            files[choice.key] = open_stack_file(choice.key, str(asset_href),
                                                gdal_path(str(asset_href)),
                                                f"STAC item {item_href!r}")
    bands = _stack_bands(choices, files, item_href)
    used = list({file.path: file for _, file, _ in bands}.values())
    grid, width, height = stack_grid(used, f"STAC item {item_href!r}")
    stack = Stack(stack_vrt(bands, grid, width, height, resampling),
                  tuple(file.path for file in used), tuple(label for label, _, _ in bands))
    return open_scene(item_href, stack=stack)
