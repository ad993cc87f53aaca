"""The CLI skeleton: help, version, info, logging flags and clean errors."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from geounet import __version__
from geounet.cli.main import cli


def test_help_lists_commands() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0, result.output
    assert "info" in result.output
    assert "Commands" in result.output


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_info_reports_stack() -> None:
    result = CliRunner().invoke(cli, ["info"])
    assert result.exit_code == 0, result.output
    for key in ("geounet", "torch", "gdal", "rasterio", "dask", "zarr", "pyogrio", "cuda"):
        assert key in result.output


def test_help_does_not_import_heavy_modules() -> None:
    code = (
        "import sys; from click.testing import CliRunner; from geounet.cli.main import cli;"
        "r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0;"
        "heavy = [m for m in ('torch', 'dask', 'rasterio', 'zarr') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_library_error_is_one_clean_line() -> None:
    import click

    from geounet.cli import main
    from geounet.errors import InputError

    @click.command()
    def boom() -> None:
        raise InputError("tile size 500 is not valid; use 508")

    wrapped = main._translating(boom)
    result = CliRunner().invoke(wrapped, [])
    assert result.exit_code == 1
    assert "Error: tile size 500 is not valid; use 508" in result.output
    assert "Traceback" not in result.output
