"""Open scenes and read windows with a mirrored halo and a valid-pixel mask.

Everything outside the scene is filled by whole-sample symmetric mirroring (``np.pad`` mode
``"symmetric"``: the edge pixel is repeated, ``... 2 1 0 | 0 1 2 ...``), repeated as often as
needed, so a window of any size anywhere equals the same window cut from
``np.pad(scene, width, mode="symmetric")``. The engine and the whole-scene reference use this
one mirror (:data:`MIRROR_MODE`).

Windows are read clipped to the scene with rasterio (``boundless=True`` is 3.9x slower) and the
outside part is filled with numpy by index mirroring.

A scene may be a *view* of its file: :class:`Warp` (a GDAL WarpedVRT at the model's pixel size,
or the grid of a GCP-georeferenced scene) and :class:`Rescale` (values mapped into the model's
range). Both are plain values in :class:`SceneInfo`, so tasks pickle them and open the view
themselves; :mod:`geounet.raster.fitting` decides them.

The package's modules, one job each: :mod:`~geounet.raster.scene` (opening a scene, its
metadata and views, the GDAL settings of a read), :mod:`~geounet.raster.window` (reading a
window with its halo and valid mask) and :mod:`~geounet.raster.mirror` (the one border
mirror). Every public name is importable from ``geounet.raster``. How local and remote
scenes are opened (sidecars, directory listing): :mod:`~geounet.raster.scene`.
"""

from __future__ import annotations

from geounet.raster.mirror import MIRROR_MODE, mirror_indices, mirror_pad
from geounet.raster.rescale import Rescale
from geounet.raster.scene import (
    MIN_CACHE_BYTES,
    REMOTE_PREFIXES,
    SceneInfo,
    Warp,
    block_cache_bytes,
    gdal_env,
    is_remote,
    is_url,
    open_scene,
    warped,
)
from geounet.raster.window import close_datasets, read_window

__all__ = [
    "MIN_CACHE_BYTES",
    "MIRROR_MODE",
    "REMOTE_PREFIXES",
    "Rescale",
    "SceneInfo",
    "Warp",
    "block_cache_bytes",
    "close_datasets",
    "gdal_env",
    "is_remote",
    "is_url",
    "mirror_indices",
    "mirror_pad",
    "open_scene",
    "read_window",
    "warped",
]
