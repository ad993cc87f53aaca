"""Tests for ``geounet predict`` / ``geounet segment`` through click's CliRunner."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from test_pipeline import make_checkpoint

from geounet.cli.main import cli

FAST = ["--in-process", "--precision", "fp32", "--chunk-size", "64"]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("cli_models") / "m.pt")


@pytest.mark.parametrize("suffix", [".zarr", ".tif"])
def test_predict_writes_georeferenced_output(make_scene: Callable[..., Path], tmp_path: Path,
                                             model: Path, suffix: str) -> None:
    scene = make_scene(130, 150)
    out = tmp_path / f"pred{suffix}"
    result = CliRunner().invoke(cli, ["predict", str(scene), "--out", str(out), "--model",
                                      str(model), *FAST])
    assert result.exit_code == 0, result.output
    assert "MP/s" in result.output and "9 chunks" in result.output
    with rasterio.open(scene) as src:
        crs, transform = src.crs, src.transform
    if suffix == ".zarr":
        from geounet.output import open_prediction

        ds = open_prediction(out)
        assert ds.rio.crs == crs and tuple(ds.rio.transform())[:6] == tuple(transform)[:6]
        assert ds.mask.shape == (130, 150) and set(np.unique(ds.mask.values)) <= {0, 1, 2}
    else:
        with rasterio.open(out) as dst:
            assert dst.crs == crs and dst.transform == transform
            assert dst.descriptions[0] == "class" and dst.count == 4


def test_quiet_prints_nothing(make_scene: Callable[..., Path], tmp_path: Path,
                              model: Path) -> None:
    scene = make_scene(70, 60)
    result = CliRunner().invoke(cli, ["-q", "predict", str(scene), "-o",
                                      str(tmp_path / "p.zarr"), "--model", str(model), *FAST])
    assert result.exit_code == 0 and result.output == ""


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--model", "MODEL", "SCENE_MISSING"], "does not exist"),
        (["--model", "MODEL", "--tile-size", "63", "SCENE"], "tile size 63"),
        (["--model", "MODEL", "--out-suffix", ".png", "SCENE"], ".zarr"),
    ],
)
def test_bad_input_is_one_clean_line(make_scene: Callable[..., Path], tmp_path: Path,
                                     model: Path, args: list[str], needle: str) -> None:
    scene = make_scene(70, 60)
    out = tmp_path / "p.zarr"
    if "--out-suffix" in args:
        i = args.index("--out-suffix")
        out = tmp_path / f"p{args[i + 1]}"
        args = args[:i] + args[i + 2:]
    args = [
        str(model) if a == "MODEL" else str(scene) if a == "SCENE" else
        str(tmp_path / "missing.tif") if a == "SCENE_MISSING" else a for a in args
    ]
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(cli, ["predict", *args, "--out", str(out), *FAST])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], lines
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_overwrite_flag(make_scene: Callable[..., Path], tmp_path: Path, model: Path) -> None:
    scene = make_scene(70, 60)
    args = ["predict", str(scene), "-o", str(tmp_path / "p.tif"), "--model", str(model), *FAST]
    assert CliRunner().invoke(cli, args).exit_code == 0
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 1 and "--overwrite" in again.output
    assert CliRunner().invoke(cli, [*args, "--overwrite"]).exit_code == 0


def test_option_validation(make_scene: Callable[..., Path], tmp_path: Path) -> None:
    scene = make_scene(70, 60)
    result = CliRunner().invoke(cli, ["predict", str(scene), "-o", str(tmp_path / "p.zarr"),
                                      "--scheduler", "nonsense"])
    assert result.exit_code == 2 and "scheduler address" in result.output
    both = CliRunner().invoke(cli, ["predict", str(scene), "-o", str(tmp_path / "p.zarr"),
                                    "--scheduler", "tcp://127.0.0.1:1", "--in-process"])
    assert both.exit_code == 2 and "--in-process" in both.output
    remote = CliRunner().invoke(cli, ["predict", str(scene), "-o", str(tmp_path / "p.zarr"),
                                      "--scheduler", "tcp://127.0.0.1:1", "--workers", "2"])
    assert remote.exit_code == 1 and "--workers" in remote.output and "tcp://127.0.0.1:1" in \
        remote.output


def test_segment_help_shares_options() -> None:
    result = CliRunner().invoke(cli, ["segment", "--help"])
    assert result.exit_code == 0
    for option in ("--raster-out", "--chunk-size", "--tile-size", "--resume", "--workers",
                   "--scheduler", "--in-process", "--allow-no-crs", "--overwrite"):
        assert option in result.output


@pytest.mark.parametrize("raster", [None, "pred.tif", "pred.zarr"])
def test_segment_writes_gpkg_and_optional_raster(make_scene: Callable[..., Path], tmp_path: Path,
                                                 model: Path, raster: str | None) -> None:
    import pyogrio

    scene = make_scene(100, 90)
    out = tmp_path / "objects.gpkg"
    extra = ["--raster-out", str(tmp_path / raster)] if raster else []
    result = CliRunner().invoke(cli, ["segment", str(scene), "-o", str(out), "--model",
                                      str(model), *extra, *FAST])
    assert result.exit_code == 0, result.output
    layers = {name for name, _ in pyogrio.list_layers(out)}
    assert {"buildings", "roads"} <= layers
    with rasterio.open(scene) as src:
        assert pyogrio.read_info(out, layer="buildings")["crs"] == f"EPSG:{src.crs.to_epsg()}"
    sidecar = [f"{raster}.aux.xml"] if raster and raster.endswith(".tif") else []
    expected = sorted([scene.name, out.name, *([raster] if raster else []), *sidecar])
    assert sorted(p.name for p in tmp_path.iterdir()) == expected


@pytest.mark.parametrize(
    "case, needle",
    [
        ("truncated", "truncated"),
        ("directory", "is a directory"),
        ("two_bands", "pass --bands"),
        ("chunk", "chunk size 30 is not a positive multiple of 4"),
        ("txt_out", "'.txt'"),
        ("big_tile", "larger than the chunk size"),
        ("no_crs", "--allow-no-crs"),
    ],
)
def test_user_mistakes_give_one_line_and_leave_nothing(
    make_scene: Callable[..., Path], tmp_path: Path, model: Path, case: str, needle: str
) -> None:
    scene = make_scene(70, 60)
    out = tmp_path / "p.zarr"
    extra: list[str] = []
    if case == "truncated":
        data = scene.read_bytes()
        scene.write_bytes(data[: len(data) // 2])
    elif case == "directory":
        scene = tmp_path / "folder.tif"
        scene.mkdir()
    elif case == "two_bands":
        scene = make_scene(70, 60, count=2)
    elif case == "chunk":
        extra = ["--chunk-size", "30"]
    elif case == "txt_out":
        out = tmp_path / "p.txt"
    elif case == "big_tile":
        extra = ["--tile-size", "124"]
    elif case == "no_crs":
        scene = make_scene(70, 60, crs=None)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(cli, ["predict", str(scene), "-o", str(out), "--model",
                                      str(model), *FAST, *extra])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_segment_passes_vectorize_options(make_scene: Callable[..., Path], tmp_path: Path,
                                          model: Path) -> None:
    """--no-centerlines drops the centerline layer; --min-area drops small objects."""
    import pyogrio

    scene = make_scene(100, 90)
    base = ["segment", str(scene), "--model", str(model), *FAST]
    default = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "a.gpkg"), "--min-area", "0"])
    assert default.exit_code == 0, default.output
    layers = {name for name, _ in pyogrio.list_layers(tmp_path / "a.gpkg")}
    assert "road_centerlines" in layers
    counts = {layer: pyogrio.read_info(tmp_path / "a.gpkg", layer=layer)["features"]
              for layer in ("buildings", "roads")}
    assert sum(counts.values()) > 0
    options = ["--no-centerlines", "--min-area", "1e9", "--simplify", "0", "--regularize",
               "--fill-holes"]
    result = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "b.gpkg"), *options])
    assert result.exit_code == 0, result.output
    layers = {name for name, _ in pyogrio.list_layers(tmp_path / "b.gpkg")}
    assert "road_centerlines" not in layers
    for layer in ("buildings", "roads"):
        assert pyogrio.read_info(tmp_path / "b.gpkg", layer=layer)["features"] == 0


def test_vectorize_and_segment_share_polygon_options() -> None:
    for command in ("vectorize", "segment"):
        text = CliRunner().invoke(cli, [command, "--help"]).output
        for option in ("--min-area", "--simplify", "--fill-holes", "--regularize",
                       "--no-centerlines", "--spur-length"):
            assert option in text, (command, option)


def test_progress_bar_draws_chunks_and_rate_only_when_enabled() -> None:
    import io

    from geounet.cli.progress import ChunkProgress

    stream = io.StringIO()
    with ChunkProgress(True, stream=stream, width=100) as bar:
        bar(0, 4, 0, None)  # the library's ETA: None until the warm-up is measured
        bar(2, 4, 2_000_000, 30.0)
        bar(3, 6, 3_000_000, 185.0)  # a batch's total grows as it plans scenes
    text = stream.getvalue()
    assert "chunks:" in text and " 0/4 " in text and " 3/6 " in text, text
    assert "ETA measuring" in text.split("\r")[1]  # from the first draw
    assert "MP/s" in text and "chunk/s" in text and text.endswith("\n")
    assert text.rstrip().endswith("ETA 3 min 05 s]"), text  # the library's, not tqdm's guess
    assert "<" not in text
    quiet = io.StringIO()
    with ChunkProgress(False, stream=quiet) as bar:
        bar(1, 4, 10)
    assert quiet.getvalue() == ""


def test_missing_engine_is_one_line_naming_the_extra(
    make_scene: Callable[..., Path], tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--engine openvino without the package: one line naming `pip install geounet[openvino]`,
    before any work (nothing written)."""
    from geounet.engine import backends as engines
    monkeypatch.setattr(engines, "engine_installed", lambda name: name == "torch")
    scene = make_scene(70, 60)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(cli, ["predict", str(scene), "-o", str(tmp_path / "p.zarr"),
                                      "--model", str(model), *FAST, "--engine", "openvino"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "pip install geounet[openvino]" in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == before
