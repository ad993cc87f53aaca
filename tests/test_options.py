"""The options objects: frozen, validated once, and the keyword shorthand of every entry point."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from pathlib import Path

import pytest
from test_pipeline import make_checkpoint

import geounet
from geounet.batch.job import run_batch
from geounet.errors import InputError, TileSizeError, UnknownOptionError
from geounet.run.planning import plan_prediction


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("options_models") / "m.pt")


def test_options_are_frozen_and_exported() -> None:
    options = geounet.PredictOptions(tta="flips")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.tta = "d4"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        geounet.VectorizeOptions().regularize = True  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        geounet.BatchOptions().raster = "cog"  # type: ignore[misc]


@pytest.mark.parametrize(("settings", "error", "match"), [
    ({"threshold": 1.5}, InputError, "threshold 1.5 is outside 0-1"),
    ({"tta": "d8"}, InputError, "tta 'd8' is not one of"),
    ({"precision": "int4"}, InputError, "precision 'int4' is not supported"),
    ({"probability_dtype": "float16"}, InputError, "probability dtype 'float16'"),
    ({"engine": "tensorrt"}, InputError, "engine 'tensorrt' is not one of"),
    ({"output_grid": "utm"}, InputError, "output grid 'utm'"),
    ({"max_pixels": -3}, InputError, r"max_pixels -3 is not a whole number"),
    ({"chunk_size": 0}, TileSizeError, "chunk size 0 is not a positive"),
])
def test_predict_options_refuse_bad_values_when_built(settings: dict[str, object],
                                                      error: type[Exception],
                                                      match: str) -> None:
    with pytest.raises(error, match=match):
        geounet.PredictOptions(**settings)  # type: ignore[arg-type]
    with pytest.raises(error, match=match):  # and when replaced: replace runs the same checks
        dataclasses.replace(geounet.PredictOptions(), **settings)


def test_option_values_are_normalized_once() -> None:
    assert geounet.PredictOptions(max_pixels=0).max_pixels is None
    assert geounet.PredictOptions(max_pixels=5e6).max_pixels == 5_000_000
    assert geounet.VectorizeOptions(min_confidence=0).min_confidence is None
    with pytest.raises(InputError, match="min_confidence 2"):
        geounet.VectorizeOptions(min_confidence=2)
    with pytest.raises(InputError, match="gap length -1"):
        geounet.VectorizeOptions(gap_length=-1)
    with pytest.raises(InputError, match="raster 'tif' is not a choice"):
        geounet.BatchOptions(raster="tif")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="window 0 is not positive"):
        geounet.BatchOptions(window=0)


def test_settings_replace_fields_of_the_options(make_scene: Callable[..., Path],
                                                model: Path) -> None:
    scene = make_scene(70, 80)
    options = geounet.PredictOptions(model=model, tta="flips", chunk_size=64)
    assert plan_prediction(scene, options).runner.tta == "flips"
    plan = plan_prediction(scene, options, tta="d4", check_device=False)
    assert plan.runner.tta == "d4" and plan.run["chunk_size"] == 64  # the others kept
    assert options.tta == "flips"  # the object itself is unchanged
    shorthand = plan_prediction(scene, model=model, tta="d4", chunk_size=64)
    assert shorthand.run == plan.run  # the shorthand alone plans the same run


@pytest.mark.parametrize("call", ["predict", "segment", "plan", "batch", "vectorize"])
def test_an_unknown_setting_names_itself_and_the_fields(call: str, tmp_path: Path) -> None:
    calls = {
        "predict": lambda: geounet.predict("s.tif", tmp_path / "p.zarr", tile_szie=64),
        "segment": lambda: geounet.segment("s.tif", tmp_path / "o.gpkg", tile_szie=64),
        "plan": lambda: plan_prediction("s.tif", tile_szie=64),
        "batch": lambda: run_batch(["s.tif"], tmp_path / "out", tile_szie=64),
        "vectorize": lambda: geounet.vectorize("p.zarr", tmp_path / "o.gpkg", tile_szie=64),
    }
    with pytest.raises(UnknownOptionError, match="tile_szie") as caught:
        calls[call]()
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, InputError)
    assert ("min_area" if call == "vectorize" else "tile_size") in str(caught.value)
    if call == "batch":
        assert "BatchOptions" in str(caught.value) and "raster" in str(caught.value)
    assert not any(tmp_path.iterdir())  # refused before any output


def test_entry_points_take_at_most_ten_or_so_named_parameters() -> None:
    """The options objects replaced the copied keyword lists (issue 18)."""
    for function in (geounet.predict, geounet.segment, geounet.vectorize, plan_prediction,
                     run_batch):
        named = [p for p in inspect.signature(function).parameters.values()
                 if p.kind is not p.VAR_KEYWORD]
        assert len(named) <= 11, (function.__name__, len(named))
