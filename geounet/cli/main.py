"""The ``geounet`` command group: lazy command loading, logging flags and error translation."""

from __future__ import annotations

import importlib
import logging
import sys
import warnings
from typing import Any

import click

from geounet._version import __version__
from geounet.errors import GeounetError, PredictionKeptError

# command name -> "module:attribute"; modules are imported only when the command runs,
# so `geounet --help` never imports torch, dask or GDAL.
COMMANDS: dict[str, str] = {
    "info": "geounet.cli.info:info",
    "synth": "geounet.cli.synth:synth",
    "predict": "geounet.cli.predict:predict",
    "segment": "geounet.cli.segment:segment",
    "vectorize": "geounet.cli.vectorize:vectorize",
    "chips": "geounet.cli.chips:chips",
    "train": "geounet.cli.train:train",
    "evaluate": "geounet.cli.evaluate:evaluate",
    "batch": "geounet.cli.batch:batch",
}

SHORT_HELP: dict[str, str] = {
    "info": "Show versions of geounet and its stack, and CUDA devices.",
    "synth": "Write a synthetic georeferenced scene with ground truth.",
    "predict": "Run the U-Net over a scene into Zarr or a Cloud-Optimized GeoTIFF.",
    "segment": "Segment a scene end to end into GeoPackage polygons.",
    "vectorize": "Turn a prediction raster into seam-free polygons, centerlines and a road graph.",
    "chips": "Cut a scene and vector labels into labelled training chips.",
    "train": "Train the U-Net on labelled chips.",
    "evaluate": "Score a prediction against ground truth (IoU, F1, object F1).",
    "batch": "Segment many scenes (paths, globs, s3:// URLs, manifests) in one job.",
}


class GeounetCommandError(click.ClickException):
    """A library error shown to the user as one clean line."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["geounet_argv"] = list(args)  # for the exact --resume command
        return super().parse_args(ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if _module_exists(COMMANDS[name])]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None or not _module_exists(target):
            return None
        module_name, attr = target.split(":")
        command = getattr(importlib.import_module(module_name), attr)
        command.short_help = SHORT_HELP.get(cmd_name, command.short_help)
        return _translating(command)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SHORT_HELP.get(name, "")) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _module_exists(target: str) -> bool:
    from importlib.util import find_spec

    return find_spec(target.split(":")[0]) is not None


def _translating(command: click.Command) -> click.Command:
    """Wrap a command's callback so GeounetError becomes a clean message and exit code 1."""
    callback = command.callback
    if callback is None or getattr(callback, "_geounet_wrapped", False):
        return command

    flags = command_flags(command)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except PredictionKeptError as exc:
            logging.getLogger("geounet").debug("error details", exc_info=True)
            raise GeounetCommandError(
                f"{exc.for_cli(flags.get)} Finish with: {resume_command()}") from exc
        except GeounetError as exc:
            logging.getLogger("geounet").debug("error details", exc_info=True)
            raise GeounetCommandError(exc.for_cli(flags.get) + _resume_command(exc)) from exc
        except KeyboardInterrupt as exc:
            store = getattr(exc, "geounet_kept_store", None)
            if store is None:
                raise
            click.echo(f"Interrupted; the finished prediction is kept in {store}. "
                       f"Finish the job with: {resume_command()}", err=True)
            raise click.exceptions.Exit(130) from None

    wrapped._geounet_wrapped = True  # type: ignore[attr-defined]
    wrapped.__doc__ = callback.__doc__
    command.callback = wrapped
    return command


def command_flags(command: click.Command) -> dict[str, str]:
    """Python parameter name -> the command's flag (``class_layers`` -> ``--class-layer``): how
    a library error's :func:`geounet.errors.option` fixes are written on this command line."""
    flags = {}
    for param in command.params:
        long = [o for o in param.opts if o.startswith("--")] if isinstance(param, click.Option) \
            else []
        if param.name and long:
            flags[param.name] = max(long, key=len)
    return flags


def resume_command() -> str:
    """The command line of the running geounet command with ``--resume`` added (the exact
    command that finishes a job whose prediction was kept)."""
    import shlex

    ctx = click.get_current_context(silent=True)
    argv = list(ctx.find_root().meta.get("geounet_argv", [])) if ctx is not None else []
    if not argv:
        return "the same geounet command with --resume"
    if "--resume" not in argv:
        argv.append("--resume")
    return shlex.join(["geounet", *argv])


def _resume_command(exc: BaseException) -> str:
    """`` Resume with: geounet ... --resume`` for an error that kept a run's chunks, else ''."""
    if not getattr(exc, "resume_store", None):
        return ""
    return " Resume with: " + resume_command()


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at emit time (CliRunner swaps it per invocation)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ assigns it; ignore
        pass


def configure_logging(verbosity: int) -> None:
    """Send geounet's log records to stderr at a level set by -v/-q.

    ``-q`` (verbosity < 0): warnings and errors; default: info; ``-v``: debug.
    """
    level = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}[max(-1, min(1, verbosity))]
    logger = logging.getLogger("geounet")
    logger.setLevel(level)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        logger.addHandler(handler)
    warnings.showwarning = _show_warning


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """Show library warnings (no CRS, pixel size off, ...) as one log line, not a source dump."""
    logging.getLogger("geounet").warning("%s", message)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="geounet")
@click.option("-v", "--verbose", "verbose", count=True, help="More log output (debug).")
@click.option("-q", "--quiet", "quiet", count=True, help="Only warnings and errors; no progress bar.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: int) -> None:
    """geounet: find roads and buildings in satellite scenes.

    Seamless, exact tiled U-Net inference in bounded memory, from a GeoTIFF of any size to
    GeoPackage polygons. Run `geounet COMMAND --help` for each command.
    """
    verbosity = verbose - quiet
    ctx.obj = {"verbosity": verbosity, "quiet": verbosity < 0}
    configure_logging(verbosity)
