"""CLI errors name CLI flags, never Python parameters (issue 22, item 5): a library error names
its fixes with ``geounet.errors.option``; ``str(error)`` gives the Python name and the flag,
the CLI only the command's own flag."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import click
import geopandas as gpd
import pytest
from click.testing import CliRunner
from shapely.geometry import box

from geounet.cli import main
from geounet.cli.main import cli
from geounet.errors import GeounetError, InputError, option, render_options
from geounet.testing import write_scene


def _one_line(result: object) -> str:
    output = result.output  # type: ignore[attr-defined]
    assert result.exit_code == 1, output  # type: ignore[attr-defined]
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, output
    return lines[0]


def test_an_option_reads_as_python_in_the_library_and_as_the_flag_on_the_cli() -> None:
    error = InputError(f"pass {option('max_pixels', 8_000)} or {option('allow_no_crs', True)}"
                       f" or {option('class_layers', flag='--class-layer')}")
    assert str(error) == ("pass max_pixels=8000 (--max-pixels 8000) or allow_no_crs=True "
                          "(--allow-no-crs) or class_layers (--class-layer)")
    flags = {"max_pixels": "--max-pixels", "class_layers": "--class-layer"}
    assert error.for_cli(flags.get) == "pass --max-pixels 8000 or --allow-no-crs or --class-layer"
    # the marks survive what errors go through: pickling (Dask tasks), copies (resume hints)
    for again in (pickle.loads(pickle.dumps(error)), copy.copy(error)):
        assert isinstance(again, GeounetError) and again.for_cli(flags.get) == \
            error.for_cli(flags.get)
    assert render_options("no marks") == "no marks"


def test_the_command_s_own_flag_is_used() -> None:
    @click.command()
    @click.option("--out-format", "vector_format")
    def boom(vector_format: str) -> None:
        raise InputError(f"use {option('vector_format', 'parquet', flag='--format')}")

    line = _one_line(CliRunner().invoke(main._translating(boom), []))
    assert line == "Error: use --out-format parquet"


def test_cli_errors_name_no_python_parameter(tmp_path: Path) -> None:
    runner = CliRunner()
    # chips: labels without the class layers -> --class-layer, not class_layers
    scene = write_scene(tmp_path / "s.tif", 64, 64)
    labels = tmp_path / "labels.gpkg"
    gpd.GeoDataFrame(geometry=[box(500_000, 4_999_990, 500_010, 5_000_000)],
                     crs="EPSG:32633").to_file(labels, layer="footprints")
    line = _one_line(runner.invoke(cli, ["chips", str(scene), str(labels), "--out",
                                         str(tmp_path / "chips")]))
    assert "--class-layer" in line and "class_layers" not in line, line
    # predict: no CRS -> --allow-no-crs; a run over the ceiling -> --max-pixels N
    bare = write_scene(tmp_path / "bare.tif", 64, 64, crs=None)
    line = _one_line(runner.invoke(cli, ["predict", str(bare), "--out",
                                         str(tmp_path / "p.zarr"), "--in-process"]))
    assert "--allow-no-crs" in line and "allow_no_crs" not in line, line
    line = _one_line(runner.invoke(cli, ["predict", str(scene), "--out", str(tmp_path / "q.zarr"),
                                         "--in-process", "--max-pixels", "1000"]))
    assert "--max-pixels 8192 (0 = no limit)" in line and "max_pixels" not in line, line
    # the library keeps both names
    from geounet import predict

    with pytest.raises(GeounetError) as caught:
        predict(bare, tmp_path / "r.zarr", client="synchronous")
    assert "allow_no_crs=True (--allow-no-crs)" in str(caught.value)
