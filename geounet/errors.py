"""All geounet exceptions: one root, each subclass also a fitting builtin.

Messages name the value, the rule and the fix, e.g. ``tile size 500 is not valid for a
depth-4 valid-padding U-Net (input sizes are 16k+12); use 492 or 508``. The CLI turns any
:class:`GeounetError` into one clean line and a non-zero exit code; code never branches on
message text, only on the class.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import TypeVar

_MARK = "\x1f"
_OPTION = re.compile(f"{_MARK}([^{_MARK}]*){_MARK}")
_NO_VALUE = object()
_T = TypeVar("_T")


def option(name: str, value: object = _NO_VALUE, *, flag: str | None = None) -> str:
    """A fix naming the parameter ``name`` (and a ``value`` to give it) inside an error message.

    ``str(error)`` writes it for the Python API and the CLI together, ``name=value (--flag
    value)``; the CLI writes only the command's own flag, ``--flag value``
    (:meth:`GeounetError.for_cli`), so a command line never names a Python parameter.
    ``flag`` is the CLI's spelling when it is not ``--`` + ``name`` with dashes.

    Examples
    --------
    >>> str(InputError(f"pass {option('resample', 'always')} to force it"))
    "pass resample='always' (--resample always) to force it"
    >>> InputError(f"pass {option('allow_no_crs', True)}").for_cli(lambda name: None)
    'pass --allow-no-crs'
    """
    text = None if value is _NO_VALUE else repr(value)
    cli = None if value is _NO_VALUE or value is True else str(value)
    flag = flag or "--" + name.replace("_", "-")
    return f"{_MARK}{json.dumps([name, text, flag, cli])}{_MARK}"


def render_options(message: str, flag_of: Callable[[str], str | None] | None = None) -> str:
    """``message`` with its :func:`option` marks written out: for the Python API and the CLI
    together (``flag_of`` None), or as CLI flags, ``flag_of(name)`` giving the command's flag
    for a parameter (None: the mark's own spelling)."""

    def write(match: re.Match[str]) -> str:
        name, text, flag, cli = json.loads(match.group(1))
        command_line = f"{flag} {cli}" if cli is not None else flag
        if flag_of is None:
            python = name if text is None else f"{name}={text}"
            return f"{python} ({command_line})"
        own = flag_of(name)
        if own is not None:
            command_line = f"{own} {cli}" if cli is not None else own
        return command_line

    return _OPTION.sub(write, message)


class GeounetError(Exception):
    """Root of every error geounet raises on purpose.

    Its message may name fixes with :func:`option`: ``str(error)`` writes them for both the
    Python API and the CLI, :meth:`for_cli` as the command's flags only.
    """

    def __str__(self) -> str:
        return render_options(super().__str__())

    @property
    def raw_message(self) -> str:
        """The message with its :func:`option` marks, to extend and re-raise."""
        return super().__str__()

    def for_cli(self, flag_of: Callable[[str], str | None]) -> str:
        """The message as a command line shows it: each :func:`option` as the command's flag
        (``flag_of(name)``, or the mark's own spelling)."""
        return render_options(super().__str__(), flag_of)


class InputError(GeounetError, ValueError):
    """A value given by the user breaks a rule (size, band index, option combination)."""


class TileSizeError(InputError):
    """A tile, chunk or chip size the model cannot use."""


class RunTooLargeError(InputError):
    """A planned run would compute more model pixels than its ceiling (``max_pixels``)."""


class SceneError(GeounetError, OSError):
    """A scene is missing, unreadable, corrupt or truncated."""


class GeoreferenceError(InputError):
    """A raster lacks the georeferencing a step needs (no CRS, no transform)."""


class IncompatibleSceneError(InputError):
    """A scene does not fit a model card (band count, dtype range, pixel size)."""


class CheckpointError(GeounetError, ValueError):
    """A file is not a geounet checkpoint, or is truncated or corrupt."""


class OutputExistsError(GeounetError, FileExistsError):
    """An output already exists and overwriting was not asked for."""


class UnsupportedFormatError(InputError):
    """An input or output format geounet cannot read or write."""


class LabelError(InputError):
    """Training labels or chips that do not fit (missing pairs, unknown classes, no overlap)."""


class DeviceError(GeounetError, RuntimeError):
    """A requested compute device is not available."""


class TransientError(GeounetError, OSError):
    """An I/O failure that may pass (a remote read, a network hiccup, a lost worker).

    Retried with backoff a bounded number of times before it ends a run; the run's completed
    chunks are kept for ``--resume``.
    """


class ClusterError(GeounetError, RuntimeError):
    """A Dask scheduler or its workers cannot run geounet (unreachable, versions differ)."""


class EngineError(DeviceError):
    """A requested inference engine (ONNX Runtime, OpenVINO) is not installed or cannot run."""


class PredictionKeptError(GeounetError, RuntimeError):
    """A step after prediction (vectorizing, writing the COG) failed; the finished prediction
    is kept under its resumable name (:attr:`store`) and ``resume=True`` (``--resume``)
    finishes the job without predicting again."""

    def __init__(self, message: str, store: str = "") -> None:
        super().__init__(message)
        self.store = store


class UnknownOptionError(InputError, TypeError):
    """A keyword that names no field of the options object it is a shorthand for."""


def with_settings(cls: type[_T], options: _T | None, settings: Mapping[str, object],
                  function: str) -> _T:
    """The options object a call runs with: ``options`` (default ``cls()``) with the keyword
    shorthands ``settings`` (field names of the frozen dataclass ``cls``) replaced in it.

    The one rule for ``f(..., options=None, **settings)``: an unknown name raises
    :class:`UnknownOptionError` naming it and the valid fields; the values are validated by
    ``cls.__post_init__``.
    """
    import dataclasses

    if options is not None and not isinstance(options, cls):
        raise UnknownOptionError(
            f"{function}() got options of type {type(options).__name__}; give a "
            f"geounet.{cls.__name__} (or its fields as keywords)."
        )
    fields = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(settings) - set(fields))
    if unknown:
        raise UnknownOptionError(
            f"{function}() got unknown option(s) {', '.join(unknown)}; give fields of "
            f"geounet.{cls.__name__} ({', '.join(fields)})."
        )
    if options is None:
        return cls(**settings)
    return dataclasses.replace(options, **settings) if settings else options  # type: ignore[type-var]
