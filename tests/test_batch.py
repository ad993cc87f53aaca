"""Tests for geounet.batch.job and ``geounet batch``: inputs and manifests, failing scenes, the
result table, resume, and object storage (a real S3-compatible server: moto's server mode)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from test_pipeline import make_checkpoint

from geounet.batch import job as batch
from geounet.cli.main import cli
from geounet.errors import InputError, OutputExistsError, UnsupportedFormatError

FAST = {"client": "threads", "precision": "fp32", "chunk_size": 64}


class Interrupt(Exception):
    """Stands in for Ctrl-C / a killed job in the middle of a batch."""


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("batch_models") / "m.pt")


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _layers(path: Path) -> dict[str, int]:
    import pyogrio

    return {name: int(pyogrio.read_info(path, layer=name)["features"])
            for name, _ in pyogrio.list_layers(path)}


def _features(path: Path | str, layer: str | None = None, **kwargs: Any) -> list[bytes]:
    import geopandas as gpd

    if str(path).endswith(".parquet"):
        frame = gpd.read_parquet(path, **kwargs)
    else:
        frame = gpd.read_file(path, layer=layer)
    return sorted(frame.geometry.to_wkb())


# --------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------


def test_manifest_forms_resolve_to_absolute_paths(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "scenes"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.tif", "b.tif", "sub/c.tif", "notes.md"):
        (folder / name).write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "list.txt").write_text("# my scenes\nscenes/a.tif\n\n  scenes/sub/c.tif  \n"
                                       "s3://bucket/d.tif\n")
    (folder / "list.csv").write_text("id,path,date\n1,a.tif,2024\n2,sub/c.tif,2024\n")
    absolute = [str(folder / "a.tif"), str(folder / "sub" / "c.tif")]

    assert batch.resolve_scenes(["list.txt"]) == [*absolute, "s3://bucket/d.tif"]
    assert batch.resolve_scenes(manifests=[folder / "list.csv"]) == absolute  # relative to it
    assert batch.resolve_scenes(["scenes/*.tif"]) == [str(folder / "a.tif"),
                                                     str(folder / "b.tif")]
    assert batch.resolve_scenes(["scenes/**/*.tif"]) == sorted(
        [str(folder / "a.tif"), str(folder / "b.tif"), str(folder / "sub" / "c.tif")])
    # plain relative paths become absolute; repeats are kept once, in order
    assert batch.resolve_scenes(["scenes/b.tif", "scenes/a.tif", "scenes/b.tif"]) == [
        str(folder / "b.tif"), str(folder / "a.tif")]
    for path in batch.resolve_scenes(["list.txt", "scenes/*.tif"]):
        assert path.startswith("s3://") or os.path.isabs(path)

    (tmp_path / "bad.csv").write_text("file,date\na.tif,1\n")
    with pytest.raises(InputError, match="no 'path' column"):
        batch.resolve_scenes(["bad.csv"])
    with pytest.raises(InputError, match="matches no scene"):
        batch.resolve_scenes(["scenes/*.jp2"])
    with pytest.raises(InputError, match="does not exist"):
        batch.resolve_scenes(manifests=["missing.txt"])
    with pytest.raises(InputError, match="no scenes given"):
        batch.resolve_scenes([])


def test_clashing_names_and_bad_formats_fail_before_work(tmp_path: Path, model: Path) -> None:
    one, two = tmp_path / "x" / "s.tif", tmp_path / "y" / "s.tif"
    with pytest.raises(InputError, match="both write outputs named 's'"):
        batch.run_batch([one, two], tmp_path / "out", model=model, **FAST)
    with pytest.raises(UnsupportedFormatError, match="GeoParquet"):
        batch.run_batch([one], "s3://bucket/out", vector_format="gpkg", model=model, **FAST)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------
# failing scenes, the table
# --------------------------------------------------------------------------------------


def test_batch_one_corrupt_scene_fails_alone(make_scene: Callable[..., Path], tmp_path: Path,
                                             model: Path) -> None:
    a = make_scene(150, 173, seed=1, name="a.tif")
    b = make_scene(120, 100, seed=2, name="b.tif")
    corrupt = tmp_path / "c.tif"
    corrupt.write_bytes(a.read_bytes()[: 2000])  # a download cut short
    two = make_scene(90, 90, count=2, seed=3, name="d.tif")  # too few bands for the model
    no_crs = make_scene(90, 90, crs=None, seed=3, name="e.tif")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [
        "batch", str(a), str(b), str(corrupt), str(two), str(no_crs), "--out-dir", str(out),
        "--model", str(model), "--in-process", "--precision", "fp32",
        "--chunk-size", "64", "--min-area", "8", "--raster", "cog"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "5 scene(s): 2 done, 0 skipped, 3 failed" in result.output

    rows = {row["name"]: row for row in json.loads((out / "batch.json").read_text())["scenes"]}
    assert {n: r["status"] for n, r in rows.items()} == {
        "a": "done", "b": "done", "c": "failed", "d": "failed", "e": "failed"}
    assert "truncated" in rows["c"]["error"]
    assert "band" in rows["d"]["error"] and "no CRS" in rows["e"]["error"]
    for name, chunks in (("a", 9), ("b", 4)):
        counts = _layers(out / f"{name}.gpkg")
        assert rows[name]["objects"] == counts and sum(counts.values()) > 0
        assert rows[name]["chunks"] == rows[name]["chunks_computed"] == chunks
        assert rows[name]["megapixels"] == pytest.approx(
            {"a": 150 * 173, "b": 120 * 100}[name] / 1e6)
    import csv

    table = list(csv.DictReader((out / "batch.csv").open()))
    assert [r["scene"] for r in table] == [str(a), str(b), str(corrupt), str(two), str(no_crs)]
    assert int(table[0]["objects_buildings"]) == rows["a"]["objects"]["buildings"]
    assert table[2]["status"] == "failed" and table[2]["error"] == rows["c"]["error"]
    # nothing half-written: final names only for complete outputs, no temporary leftovers
    assert _listing(out) == sorted([
        "_geounet_batch", "_geounet_batch/a.json", "_geounet_batch/b.json",
        "a.gpkg", "a.tif", "a.tif.aux.xml", "b.gpkg", "b.tif", "b.tif.aux.xml", "batch.csv",
        "batch.json"])

    # running the same command again refuses instead of mixing runs
    with pytest.raises(OutputExistsError, match="--resume"):
        batch.run_batch([a, b], out, model=model, **FAST)


def test_failing_chunk_keeps_completed_chunks_for_resume(
    make_scene: Callable[..., Path], tmp_path: Path, model: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read that keeps failing with an I/O error (not the user's fault) fails that scene
    only; its completed chunks stay for ``resume``, which then finishes it."""
    from geounet import raster
    from geounet.engine import inference
    a = make_scene(150, 173, seed=1, name="a.tif")
    b = make_scene(120, 100, seed=2, name="b.tif")
    calls = {"n": 0}

    def flaky(info: Any, *args: Any, **kwargs: Any) -> Any:
        if info.path == str(a):
            calls["n"] += 1
            if calls["n"] > 4:
                raise OSError("connection reset while reading a block")
        return raster.read_window(info, *args, **kwargs)

    monkeypatch.setattr(inference, "read_window", flaky)
    out = tmp_path / "out"
    first = batch.run_batch([a, b], out, model=model, window=1, **FAST)
    assert [row.status for row in first.scenes] == ["failed", "done"]
    assert "connection reset" in first.scenes[0].error and "--resume" in first.scenes[0].error
    assert not (out / "a.gpkg").exists()
    monkeypatch.setattr(inference, "read_window", raster.read_window)
    second = batch.run_batch([a, b], out, model=model, resume=True, **FAST)
    assert [row.status for row in second.scenes] == ["done", "skipped"]
    assert second.scenes[0].chunks_resumed == 4 and second.scenes[0].chunks_computed == 5


# --------------------------------------------------------------------------------------
# resume
# --------------------------------------------------------------------------------------


def test_resume_skips_finished_scenes_and_finishes_partial_ones(
    make_scene: Callable[..., Path], tmp_path: Path, model: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    scenes = [make_scene(150, 173, seed=1, name="a.tif"),  # 9 chunks
              make_scene(150, 150, seed=2, name="b.tif"),  # 9 chunks
              make_scene(100, 120, seed=3, name="c.tif")]  # 4 chunks
    full = tmp_path / "full"
    reference = batch.run_batch(scenes, full, model=model, raster="zarr", **FAST)
    assert reference.ok

    def stop(done: int, total: int, pixels: int) -> None:
        if done >= 9 + 3:  # window=1: scene a is finished, b has 3 chunks
            raise Interrupt

    out = tmp_path / "out"
    with pytest.raises(Interrupt):
        batch.run_batch(scenes, out, model=model, raster="zarr", window=1, progress=stop,
                        **FAST)
    assert (out / "_geounet_batch" / "a.json").exists() and (out / "a.gpkg").exists()
    assert not (out / "b.gpkg").exists() and not (out / "b.zarr").exists()

    other = make_checkpoint(tmp_path_factory.mktemp("other") / "m.pt", seed=1)
    changed = batch.run_batch(scenes[:2], out, model=other, raster="zarr", resume=True,
                              write_tables=False, **FAST)
    assert [row.status for row in changed.scenes] == ["failed", "failed"]
    assert all("model" in row.error for row in changed.scenes)  # named, never mixed

    seen: list[tuple[int, int]] = []
    pixels: list[int] = []
    result = batch.run_batch(scenes, out, model=model, raster="zarr", resume=True,
                             progress=lambda d, t, p: (seen.append((d, t)), pixels.append(p)),
                             **FAST)
    rows = {row.name: row for row in result.scenes}
    assert [rows[n].status for n in "abc"] == ["skipped", "done", "done"]
    assert (rows["a"].chunks_computed, rows["b"].chunks_computed, rows["c"].chunks_computed) \
        == (0, 9 - 3, 4)
    assert rows["b"].chunks_resumed == 3
    assert seen[-1] == (22, 22)  # the bar counts resumed chunks as done
    # ... but its rate counts only pixels computed now: all of c, part of b, none of a
    assert 100 * 120 < pixels[-1] < 100 * 120 + 150 * 150
    assert rows["a"].objects == reference.scenes[0].objects

    from geounet.output import open_prediction

    for name in "abc":
        assert _layers(out / f"{name}.gpkg") == _layers(full / f"{name}.gpkg")
        for layer in _layers(full / f"{name}.gpkg"):
            assert _features(out / f"{name}.gpkg", layer) == _features(full / f"{name}.gpkg",
                                                                       layer)
        x, y = open_prediction(full / f"{name}.zarr"), open_prediction(out / f"{name}.zarr")
        np.testing.assert_array_equal(x.probabilities.values, y.probabilities.values)
        np.testing.assert_array_equal(x.mask.values, y.mask.values)
    assert _listing(out) == [p.replace("full", "out") for p in _listing(full)]


# --------------------------------------------------------------------------------------
# object storage: a real S3-compatible server (moto's server mode) on 127.0.0.1
# --------------------------------------------------------------------------------------


def test_s3_round_trip(make_scene: Callable[..., Path], tmp_path: Path, model: Path,
                       s3_server: str) -> None:
    """Read a COG scene from a bucket, write the Zarr and GeoParquet to the bucket, read them
    back with xarray and geopandas: equal to the same batch run on local files."""
    import geopandas as gpd
    import rasterio
    import xarray as xr

    from geounet import objectstore
    scene = make_scene(150, 173, seed=4, name="tile.tif")
    cog = tmp_path / "cog" / "tile.tif"
    cog.parent.mkdir()
    with rasterio.open(scene) as src:
        profile = src.profile | {"driver": "COG", "blocksize": 64}
        profile.pop("blockxsize"), profile.pop("blockysize"), profile.pop("tiled")
        with rasterio.open(cog, "w", **profile) as dst:
            dst.write(src.read())
    import boto3

    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="bucket")
    fs = objectstore.filesystem()
    fs.put_file(str(cog), "bucket/scenes/tile.tif")

    local = batch.run_batch([cog], tmp_path / "local", model=model, raster="zarr",
                            vector_format="parquet", **FAST)
    remote = batch.run_batch(["s3://bucket/scenes/*.tif"], "s3://bucket/run",
                             model=model, raster="zarr", work_dir=tmp_path / "work", **FAST)
    assert local.ok and remote.ok, remote.format_table()
    assert remote.scenes[0].scene == "s3://bucket/scenes/tile.tif"
    assert remote.scenes[0].objects == local.scenes[0].objects
    keys = {k.split("bucket/run/", 1)[1] for k in fs.find("bucket/run")}
    assert {"batch.csv", "batch.json", "_geounet_batch/tile.json", "tile.zarr/zarr.json",
            "tile_buildings.parquet", "tile_roads.parquet",
            "tile_road_centerlines.parquet"} <= keys
    assert not any("partial" in key for key in keys)
    assert not list((tmp_path / "work").iterdir())  # staging cleaned up

    options = {"client_kwargs": {"endpoint_url": s3_server}}
    ds = xr.open_zarr("s3://bucket/run/tile.zarr", storage_options=options)
    ref = xr.open_zarr(tmp_path / "local" / "tile.zarr")
    np.testing.assert_array_equal(ds.mask.values, ref.mask.values)
    np.testing.assert_array_equal(ds.probabilities.values, ref.probabilities.values)
    assert "crs_wkt" in ds.spatial_ref.attrs
    for layer, count in remote.scenes[0].objects.items():
        frame = gpd.read_parquet(f"s3://bucket/run/tile_{layer}.parquet",
                                 storage_options=options)
        assert len(frame) == count and frame.crs is not None
        assert _features(f"s3://bucket/run/tile_{layer}.parquet",
                         storage_options=options) == _features(
            tmp_path / "local" / f"tile_{layer}.parquet")

    # resume against the bucket: the finished scene is skipped
    again = batch.run_batch(["s3://bucket/scenes/tile.tif"], "s3://bucket/run", model=model,
                            raster="zarr", work_dir=tmp_path / "work", resume=True, **FAST)
    assert again.scenes[0].status == "skipped"


# --------------------------------------------------------------------------------------
# scheduling: one cluster, scenes interleaved, bounded window
# --------------------------------------------------------------------------------------


def test_scenes_interleave_on_one_cluster_within_the_window(
    make_scene: Callable[..., Path], tmp_path: Path, model: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Chunks of the next scene run while the previous scene finishes (no idle gap at scene
    boundaries), the model is loaded once for the job, and never more than ``window`` tasks
    are in flight."""
    from distributed import get_task_stream

    from geounet.distributed.cluster import in_process_client
    from geounet.engine.inference import clear_runner_cache, runner_load_count

    scenes = [make_scene(100, 120, seed=i, name=f"s{i}.tif") for i in range(3)]
    in_flight = {"now": 0, "max": 0}
    with in_process_client(2) as client:
        original = client.submit

        def counting_submit(*args: Any, **kwargs: Any) -> Any:
            future = original(*args, **kwargs)
            in_flight["now"] += 1
            in_flight["max"] = max(in_flight["max"], in_flight["now"])

            def done(_: Any) -> None:
                in_flight["now"] -= 1

            future.add_done_callback(done)
            return future

        monkeypatch.setattr(client, "submit", counting_submit)
        clear_runner_cache()
        loads = runner_load_count()
        with get_task_stream(client) as stream:
            result = batch.run_batch(scenes, tmp_path / "out", model=model, client=client,
                                     window=3, precision="fp32", chunk_size=64)
        assert runner_load_count() - loads == 1  # one model load for three scenes
    assert result.ok and [r.chunks_computed for r in result.scenes] == [4, 4, 4]
    assert 2 <= in_flight["max"] <= 3 + 1  # the window, plus a finish task at a boundary
    spans: dict[str, tuple[float, float]] = {}
    for record in stream.data:
        compute = [s for s in record["startstops"] if s["action"] == "compute"]
        spans[record["key"]] = (compute[0]["start"], compute[-1]["stop"])
    for k in (0, 1):
        finish = next(v for key, v in spans.items() if key.startswith(f"geounet-finish-{k}-"))
        first_next = min(v[0] for key, v in spans.items()
                         if key.startswith(f"geounet-chunk-{k + 1}-"))
        assert first_next < finish[1], "the next scene waited for this scene's finish"


def test_partial_scene_is_never_discarded_silently(
    make_scene: Callable[..., Path], tmp_path: Path, model: Path,
) -> None:
    a = make_scene(100, 120, seed=1, name="a.tif")

    def stop(done: int, total: int, pixels: int) -> None:
        if done >= 2:
            raise Interrupt

    out = tmp_path / "out"
    with pytest.raises(Interrupt):
        batch.run_batch([a], out, model=model, window=1, progress=stop, **FAST)
    again = batch.run_batch([a], out, model=model, write_tables=False, **FAST)
    assert again.scenes[0].status == "failed" and "--resume" in again.scenes[0].error
    finished = batch.run_batch([a], out, model=model, resume=True, **FAST)
    assert finished.scenes[0].status == "done" and finished.scenes[0].chunks_resumed == 2


def test_same_padding_batch_blends_seams_like_predict(
    make_scene: Callable[..., Path], tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Issue 11: a batch with a same-padding model runs each tile once and blends the seams
    between chunks (second round per scene) before finishing the scene; each scene's store
    equals `predict`'s bit for bit, also when interrupted between the rounds and resumed."""
    from geounet.output import open_prediction
    from geounet.run.pipeline import predict

    same = make_checkpoint(tmp_path_factory.mktemp("same") / "same.pt", "same")
    scenes = [make_scene(150, 173, seed=1, name="a.tif"), make_scene(100, 120, seed=2,
                                                                      name="b.tif")]
    options = dict(model=same, raster="zarr", tile_size=96, **FAST)
    result = batch.run_batch(scenes, tmp_path / "out", **options)
    assert result.ok
    for scene in scenes:
        ref = tmp_path / f"{scene.stem}-ref.zarr"
        predict(scene, ref, model=same, tile_size=96, client="threads", precision="fp32",
                chunk_size=64)
        np.testing.assert_array_equal(
            open_prediction(tmp_path / "out" / f"{scene.stem}.zarr").probabilities.values,
            open_prediction(ref).probabilities.values)

    from geounet.run import tasks
    def interrupted(task: Any) -> Any:
        raise Interrupt

    out = tmp_path / "again"
    original = tasks.run_seams_task
    tasks.run_seams_task = interrupted  # type: ignore[assignment]
    try:
        first = batch.run_batch(scenes[:1], out, write_tables=False, **options)
    finally:
        tasks.run_seams_task = original  # type: ignore[assignment]
    assert [row.status for row in first.scenes] == ["failed"]
    resumed = batch.run_batch(scenes[:1], out, resume=True, **options)
    assert resumed.ok and resumed.scenes[0].chunks_computed == 0
    np.testing.assert_array_equal(
        open_prediction(out / "a.zarr").probabilities.values,
        open_prediction(tmp_path / "out" / "a.zarr").probabilities.values)


@pytest.mark.parametrize("layer", ["road_centerlines", "road_edges", "road_nodes"])
def test_existing_layer_file_of_a_scene_is_refused_before_work(
    make_scene: Callable[..., Path], tmp_path: Path, model: Path, layer: str,
) -> None:
    """A per-layer output (FlatGeobuf) left from an earlier run, graph layers included, is
    found by vectorize's own naming rule: the batch refuses the scene instead of replacing
    one layer and leaving the rest of an older run beside it."""
    scene = make_scene(64, 64, name="a.tif")
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f"a_{layer}.fgb"
    stale.write_bytes(b"earlier run")
    result = batch.run_batch([scene], out, model=model, vector_format="fgb", **FAST)
    assert not result.ok
    assert "already exists" in result.scenes[0].error and stale.name in result.scenes[0].error
    assert stale.read_bytes() == b"earlier run"


# --------------------------------------------------------------------------------------
# one publisher for every run
# --------------------------------------------------------------------------------------


def _tree_bytes(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (or the file itself, with its ``.aux.xml`` sidecar) by
    relative name."""
    if path.is_file():
        sidecar = Path(f"{path}.aux.xml")
        return {"": path.read_bytes(),
                **({".aux.xml": sidecar.read_bytes()} if sidecar.is_file() else {})}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("raster", ["zarr", "cog"])
def test_batch_and_segment_publish_the_same_raster_bytes(
        make_scene: Callable[..., Path], tmp_path: Path, model: Path, raster: str) -> None:
    """A scene's raster from ``run_batch`` is byte for byte the one ``segment`` writes (store
    files and consolidated metadata, or the COG and its categories sidecar): both go through
    ``geounet.run.store.publish_raster`` and ``resume_point`` (ARCHITECTURE invariant 7)."""
    from geounet.run.pipeline import segment

    scene = make_scene(150, 173, seed=5, name="one.tif")
    suffix = ".zarr" if raster == "zarr" else ".tif"
    single = tmp_path / "single" / f"one{suffix}"
    single.parent.mkdir()
    segment(scene, tmp_path / "single" / "one.gpkg", model=model, raster_out=single, **FAST)
    result = batch.run_batch([scene], tmp_path / "batch", model=model, raster=raster, **FAST)
    assert result.ok, result.format_table()
    published = _tree_bytes(tmp_path / "batch" / f"one{suffix}")
    assert published and published == _tree_bytes(single)
    assert not any("partial" in name for name in _listing(tmp_path / "batch"))
