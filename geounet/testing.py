"""Test helpers shipped with the package: tiny georeferenced scenes written through rasterio.

Used by geounet's own tests and usable in downstream tests. For realistic imagery with ground
truth use :mod:`geounet.synth`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
    holes: Sequence[tuple[slice, slice]] = (),
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
    holes : ``(rows, cols)`` slices (e.g. ``numpy.s_[64:128, :90]``) set to ``nodata`` too.
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
    if holes and nodata is None:
        raise ValueError("holes need a nodata value to mark them; pass nodata=...")
    for rows, cols in holes:
        data[:, rows, cols] = nodata
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


class DaskProcesses:
    """A real ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1, for tests.

    The scheduler listens on a free port and writes a scheduler file; each worker is a plain
    process (no nanny, one thread) started in ``worker_cwd`` (by default a directory of its
    own, so tasks cannot rely on the client's working directory), with ``env`` added to this
    process's environment. Use as a context manager, or call :meth:`close`.

    Examples
    --------
    >>> with DaskProcesses(tmp_path, workers=2) as dask_cluster:  # doctest: +SKIP
    ...     geounet.segment("s/scene.tif", "o.gpkg", client=dask_cluster.address)
    """

    def __init__(self, folder: str | Path, *, workers: int = 2, worker_cwd: str | Path | None = None,
                 env: dict[str, str] | None = None, timeout: float = 120.0) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.worker_cwd = Path(worker_cwd) if worker_cwd else self.folder / "worker-cwd"
        self.worker_cwd.mkdir(parents=True, exist_ok=True)
        self.env = dict(env or {})
        self.timeout = timeout
        self.workers: list[Any] = []
        self.scheduler: Any = None
        self.address = ""
        self._logs: list[Any] = []
        try:
            self._start_scheduler()
            for _ in range(workers):
                self.start_worker(wait=False)
            self.wait_for_workers(workers)
        except BaseException:
            self.close()
            raise

    def _popen(self, args: list[str], name: str, cwd: Path) -> Any:
        import os
        import subprocess
        import sys

        log = open(self.folder / f"{name}.log", "ab")  # noqa: SIM115 - closed in close()
        self._logs.append(log)
        return subprocess.Popen([sys.executable, "-m", "dask", *args], cwd=cwd,
                                env={**os.environ, **self.env}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def _start_scheduler(self) -> None:
        import json
        import time

        file = self.folder / "scheduler.json"
        file.unlink(missing_ok=True)
        self.scheduler = self._popen(
            ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(file)], "scheduler", self.folder)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.scheduler.poll() is not None:
                raise RuntimeError(f"dask scheduler exited; see {self.folder / 'scheduler.log'}")
            try:
                self.address = json.loads(file.read_text())["address"]
                return
            except (OSError, ValueError, KeyError):
                time.sleep(0.1)
        raise TimeoutError(f"dask scheduler did not start in {self.timeout} s")

    def start_worker(self, *, wait: bool = True) -> Any:
        """Start one more worker process; return its ``Popen``."""
        name = f"worker-{len(self.workers)}"
        proc = self._popen(
            ["worker", self.address, "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1",
             "--no-dashboard", "--name", name, "--local-directory",
             str(self.folder / name)], name, self.worker_cwd)
        self.workers.append(proc)
        if wait:
            self.wait_for_workers(len(self.alive()))
        return proc

    def alive(self) -> list[Any]:
        """The worker processes still running."""
        return [proc for proc in self.workers if proc.poll() is None]

    def kill_worker(self, proc: Any) -> None:
        """SIGKILL a worker process (as a pre-empted node would die)."""
        import signal

        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=self.timeout)

    def wait_for_workers(self, count: int) -> None:
        """Block until ``count`` running workers have registered with the scheduler (read from
        their logs, so this helper needs no Dask client)."""
        import time

        deadline = time.monotonic() + self.timeout
        while True:
            registered = [
                proc for proc in self.alive()
                if b"Registered to" in (self.folder / f"worker-{self.workers.index(proc)}.log")
                .read_bytes()
            ]
            if len(registered) >= count:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(registered)} of {count} worker(s) registered; "
                                   f"see the logs in {self.folder}")
            time.sleep(0.1)

    def close(self) -> None:
        """Stop every process started here (terminate, then kill) and close their logs."""
        import subprocess

        for proc in [*self.workers, self.scheduler]:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in [*self.workers, self.scheduler]:
            if proc is None:
                continue
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for log in self._logs:
            log.close()
        self._logs.clear()

    def __enter__(self) -> DaskProcesses:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


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

    from geounet.georef import metres_per_degree, pixel_sides_m

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
        east, north = metres_per_degree(crs, lon, lat)
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


def write_prediction_store(path: str | Path, mask: np.ndarray, probabilities: np.ndarray, *,
                           chunk: int, transform: Any, crs: str = DEFAULT_CRS,
                           classes: Sequence[str] = ("background", "buildings", "roads")
                           ) -> Path:
    """A Zarr prediction store as ``geounet predict`` lays it out (``mask`` (y, x) uint8,
    ``probabilities`` (class, y, x), georeferenced, chunked ``chunk``), for tests of the
    readers of a prediction (vectorize, evaluate)."""
    import rioxarray  # noqa: F401  (registers .rio)
    import xarray as xr

    height, width = mask.shape
    ds = xr.Dataset(
        {"mask": (("y", "x"), mask), "probabilities": (("class", "y", "x"), probabilities)},
        coords={"y": transform.f + transform.e * (np.arange(height) + 0.5),
                "x": transform.c + transform.a * (np.arange(width) + 0.5)},
    )
    ds = ds.rio.write_crs(crs).rio.write_transform(transform).rio.write_coordinate_system()
    ds.attrs["geounet"] = {"classes": list(classes), "chunk_size": chunk}
    encoding = {"mask": {"chunks": (chunk, chunk)},
                "probabilities": {"chunks": (len(classes), chunk, chunk)}}
    ds.to_zarr(path, encoding=encoding, consolidated=False)
    return Path(path)
