"""Test helpers shipped with the package: tiny georeferenced scenes written through rasterio.

Used by geounet's own tests and usable in downstream tests. For realistic imagery with ground
truth use :mod:`geounet.synth`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DEFAULT_CRS = "EPSG:32633"  # WGS 84 / UTM zone 33N


def write_scene(
    path: str | Path,
    height: int,
    width: int,
    *,
    count: int = 3,
    dtype: str = "uint8",
    crs: str | None = DEFAULT_CRS,
    pixel_size: float = 0.5,
    origin: tuple[float, float] = (500_000.0, 5_000_000.0),
    nodata: float | None = None,
    nodata_border: int = 0,
    seed: int = 0,
    blocksize: int = 256,
    compress: str = "deflate",
) -> Path:
    """Write a smooth random multi-band GeoTIFF and return its path.

    Parameters
    ----------
    path : output file (.tif).
    height, width : scene size in pixels (odd sizes exercise edge tiles).
    count : number of bands.
    dtype : ``uint8`` or ``uint16`` (12-bit range).
    crs : CRS string, or None for a scene without georeferencing.
    pixel_size : metres (or CRS units) per pixel.
    origin : (x, y) of the upper-left corner.
    nodata : declared nodata value; with ``nodata_border`` the outer ring of that width is nodata.
    seed : random seed; the same seed gives the same bytes.

    Examples
    --------
    >>> p = write_scene(tmp_path / "s.tif", 257, 300)  # doctest: +SKIP
    """
    import rasterio
    from rasterio.transform import from_origin
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    top = 255 if dtype == "uint8" else 4095
    data = np.empty((count, height, width), dtype=dtype)
    for band in range(count):
        noise = gaussian_filter(rng.standard_normal((height, width)).astype(np.float32), 3.0)
        noise = (noise - noise.min()) / max(float(np.ptp(noise)), 1e-6)
        data[band] = np.clip(noise * (top - 2) + 1, 1, top).astype(dtype)
    if nodata is not None and nodata_border > 0:
        b = nodata_border
        data[:, :b, :] = nodata
        data[:, -b:, :] = nodata
        data[:, :, :b] = nodata
        data[:, :, -b:] = nodata
    profile = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": count,
        "dtype": dtype,
        "tiled": True,
        "blockxsize": blocksize,
        "blockysize": blocksize,
        "compress": compress,
    }
    if count == 4:  # a 4th band of data, not GDAL's default alpha (a mask) for 4 bands
        profile.update(photometric="RGB", alpha="UNSPECIFIED")
    if crs is not None:
        profile["crs"] = crs
        profile["transform"] = from_origin(origin[0], origin[1], pixel_size, pixel_size)
    if nodata is not None:
        profile["nodata"] = nodata
    path = Path(path)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def regrid(
    src: str | Path,
    dst: str | Path,
    *,
    crs: str | None = None,
    rotation: float = 0.0,
) -> Path:
    """Copy a GeoTIFF's pixels, tags and nodata unchanged under another georeferencing.

    The pixels stay where they are on the ground (to well under a pixel over test-sized
    scenes), so the source's truth stays aligned with the copy:

    - ``crs="EPSG:4326"`` (any geographic CRS): a north-up lon/lat grid centred on the
      source's centre, with degree steps giving the source's metre pixel sides there
      (geodesic, :mod:`geounet.georef`);
    - ``rotation`` (degrees, counter-clockwise, same CRS): the grid turned about its
      upper-left corner, i.e. a transform with rotation terms.

    Examples
    --------
    >>> regrid("scene.tif", "scene_4326.tif", crs="EPSG:4326")  # doctest: +SKIP
    >>> regrid("scene.tif", "scene_rot.tif", rotation=20)  # doctest: +SKIP
    """
    import rasterio
    from affine import Affine
    from pyproj import Transformer

    from geounet.georef import pixel_sides_m

    with rasterio.open(src) as s:
        profile = s.profile.copy()
        data = s.read()
        tags = s.tags()
        band_tags = [s.tags(i + 1) for i in range(s.count)]
        descriptions = s.descriptions
        t, height, width = s.transform, s.height, s.width
        source_crs = s.crs
    if crs is not None:
        col_m, row_m = pixel_sides_m(source_crs.to_wkt(), tuple(t)[:6], width / 2, height / 2)
        centre = t * (width / 2, height / 2)
        lon, lat = Transformer.from_crs(source_crs.to_wkt(), crs, always_xy=True).transform(
            *centre)
        east, north = pixel_sides_m(crs, (1.0, 0.0, lon, 0.0, 1.0, lat), 0, 0)  # m per degree
        dlon, dlat = col_m / east, row_m / north
        transform = Affine(dlon, 0.0, lon - dlon * width / 2, 0.0, -dlat, lat + dlat * height / 2)
        profile.update(crs=crs, transform=transform)
    if rotation:
        profile.update(transform=profile["transform"] * Affine.rotation(-rotation))
    dst = Path(dst)
    with rasterio.open(dst, "w", **profile) as d:
        d.write(data)
        d.update_tags(**tags)
        for i, band in enumerate(band_tags):
            d.update_tags(i + 1, **band)
        d.descriptions = descriptions
    return dst
