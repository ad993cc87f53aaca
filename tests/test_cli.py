"""The CLI skeleton: help, version, info, logging flags and clean errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
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


@pytest.mark.parametrize("argv", [
    ["segment", "missing.tif", "--out", "x.gpkg"],
    ["predict", "missing.tif", "--out", "x.zarr"],
    ["batch", "missing.txt", "--out-dir", "o"],
    ["segment", "missing.tif", "--out", "x.gpkg", "--precision", "fp64"],
])
def test_user_mistake_is_reported_before_torch_is_imported(argv, tmp_path) -> None:
    """A missing scene or a bad option is found before torch (1.8 s of imports) loads."""
    code = (
        "import sys; from click.testing import CliRunner; from geounet.cli.main import cli; "
        "r = CliRunner().invoke(cli, sys.argv[1:]); "
        "print(r.exit_code, 'torch' in sys.modules, 'distributed' in sys.modules); "
        "print(r.output)"
    )
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                         cwd=tmp_path, timeout=60).stdout
    status, torch_loaded, distributed_loaded = out.splitlines()[0].split()
    assert status != "0" and "Error:" in out and "Traceback" not in out, out
    assert torch_loaded == "False" and distributed_loaded == "False", out


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


def test_verbosity_flags_set_the_log_level(tmp_path) -> None:
    """-v shows debug records, default shows info, -q only warnings; each run logs to its own
    stderr (the handler follows sys.stderr, so a second invocation in one process still logs)."""
    runner = CliRunner()
    seen = {}
    for flag in ("-v", "", "-q", "-v"):
        out = tmp_path / f"scene{len(seen)}"
        args = [flag] if flag else []
        result = runner.invoke(cli, [*args, "synth", str(out), "--size", "64"])
        assert result.exit_code == 0, result.output
        seen[len(seen)] = result.stderr
    assert "DEBUG rendered window" in seen[0] and "INFO synthesized" in seen[0]
    assert "DEBUG" not in seen[1] and "INFO synthesized" in seen[1]
    assert seen[2] == ""
    assert "DEBUG rendered window" in seen[3]


def test_synth_user_mistake_is_one_clean_line(tmp_path) -> None:
    result = CliRunner().invoke(cli, ["synth", str(tmp_path / "s"), "--size", "64",
                                      "--crs", "EPSG:4326"])  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: CRS 'EPSG:4326' is not projected; synthetic scenes are laid out in metres: "
        "use a projected CRS such as a UTM zone (e.g. EPSG:32633)."
    ]
    assert not (tmp_path / "s").exists()


def test_library_warning_reaches_the_terminal_as_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import warnings

    from geounet.cli import main

    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # restored afterwards
    main.configure_logging(0)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("scene has no CRS; outputs are in pixel coordinates", UserWarning)
    err = capsys.readouterr().err
    assert err.strip() == "WARNING scene has no CRS; outputs are in pixel coordinates"
