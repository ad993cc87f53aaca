"""Label geometries -> class masks: read vector labels, reproject, buffer lines, burn onto a grid.

Shared by training (:mod:`geounet.training.chips`, per-chip vector labels in
:mod:`geounet.training.layout`) and scoring (:mod:`geounet.evaluation`). Polygons are burnt as
they are; lines are buffered by their ``width`` attribute (metres) or ``line_width``.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geounet.errors import GeoreferenceError, InputError, LabelError, option

DEFAULT_CLASS_LAYERS: dict[str, str] = {"buildings": "buildings", "roads": "roads"}
"""Class name -> GeoPackage layer; class indices follow this order after ``background`` (0)."""


@dataclass(frozen=True)
class ClassShapes:
    """Label geometries of one class, in the target CRS, ready to burn.

    Attributes
    ----------
    index : class index burnt into the mask (1 for the first class layer).
    name : class name.
    geometries : shapely polygons (lines already buffered).
    """

    index: int
    name: str
    geometries: tuple[Any, ...]



def check_class_layers(class_layers: Mapping[str, str]) -> None:
    if not class_layers:
        raise InputError("class_layers is empty; give at least one, e.g. {'buildings': 'buildings'}.")
    if len(class_layers) > 254:
        raise InputError(f"{len(class_layers)} classes do not fit a uint8 mask; use at most 254.")
    if "background" in class_layers:
        raise InputError(
            "class 'background' is reserved for index 0; name the class layers otherwise."
        )


def load_label_shapes(
    labels: str | os.PathLike[str],
    crs: Any,
    *,
    class_layers: Mapping[str, str] | None = None,
    line_width: float | None = None,
) -> list[ClassShapes]:
    """Read label layers, reproject them to ``crs`` and buffer lines into polygons.

    Parameters
    ----------
    labels : GeoPackage (or any multi-layer vector file pyogrio reads).
    crs : target CRS (the scene's), anything :mod:`pyproj` accepts.
    class_layers : class name -> layer name; class index = position + 1.
    line_width : metres; width of line features without a ``width`` attribute.

    Returns
    -------
    One :class:`ClassShapes` per class layer found (missing layers warn; all missing raises).

    Examples
    --------
    >>> shapes = load_label_shapes("truth.gpkg", "EPSG:32633")  # doctest: +SKIP
    """
    import geopandas as gpd
    import pyogrio
    from pyproj import CRS

    class_layers = dict(DEFAULT_CLASS_LAYERS if class_layers is None else class_layers)
    check_class_layers(class_layers)
    path = Path(labels)
    if not path.exists():
        raise LabelError(f"label file {str(path)!r} does not exist; give a GeoPackage path.")
    try:
        available = {str(row[0]) for row in pyogrio.list_layers(path)}
    except Exception as exc:  # pyogrio raises DataSourceError and friends
        raise LabelError(
            f"label file {str(path)!r} cannot be read as a vector file ({exc}); "
            "give a GeoPackage with one layer per class."
        ) from exc
    if crs is None:
        raise GeoreferenceError(
            "the scene has no CRS, so labels cannot be placed on it; georeference the scene first."
        )
    target = CRS.from_user_input(crs)
    result: list[ClassShapes] = []
    for index, (name, layer) in enumerate(class_layers.items(), start=1):
        if layer not in available:
            warnings.warn(
                f"label layer {layer!r} for class {name!r} is not in {str(path)!r} "
                f"(layers: {sorted(available)}); the class gets no labels.",
                stacklevel=2,
            )
            result.append(ClassShapes(index, name, ()))
            continue
        gdf = gpd.read_file(path, layer=layer)
        if gdf.crs is None:
            raise LabelError(
                f"label layer {layer!r} has no CRS; set one (e.g. with ogr2ogr -a_srs) first."
            )
        gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
        result.append(ClassShapes(index, name, tuple(_to_polygons(gdf, target, line_width, layer))))
    if not any(layer in available for layer in class_layers.values()):
        raise LabelError(
            f"none of the label layers {sorted(class_layers.values())} is in {str(path)!r} "
            f"(layers: {sorted(available)}); map each class to a layer of the file with "
            f"{option('class_layers', flag='--class-layer')}, e.g. buildings=footprints."
        )
    return result


def _to_polygons(gdf: Any, target: Any, line_width: float | None, layer: str) -> list[Any]:
    """Reproject to ``target``; buffer lines by ``width`` (metres) or ``line_width``."""
    import geopandas as gpd

    if len(gdf) == 0:
        return []
    kinds = gdf.geometry.geom_type
    is_line = kinds.isin(["LineString", "MultiLineString", "LinearRing"]).to_numpy()
    is_area = kinds.isin(["Polygon", "MultiPolygon"]).to_numpy()
    if not (is_line | is_area).all():
        bad = sorted(set(kinds[~(is_line | is_area)]))
        raise LabelError(
            f"layer {layer!r} has {bad} geometries; labels must be polygons or lines."
        )
    out: list[Any] = list(gdf[is_area].to_crs(target).geometry)
    if is_line.any():
        lines = gdf[is_line]
        if "width" in lines.columns:
            widths = lines["width"].astype(float).to_numpy()
        else:
            widths = np.full(len(lines), np.nan)
        if line_width is not None:
            widths = np.where(np.isnan(widths), float(line_width), widths)
        if np.isnan(widths).any() or (widths <= 0).any():
            raise LabelError(
                f"layer {layer!r} has line features without a positive 'width' attribute; "
                f"give {option('line_width', 6)} (metres)."
            )
        metric = target if (target.is_projected and _unit_is_metre(target)) else None
        if metric is None:
            metric = gpd.GeoSeries(lines.geometry, crs=lines.crs).to_crs(4326).estimate_utm_crs()
        buffered = gpd.GeoSeries(lines.geometry, crs=lines.crs).to_crs(metric).buffer(widths / 2.0)
        out.extend(buffered.to_crs(target))
    return [g for g in out if g is not None and not g.is_empty]


def _unit_is_metre(crs: Any) -> bool:
    try:
        return crs.axis_info[0].unit_name in ("metre", "meter")
    except (IndexError, AttributeError):
        return False


def rasterize_shapes(
    shapes: Sequence[ClassShapes], transform: Any, height: int, width: int
) -> np.ndarray:
    """Burn class shapes onto a grid: uint8 mask, 0 background, later classes on top.

    Parameters
    ----------
    shapes : from :func:`load_label_shapes`, in the grid's CRS.
    transform : affine transform of the grid (e.g. a chip window's transform).
    height, width : grid size in pixels.

    Examples
    --------
    >>> mask = rasterize_shapes(shapes, transform, 256, 256)  # doctest: +SKIP
    """
    from rasterio.features import rasterize
    from rasterio.transform import array_bounds
    from shapely.geometry import box

    mask = np.zeros((height, width), dtype=np.uint8)
    if height == 0 or width == 0:
        return mask
    window = box(*array_bounds(height, width, transform))
    for cls in sorted(shapes, key=lambda c: c.index):
        geoms = [g for g in cls.geometries if g.intersects(window)]
        if geoms:
            rasterize(
                [(g, cls.index) for g in geoms], out=mask, transform=transform, dtype=np.uint8
            )
    return mask


VECTOR_SUFFIXES = (".geojson", ".json", ".gpkg", ".shp", ".fgb")
"""File suffixes read as vector labels (per chip, or one file for all chips)."""


def load_class_shapes(
    labels: str | os.PathLike[str],
    crs: Any,
    classes: Sequence[str],
    *,
    line_width: float | None = None,
) -> list[ClassShapes]:
    """Read a vector label file for ``classes`` (``background`` first), in ``crs``.

    The rule, in order: layers named like foreground classes give those classes; else the
    (first) layer is read, and a ``class`` column naming the classes (or holding their
    indices) assigns each feature; else, with one foreground class, every feature is that
    class. Results are cached per file, CRS and classes (per-chip labels are read once).

    Parameters
    ----------
    labels : GeoJSON, GeoPackage, or any vector file pyogrio reads.
    crs : the grid's CRS.
    classes : class names in index order, ``background`` first.
    line_width : metres; width of line features without a ``width`` attribute.

    Raises
    ------
    LabelError : unreadable file, no CRS, unknown class values, or several foreground
        classes and no way to tell them apart.

    Examples
    --------
    >>> shapes = load_class_shapes("chip_001.geojson", "EPSG:4326",
    ...                            ("background", "buildings"))  # doctest: +SKIP
    """
    from pyproj import CRS

    if crs is None:
        raise GeoreferenceError(
            f"vector labels {str(labels)!r} need an image with a CRS to be placed on; "
            "georeference the images or give raster masks."
        )
    path = Path(labels)
    return _load_class_shapes(str(path.resolve()), path.stat().st_mtime_ns,
                              CRS.from_user_input(crs).to_wkt(), tuple(classes), line_width)


@functools.lru_cache(maxsize=256)
def _load_class_shapes(path: str, mtime: int, crs_wkt: str, classes: tuple[str, ...],
                       line_width: float | None) -> list[ClassShapes]:
    import geopandas as gpd
    import pyogrio
    from pyproj import CRS

    target = CRS.from_wkt(crs_wkt)
    foreground = classes[1:]
    try:
        layers = [str(row[0]) for row in pyogrio.list_layers(path)]
    except Exception as exc:  # pyogrio raises DataSourceError and friends
        raise LabelError(f"vector labels {path!r} cannot be read ({exc}); give GeoJSON or "
                         "a GeoPackage.") from exc
    named = {c: c for c in foreground if c in layers}
    if named:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a class absent from one chip is normal
            shapes = load_label_shapes(path, target, class_layers=named, line_width=line_width)
        by_name = {s.name: s.geometries for s in shapes}
        return [ClassShapes(i, c, tuple(by_name.get(c, ()))) for i, c in
                enumerate(foreground, start=1)]
    gdf = gpd.read_file(path, layer=layers[0]) if layers else gpd.GeoDataFrame()
    if len(gdf) == 0:
        return [ClassShapes(i, c, ()) for i, c in enumerate(foreground, start=1)]
    if gdf.crs is None:
        raise LabelError(f"vector labels {path!r} have no CRS; set one (ogr2ogr -a_srs) first.")
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    if "class" in gdf.columns:
        values = gdf["class"].astype(str)
        index = {c: i for i, c in enumerate(classes)} | {str(i): i for i in
                                                       range(1, len(classes))}
        unknown = sorted(set(values) - set(index) - {"background", "0"})
        if unknown:
            raise LabelError(
                f"vector labels {path!r} have class values {unknown[:5]} that are not among "
                f"the classes {list(classes)}; name them with {option('classes')}."
            )
        ids = values.map(index).fillna(0).astype(int)
    elif len(foreground) == 1:
        ids = np.ones(len(gdf), dtype=int)
    else:
        raise LabelError(
            f"vector labels {path!r} have one layer {layers[0]!r} without a 'class' column, "
            f"but the model has {len(foreground)} foreground classes {list(foreground)}; add a "
            f"'class' column, name the layers after the classes, or give one foreground class "
            f"with {option('classes')}, e.g. background,buildings."
        )
    ids = np.asarray(ids)
    return [ClassShapes(i, c, tuple(_to_polygons(gdf[ids == i], target, line_width, c)))
            for i, c in enumerate(foreground, start=1)]


def rasterize_file(
    labels: str | os.PathLike[str],
    crs: Any,
    transform: Any,
    height: int,
    width: int,
    classes: Sequence[str],
    *,
    line_width: float | None = None,
) -> np.ndarray:
    """Burn a vector label file onto a grid: uint8 class mask (see :func:`load_class_shapes`)."""
    shapes = load_class_shapes(labels, crs, classes, line_width=line_width)
    return rasterize_shapes(shapes, transform, height, width)
