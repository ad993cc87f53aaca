"""Describe the software stack and compute devices geounet runs on."""

from __future__ import annotations

import platform


def describe_environment() -> dict[str, str]:
    """Return versions of geounet and its stack, and the CUDA devices torch can see.

    Examples
    --------
    >>> env = describe_environment()
    >>> env["cuda"]  # doctest: +SKIP
    'no CUDA device (CPU only)'
    >>> {"geounet", "torch", "gdal", "dask", "zarr", "pyogrio"} <= set(env)
    True
    """
    import dask
    import distributed
    import pyogrio
    import rasterio
    import torch
    import xarray
    import zarr

    from geounet._version import __version__

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        cuda = f"{len(names)} device(s): " + ", ".join(names)
    else:
        cuda = "no CUDA device (CPU only)"
    return {
        "geounet": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": cuda,
        "cpu threads": str(torch.get_num_threads()),
        "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__,
        "dask": dask.__version__,
        "distributed": distributed.__version__,
        "xarray": xarray.__version__,
        "zarr": zarr.__version__,
        "pyogrio": pyogrio.__version__,
        "gdal (ogr)": pyogrio.__gdal_version_string__,
    }
