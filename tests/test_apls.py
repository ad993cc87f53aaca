"""APLS (geounet.evaluation.apls): the SpaceNet definition on hand-computed cases, the bounds
(truth against itself 1, empty 0, a road removed lower), CRS handling and bad inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import LineString, Polygon

from geounet.errors import GeoreferenceError, InputError, SceneError
from geounet.evaluation import apls, evaluate, road_graph, score_graph_files

UTM = "EPSG:32633"
# a small network (metres): a street, two cross streets (a T and a crossing), a bent one
NETWORK = [
    LineString([(500_000, 5_000_000), (500_400, 5_000_000)]),
    LineString([(500_100, 4_999_800), (500_100, 5_000_200)]),
    LineString([(500_300, 4_999_800), (500_300, 5_000_150), (500_350, 5_000_200)]),
    LineString([(500_300, 5_000_150), (500_150, 5_000_260)]),
]


def write_lines(path: Path, lines: list, crs: str = UTM, layer: str = "roads") -> Path:
    gpd.GeoDataFrame({"id": list(range(len(lines)))}, geometry=lines, crs=crs).to_file(
        path, layer=layer, engine="pyogrio")
    return path


def test_truth_against_itself_is_one() -> None:
    truth = road_graph(NETWORK)
    score = apls(truth, truth)
    assert score.apls == pytest.approx(1.0, abs=1e-12)
    assert score.truth_to_pred == pytest.approx(1.0, abs=1e-12)
    assert score.truth_paths > 100 and score.truth_paths == score.pred_paths


def test_empty_graph_is_zero() -> None:
    score = apls(road_graph([]), road_graph(NETWORK))
    assert score.apls == 0.0 and score.truth_to_pred == 0.0 and score.pred_to_truth == 0.0
    assert score.pred_paths == 0 and score.pred_length_m == 0.0


def test_a_road_removed_scores_lower_the_longer_it_is() -> None:
    truth = road_graph(NETWORK)
    scores = [apls(road_graph(NETWORK[:k] + NETWORK[k + 1:]), truth) for k in range(4)]
    for score in scores:
        assert 0.0 < score.apls < 1.0
        assert score.pred_to_truth == pytest.approx(1.0)  # what is there is right
        assert score.truth_to_pred < 1.0  # what is missing costs
    # the main street (400 m, holding both junctions) costs more than the 180 m side street
    assert scores[0].apls < scores[3].apls


def test_missing_half_of_a_road_by_hand() -> None:
    """Truth 200 m: control nodes at 0, 50, 100, 150, 200 m; the prediction is its first 100 m.
    Truth -> prediction: of the 10 pairs, the 3 among {0, 50, 100} are exact and the 7 with
    150 or 200 (farther than 4 m from the prediction) cost 1: 1 - 7/10. Prediction -> truth:
    its 3 pairs are exact: 1. APLS = 2 * 0.3 * 1 / 1.3."""
    truth = road_graph([LineString([(0, 0), (200, 0)])])
    score = apls(road_graph([LineString([(0, 0), (100, 0)])]), truth)
    assert (score.truth_paths, score.pred_paths) == (10, 3)
    assert score.truth_to_pred == pytest.approx(0.3)
    assert score.pred_to_truth == pytest.approx(1.0)
    assert score.apls == pytest.approx(2 * 0.3 / 1.3)


def test_path_length_penalty_by_hand() -> None:
    """A 100 m road predicted as a 130 m detour between the same ends (no injected nodes with
    spacing 1000): penalties |100 - 130| / 100 and |130 - 100| / 130."""
    h = math.sqrt(65**2 - 50**2)
    detour = road_graph([LineString([(0, 0), (50, h), (100, 0)])])
    score = apls(detour, road_graph([LineString([(0, 0), (100, 0)])]), spacing=1000)
    assert score.truth_to_pred == pytest.approx(1 - 30 / 100)
    assert score.pred_to_truth == pytest.approx(1 - 30 / 130)
    # a break (no path between the snapped nodes) costs 1 whatever the lengths
    broken = road_graph([LineString([(0, 0), (49, 0)]), LineString([(51, 0), (100, 0)])])
    assert apls(broken, road_graph([LineString([(0, 0), (100, 0)])]),
                spacing=1000).truth_to_pred == 0.0


def test_snap_distance_is_metres_and_applies_both_ways() -> None:
    truth = road_graph(NETWORK)
    near = road_graph([LineString(np.asarray(g.coords) + [0, 3.0]) for g in NETWORK])
    far = road_graph([LineString(np.asarray(g.coords) + [0, 6.0]) for g in NETWORK])
    assert apls(near, truth).apls > 0.9
    assert apls(far, truth).apls < 0.6  # most control nodes are farther than 4 m
    assert apls(far, truth, snap=8.0).apls > 0.9


def test_truth_in_lonlat_against_a_utm_prediction(tmp_path: Path) -> None:
    """Truth in EPSG:4326, prediction in UTM: both are measured in the prediction's metres."""
    lonlat = gpd.GeoSeries(NETWORK, crs=UTM).to_crs("EPSG:4326")
    truth = write_lines(tmp_path / "truth.geojson", list(lonlat), crs="EPSG:4326")
    pred = write_lines(tmp_path / "pred.gpkg", NETWORK, layer="road_edges")
    score = score_graph_files(pred, truth)
    assert score.apls == pytest.approx(1.0, abs=1e-6)
    assert score.truth_length_m == pytest.approx(score.pred_length_m, rel=1e-6)
    shifted = write_lines(tmp_path / "shifted.gpkg",
                          [LineString(np.asarray(g.coords) + [0, 6.0]) for g in NETWORK],
                          layer="road_edges")
    assert score_graph_files(shifted, truth).apls < 0.6  # 6 m off on the ground
    # a prediction in lon/lat is measured in its UTM zone (33N here)
    geo_pred = write_lines(tmp_path / "geo_pred.gpkg", list(lonlat), crs="EPSG:4326",
                           layer="road_edges")
    utm_truth = write_lines(tmp_path / "utm_truth.gpkg", NETWORK)
    assert score_graph_files(geo_pred, utm_truth).apls == pytest.approx(1.0, abs=1e-6)


def test_lines_that_end_a_hair_off_a_road_join_it() -> None:
    """A side street computed to start on a road (not on a vertex) is noded onto it."""
    road = LineString([(0, 0), (300, 0)])
    side = LineString([(100.0, 1e-9), (100.0, 120.0)])
    graph = road_graph([road, side])
    assert sorted(d for _, d in graph.degree) == [1, 1, 1, 3]


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_truth_without_lines_and_other_bad_inputs(tmp_path: Path) -> None:
    pred = write_lines(tmp_path / "pred.gpkg", NETWORK, layer="road_edges")
    blocks = tmp_path / "blocks.gpkg"
    gpd.GeoDataFrame(geometry=[Polygon([(0, 0), (1, 0), (1, 1)])], crs=UTM).to_file(
        blocks, layer="roads")
    with pytest.raises(InputError, match="no line features.*'roads'"):
        score_graph_files(pred, blocks)
    with pytest.raises(InputError, match="no road line layer"):
        two = tmp_path / "two.gpkg"
        write_lines(two, NETWORK[:1], layer="a")
        write_lines(two, NETWORK[1:], layer="b")
        score_graph_files(pred, two)
    nocrs = tmp_path / "nocrs.gpkg"
    gpd.GeoDataFrame(geometry=NETWORK).to_file(nocrs)
    with pytest.raises(GeoreferenceError, match="no CRS"):
        score_graph_files(pred, nocrs)
    metres_as_degrees = tmp_path / "utm.geojson"  # GeoJSON is read as EPSG:4326
    gpd.GeoDataFrame(geometry=NETWORK).to_file(metres_as_degrees)
    with pytest.raises(InputError, match="do not fit their CRS"):
        score_graph_files(pred, metres_as_degrees)
    for spacing, snap in ((0.0, 4.0), (50.0, -1.0), (float("nan"), 4.0)):
        with pytest.raises(InputError, match="positive number of metres"):
            apls(road_graph(NETWORK), road_graph(NETWORK), spacing=spacing, snap=snap)
    empty = write_lines(tmp_path / "empty.gpkg", [LineString([(0, 0), (1, 1)])][:0],
                        layer="road_edges")
    assert score_graph_files(empty, pred).apls == 0.0  # a prediction may find no road


def test_evaluate_scores_a_segment_graph_and_the_cli_reports_it(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from geounet.cli.main import cli
    from geounet.synth import synthesize_scene
    from geounet.vectorization import vectorize

    scene = synthesize_scene(tmp_path / "syn", size=512, seed=3)
    objects = tmp_path / "objects.gpkg"
    vectorize(scene.mask_path, objects, classes=["roads"])
    report = evaluate(scene.mask_path, scene.truth_path, graph=objects)
    assert report.apls is not None and report.apls.apls > 0.85  # the graph of a perfect mask
    assert report.score("roads").iou > 0.99  # and the other scores as before
    only = evaluate(objects, scene.truth_path)  # two vector files: APLS alone
    assert only.pixel == () and only.objects is None
    assert only.apls.apls == pytest.approx(report.apls.apls)
    args = ["evaluate", str(scene.mask_path), str(scene.truth_path), "--graph", str(objects),
            "--json", str(tmp_path / "s.json")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "roads graph APLS" in result.output and "centerline" in result.output
    saved = json.loads((tmp_path / "s.json").read_text())["apls"]
    assert saved["apls"] == pytest.approx(report.apls.apls, abs=1e-6)
    # APLS needs true lines: a raster truth with --graph is a one-line error
    result = CliRunner().invoke(cli, ["evaluate", str(scene.mask_path), str(scene.mask_path),
                                      "--graph", str(objects)])
    assert result.exit_code == 1 and "is a raster" in result.output
    assert "Traceback" not in result.output
    with pytest.raises(SceneError, match="does not exist"):
        evaluate(scene.mask_path, scene.truth_path, graph=tmp_path / "nope.gpkg")
