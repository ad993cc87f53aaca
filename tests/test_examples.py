"""The runnable examples keep working against the public API (with the built-in model)."""

from __future__ import annotations

import runpy
from pathlib import Path

import geopandas as gpd
import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_python_api_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    example = runpy.run_path(str(ROOT / "examples" / "python_api.py"))
    example["main"]([str(tmp_path), "--size", "256"])
    out = capsys.readouterr().out
    assert "CRS EPSG:32633" in out and "mean IoU" in out
    buildings = gpd.read_file(tmp_path / "objects.gpkg", layer="buildings")
    assert buildings.crs.to_epsg() == 32633 and len(buildings) > 0
