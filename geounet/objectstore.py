"""Object storage (``s3://``) for batch outputs: URLs, the S3 file system, and uploads that
appear under their final key only when complete.

Scenes are read from ``s3://bucket/key.tif`` by GDAL itself: rasterio maps the URL to
``/vsis3/bucket/key.tif`` (HTTP range reads, so a COG is read block by block), so
:mod:`geounet.raster` needs nothing special. Writes go through fsspec/s3fs.

Configuration is the usual AWS environment: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION``, and for an S3-compatible server (MinIO, Ceph, moto) an endpoint, given either
the boto way (``AWS_ENDPOINT_URL=http://host:9000``) or the GDAL way (``AWS_S3_ENDPOINT=host:9000``
with ``AWS_HTTPS=NO``, ``AWS_VIRTUAL_HOSTING=FALSE``). :func:`configure_environment` fills in
whichever of the two is missing, so GDAL (reading scenes) and s3fs (writing outputs) reach the
same server.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from geounet.errors import InputError

SCHEMES = ("s3://",)
"""URL schemes geounet writes to."""


def is_s3(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an ``s3://`` URL."""
    return os.fspath(path).startswith("s3://")


def join(base: str, *names: str) -> str:
    """Join a local folder or an ``s3://`` prefix with names (``/`` separators for URLs)."""
    if is_s3(base):
        return "/".join([base.rstrip("/"), *names])
    return str(Path(base).joinpath(*names))


def configure_environment(environ: Any = None) -> None:
    """Make GDAL's and boto's endpoint variables agree (fill in whichever is missing).

    ``AWS_ENDPOINT_URL=http://127.0.0.1:9000`` gives ``AWS_S3_ENDPOINT=127.0.0.1:9000``,
    ``AWS_HTTPS=NO`` and ``AWS_VIRTUAL_HOSTING=FALSE`` (path-style, as S3-compatible servers
    need); ``AWS_S3_ENDPOINT`` with ``AWS_HTTPS`` gives ``AWS_ENDPOINT_URL``. Variables already
    set are never changed. Call it before starting workers so they inherit the result.
    """
    env = os.environ if environ is None else environ
    url = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    host = env.get("AWS_S3_ENDPOINT")
    if url and not host:
        scheme, _, rest = url.partition("://")
        env["AWS_S3_ENDPOINT"] = rest.rstrip("/")
        env.setdefault("AWS_HTTPS", "NO" if scheme == "http" else "YES")
        env.setdefault("AWS_VIRTUAL_HOSTING", "FALSE")
    elif host and not url:
        secure = env.get("AWS_HTTPS", "YES").upper() not in ("NO", "FALSE", "OFF", "0")
        env["AWS_ENDPOINT_URL"] = host if "://" in host else (
            f"{'https' if secure else 'http'}://{host}")


def storage_options() -> dict[str, Any]:
    """Keyword arguments for ``s3fs.S3FileSystem`` from the environment (endpoint, region)."""
    configure_environment()
    options: dict[str, Any] = {}
    client_kwargs: dict[str, Any] = {}
    url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if url:
        client_kwargs["endpoint_url"] = url
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        client_kwargs["region_name"] = region
    if client_kwargs:
        options["client_kwargs"] = client_kwargs
    if os.environ.get("AWS_VIRTUAL_HOSTING", "").upper() in ("FALSE", "NO", "0", "OFF"):
        options["config_kwargs"] = {"s3": {"addressing_style": "path"}}
    return options


def filesystem() -> Any:
    """An ``s3fs.S3FileSystem`` configured from the environment (no listing cache; one
    instance per process and configuration, as fsspec caches them).

    Raises
    ------
    InputError
        If s3fs is not installed.
    """
    try:
        import s3fs
    except ImportError as exc:  # pragma: no cover - s3fs is in the "s3" extra
        raise InputError(
            "writing to s3:// needs the s3fs package; install it with "
            "`pip install geounet[s3]` (or `pip install s3fs`)."
        ) from exc
    return s3fs.S3FileSystem(use_listings_cache=False, **storage_options())


def _key(url: str) -> str:
    return url[len("s3://"):] if is_s3(url) else url


def exists(url: str) -> bool:
    """Whether an object (or a prefix with objects) exists at ``url``; local paths too."""
    if not is_s3(url):
        return Path(url).exists()
    fs = filesystem()
    return bool(fs.exists(_key(url)))


def listing(url: str) -> set[str]:
    """Names directly under a local folder or ``s3://`` prefix (empty if there is none)."""
    if not is_s3(url):
        folder = Path(url)
        return {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    fs = filesystem()
    try:
        entries = fs.ls(_key(url), detail=False)
    except FileNotFoundError:
        return set()
    return {entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries}


def read_text(url: str) -> str | None:
    """The text of a local file or object, or None if it does not exist."""
    if not is_s3(url):
        path = Path(url)
        return path.read_text() if path.is_file() else None
    fs = filesystem()
    try:
        with fs.open(_key(url), "r") as handle:
            return str(handle.read())
    except FileNotFoundError:
        return None


def write_text(url: str, text: str) -> None:
    """Write a small text file or object atomically (local: written aside, then renamed)."""
    if not is_s3(url):
        path = Path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        partial.write_text(text)
        os.replace(partial, path)
        return
    fs = filesystem()
    fs.pipe_file(_key(url), text.encode())  # one PUT: visible only when complete


def remove(url: str) -> None:
    """Delete a local path or every object under an ``s3://`` key/prefix, if present."""
    if not is_s3(url):
        from geounet.output import remove_path

        remove_path(url)
        return
    fs = filesystem()
    key = _key(url)
    if fs.exists(key):
        fs.rm(key, recursive=True)


def upload(local: str | os.PathLike[str], url: str) -> None:
    """Copy a finished local file or Zarr store to ``url``; the result appears only complete.

    A file is one PUT (S3 makes an object visible only when its upload completes). A Zarr
    store is uploaded with its metadata last: chunks first, then each array's ``zarr.json``,
    then the group's own ``zarr.json`` (which holds the consolidated metadata). Until that last
    object lands, nothing under ``url`` opens as a Zarr group, so a reader never sees a
    partial store. An existing store at ``url`` is deleted first.
    """
    local = Path(local)
    fs = filesystem()
    key = _key(url).rstrip("/")
    if local.is_file():
        fs.put_file(str(local), key)
        return
    if fs.exists(key):
        fs.rm(key, recursive=True)
    files = sorted(p for p in local.rglob("*") if p.is_file())
    root_meta = [p for p in files if p.parent == local and p.name in ("zarr.json", ".zgroup",
                                                                        ".zmetadata", ".zattrs")]
    meta = [p for p in files if p.name in ("zarr.json", ".zarray", ".zattrs", ".zgroup")
            and p not in root_meta]
    data = [p for p in files if p not in meta and p not in root_meta]
    for group in (data, meta, root_meta):
        if group:
            fs.put([str(p) for p in group],
                   [f"{key}/{p.relative_to(local).as_posix()}" for p in group])
