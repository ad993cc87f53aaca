"""The export cache of the ONNX Runtime / OpenVINO backends: a checkpoint exported to ONNX (and
converted to OpenVINO IR) once, cached next to it (``.geounet-cache/`` in its folder) or, when
that folder is not writable, under the user cache directory (``$XDG_CACHE_HOME/geounet``,
default ``~/.cache/geounet``), keyed by the checkpoint's SHA-256, the engine and its version;
a second load reuses it (:func:`export_count` counts the exports of this process).

The export has dynamic batch, height and width axes, so one cached file serves every tile size
(and the whole-scene reference used by the exactness tests).

Examples
--------
>>> cache_path("model.pt", "onnx", "ab" * 32).name  # doctest: +SKIP
'model-abababababababab-torch2.13.0-opset17.onnx'
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

log = logging.getLogger(__name__)

OPSET = 17
"""ONNX opset of the export."""

CACHE_DIR_NAME = ".geounet-cache"
"""Folder next to a checkpoint that holds its exports."""

_EXPORTS = {"count": 0}
_EXPORT_LOCK = threading.Lock()


def package_version(package: str) -> str:
    """Version string of an installed package (``unknown`` when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:  # pragma: no cover - the engine rules check it before
        return "unknown"


def export_count() -> int:
    """How many ONNX / OpenVINO exports this process has written (cache misses)."""
    return _EXPORTS["count"]


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/geounet`` (default ``~/.cache/geounet``): exports of checkpoints
    whose folder is not writable."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "geounet"


def checkpoint_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a checkpoint file (hex): :func:`geounet.model.checkpoint.file_sha256`."""
    from geounet.model.checkpoint import file_sha256

    return file_sha256(path)


def writable_dir(folder: Path) -> bool:
    """Whether ``folder`` exists (made if missing) and this process may write into it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)


def cache_path(checkpoint: str | os.PathLike[str], kind: str, digest: str | None = None) -> Path:
    """Where an export of ``checkpoint`` lives (the file may not exist yet).

    ``kind`` ``onnx``: ``<stem>-<sha256[:16]>-torch<version>-opset17.onnx`` (what wrote it: the
    file does not depend on ONNX Runtime's version); ``openvino``:
    ``<stem>-<sha256[:16]>-openvino<version>-torch<version>.xml`` (+ ``.bin``). The folder is
    ``.geounet-cache/`` next to the checkpoint, or :func:`user_cache_dir` when the checkpoint's
    folder is not writable.
    """
    checkpoint = Path(checkpoint)
    digest = digest or checkpoint_digest(checkpoint)
    torch_version = package_version("torch").split("+")[0]
    if kind == "onnx":
        name = f"{checkpoint.stem}-{digest[:16]}-torch{torch_version}-opset{OPSET}.onnx"
    else:
        name = (f"{checkpoint.stem}-{digest[:16]}-openvino{package_version('openvino')}"
                f"-torch{torch_version}.xml")
    folder = checkpoint.resolve().parent / CACHE_DIR_NAME
    if not writable_dir(folder):
        folder = user_cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
    return folder / name.replace("/", "_")


def export_onnx(model: nn.Module, path: Path, channels: int) -> None:
    """Write ``model`` as ONNX with dynamic batch, height and width to ``path`` (atomically)."""
    import torch

    cfg: Any = model.config
    size = 8 * cfg.alignment
    if cfg.padding == "valid":
        size = cfg.valid_input_sizes(max(size, cfg.min_input_size), max(size, cfg.min_input_size)
                                     + 4 * cfg.alignment)[0]
    example = torch.zeros(1, channels, size, size)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent, prefix=".part-")
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and deprecation chatter of torch.onnx
            torch.onnx.export(
                model.float().eval(), (example,), tmp, input_names=["x"], output_names=["logits"],
                dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "logits": {0: "n", 2: "oh", 3: "ow"}},
                opset_version=OPSET, dynamo=False,
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_openvino_ir(onnx_path: Path, xml: Path) -> None:
    """Convert ONNX ``onnx_path`` to OpenVINO IR ``xml`` (+ ``.bin``), each file written under
    a temporary name and renamed when complete."""
    ov = import_openvino()
    tmp = xml.with_name(f".part-{os.getpid()}-{xml.name}")
    ov.save_model(read_onnx(onnx_path), str(tmp), compress_to_fp16=False)
    os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
    os.replace(tmp, xml)


def exported_model(
    checkpoint: str | os.PathLike[str], model: nn.Module, channels: int, engine: str
) -> Path:
    """The cached export of ``checkpoint`` for ``engine``, written once (first load) and reused.

    ``onnxruntime`` opens the ONNX file; ``openvino`` its IR (``.xml``/``.bin``) converted from
    that ONNX file. Each is written under a temporary name and renamed when complete.
    """
    digest = checkpoint_digest(checkpoint)
    with _EXPORT_LOCK:
        onnx_path = cache_path(checkpoint, "onnx", digest)
        if engine == "openvino":
            xml = cache_path(checkpoint, "openvino", digest)
            if xml.is_file() and xml.with_suffix(".bin").is_file():
                return xml
        if not onnx_path.is_file():
            log.info("exporting %s to ONNX: %s", checkpoint, onnx_path)
            export_onnx(model, onnx_path, channels)
            _EXPORTS["count"] += 1
        if engine != "openvino":
            return onnx_path
        log.info("converting %s to OpenVINO IR: %s", onnx_path, xml)
        save_openvino_ir(onnx_path, xml)
        _EXPORTS["count"] += 1
        return xml


def temporary_checkpoint(model: nn.Module) -> tuple[Path, Path]:
    """Save the weights of a model built in memory (no checkpoint file) into a fresh temporary
    folder, so its exports have a file to be keyed by: ``(checkpoint, folder)``; the caller
    removes the folder (:func:`remove_folder`) when the backend opened from it is gone."""
    import torch

    folder = Path(tempfile.mkdtemp(prefix="geounet-export-"))
    checkpoint = folder / "model.pt"
    try:
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, checkpoint)
    except BaseException:
        remove_folder(folder)
        raise
    return checkpoint, folder


def remove_folder(folder: Path) -> None:
    """Remove a temporary export folder and everything in it (missing: nothing to do)."""
    shutil.rmtree(folder, ignore_errors=True)


def import_openvino() -> Any:
    """``import openvino`` without its model conversion tool.

    ``openvino/__init__.py`` imports ``openvino.tools.ovc`` for ``openvino.convert_model``, and
    that import sends a usage-telemetry event (``openvino_telemetry``: a forked copy of this
    process posting to Google Analytics) unless the user opted out with ``opt_in_out
    --opt_out``. geounet sends nothing anywhere and does not need the tool (it reads ONNX
    with the runtime's frontend, :func:`read_onnx`), so the first import here skips it: in
    this process ``openvino.convert_model`` is then missing; ``from openvino.tools.ovc import
    convert_model`` still works (and sends its event). An ``openvino`` already imported is
    returned as it is."""
    import sys

    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    blocked = "openvino.tools.ovc" not in sys.modules
    if blocked:
        sys.modules["openvino.tools.ovc"] = None  # type: ignore[assignment]  # ImportError
    try:
        import openvino
    finally:
        if blocked and sys.modules.get("openvino.tools.ovc", False) is None:
            del sys.modules["openvino.tools.ovc"]
    return openvino


def read_onnx(path: Path) -> Any:
    """An ONNX file as an OpenVINO model, by OpenVINO's ONNX frontend (``Core.read_model``;
    the same model as ``openvino.convert_model`` of the file without options, without the
    conversion tool: :func:`import_openvino`)."""
    return import_openvino().Core().read_model(str(path))
