"""The road graph layers of vectorize (road_edges, road_nodes): seam-exact, connected across
chunk seams, and the documented cleaning rules (junctions, gaps, spurs, scene edge)."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import networkx as nx
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from scipy.ndimage import gaussian_filter

from geounet.testing import write_prediction_store
from geounet.vectorization import vectorize

CRS = "EPSG:32633"
TRANSFORM = from_origin(500_000.0, 5_000_000.0, 0.5, 0.5)
ROADS = {"classes": ["roads"], "simplify": 0}


def write_mask(path: Path, mask: np.ndarray) -> Path:
    profile = {"driver": "GTiff", "height": mask.shape[0], "width": mask.shape[1], "count": 1,
               "dtype": "uint8", "nodata": 255, "crs": CRS, "transform": TRANSFORM}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(mask, 1)
    return path


def write_store(path: Path, mask: np.ndarray, probabilities: np.ndarray, chunk: int) -> Path:
    return write_prediction_store(path, mask, probabilities, chunk=chunk, transform=TRANSFORM,
                                  crs=CRS)


def read_graph(path: Path) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, nx.MultiGraph]:
    edges = gpd.read_file(path, layer="road_edges", engine="pyogrio")
    nodes = gpd.read_file(path, layer="road_nodes", engine="pyogrio")
    graph = nx.MultiGraph()
    graph.add_nodes_from(nodes["id"])
    graph.add_edges_from(zip(edges["u"], edges["v"]))
    return edges, nodes, graph


def assert_same_graph(a: Path, b: Path) -> None:
    """Same nodes (position, id, degree) and edges (ends, geometry, length, probability)."""
    edges_a, nodes_a, _ = read_graph(a)
    edges_b, nodes_b, _ = read_graph(b)
    assert len(nodes_a) == len(nodes_b) and len(edges_a) == len(edges_b)
    np.testing.assert_array_equal(nodes_a["id"], nodes_b["id"])
    np.testing.assert_array_equal(nodes_a["degree"], nodes_b["degree"])
    np.testing.assert_allclose(np.array([g.coords[0] for g in nodes_a.geometry]),
                               np.array([g.coords[0] for g in nodes_b.geometry]), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(edges_a[["u", "v"]].to_numpy(), edges_b[["u", "v"]].to_numpy())
    for ga, gb in zip(edges_a.geometry, edges_b.geometry):
        assert ga.equals_exact(gb, 1e-9)
    np.testing.assert_allclose(edges_a["length_m"], edges_b["length_m"], rtol=1e-12)
    np.testing.assert_allclose(edges_a["mean_probability"], edges_b["mean_probability"],
                               rtol=1e-9, equal_nan=True)


def crossing_roads(height: int = 160, width: int = 200) -> np.ndarray:
    """A horizontal road, a diagonal one crossing it, and a dead end off the horizontal. The
    skeleton splits the oblique crossing into two 3-way junctions 8.5 m apart (farther than
    the 4 m junction merge length): two nodes of degree 3 and the short edge between them."""
    rows, cols = np.mgrid[0:height, 0:width]
    mask = np.zeros((height, width), np.uint8)
    mask[70:82, :] = 2
    mask[np.abs((rows - 10) - 0.9 * (cols - 20)) < 7] = 2
    mask[20:70, 150:160] = 2
    return mask


@pytest.mark.parametrize("chunk_size", [200, 64, 37, 23])
def test_road_crossing_chunk_seams_stays_one_component(tmp_path: Path, chunk_size: int) -> None:
    src = write_mask(tmp_path / "m.tif", crossing_roads())
    # no gap bridging: a break at a seam must not be hidden by the repair of real gaps
    vectorize(src, tmp_path / "g.gpkg", chunk_size=chunk_size, gap_length=0, **ROADS)
    edges, nodes, graph = read_graph(tmp_path / "g.gpkg")
    assert nx.number_connected_components(graph) == 1
    assert sorted(nodes["degree"]) == [1, 1, 1, 1, 1, 3, 3, 3]  # 5 ends, 1 T, 1 crossing
    assert len(edges) == 7
    assert (nodes["degree"] == 2).sum() == 0  # no node where a road just crosses a seam


@pytest.mark.parametrize(("chunk_size", "cut_size"), [(41, None), (64, 100), (29, 8192), (97, 60)])
def test_chunked_graph_equals_whole_mask_graph(tmp_path: Path, chunk_size: int,
                                               cut_size: int | None) -> None:
    """Nodes, ids, degrees, edge ends, geometries, lengths and mean probabilities of a chunked
    run equal those of the whole mask at once (to 1e-9 m; probabilities to 1e-9)."""
    from geounet.synth import synthesize_scene

    scene = synthesize_scene(tmp_path / "syn", size=320, seed=3)
    with rasterio.open(scene.mask_path) as src:
        mask = src.read(1)
    rng = np.random.default_rng(0)
    probs = np.zeros((3, *mask.shape), np.uint8)
    probs[2] = np.where(mask == 2, rng.integers(128, 256, mask.shape), rng.integers(0, 128,
                                                                                      mask.shape))
    store = write_store(tmp_path / "p.zarr", mask, probs, chunk=320)
    vectorize(store, tmp_path / "whole.gpkg", chunk_size=320, cut_size=None, **ROADS)
    vectorize(store, tmp_path / "chunked.gpkg", chunk_size=chunk_size, cut_size=cut_size,
              **ROADS)
    edges, nodes, graph = read_graph(tmp_path / "whole.gpkg")
    assert len(edges) > 5 and nx.number_connected_components(graph) == 1
    assert edges["mean_probability"].between(0.5, 1.0).all()
    assert_same_graph(tmp_path / "chunked.gpkg", tmp_path / "whole.gpkg")


def test_gap_bridged_within_gap_length_only(tmp_path: Path) -> None:
    mask = np.zeros((60, 300), np.uint8)
    mask[24:36, :140] = 2  # a road broken by a 4 px (2 m) gap: 7.5 m between the skeleton's
    mask[24:36, 144:] = 2  # ends, as a skeleton stops half a road width short of a mask's end
    components = {}
    for gap in (10.0, 4.0, 0.0):
        out = tmp_path / f"g{gap}.gpkg"
        vectorize(write_mask(tmp_path / "m.tif", mask), out, gap_length=gap, overwrite=True,
                  **ROADS)
        edges, nodes, graph = read_graph(out)
        components[gap] = nx.number_connected_components(graph)
        if gap == 10.0:  # ... is one edge from scene edge to scene edge
            assert len(edges) == 1 and sorted(nodes["degree"]) == [1, 1]
            assert edges["length_m"].iloc[0] == pytest.approx(150.0, abs=0.6)
    assert components == {10.0: 1, 4.0: 2, 0.0: 2}


def test_dead_end_near_a_road_joins_it_but_not_its_own_junction(tmp_path: Path) -> None:
    mask = np.zeros((120, 200), np.uint8)
    mask[20:30, :] = 2  # road A
    mask[90:100, :] = 2  # road B
    mask[30:86, 60:70] = 2  # a street off A whose skeleton stops 7.5 m short of B's
    vectorize(write_mask(tmp_path / "m.tif", mask), tmp_path / "g.gpkg", **ROADS)
    edges, nodes, graph = read_graph(tmp_path / "g.gpkg")
    assert nx.number_connected_components(graph) == 1  # bridged to B (a new T on B)
    assert sorted(nodes["degree"]) == [1, 1, 1, 1, 3, 3]
    vectorize(write_mask(tmp_path / "m.tif", mask), tmp_path / "g0.gpkg", gap_length=0, **ROADS)
    _, nodes0, graph0 = read_graph(tmp_path / "g0.gpkg")
    assert nx.number_connected_components(graph0) == 2
    assert sorted(nodes0["degree"]) == [1, 1, 1, 1, 1, 3]  # the dead end is not tied back to A


def test_spur_pruned_and_ends_reach_the_scene_edge(tmp_path: Path) -> None:
    mask = np.zeros((100, 200), np.uint8)
    mask[40:52, 3:197] = 2  # a road 1.5 m short of both scene edges
    mask[52:62, 100:110] = 2  # a 5 m stub: a spur
    vectorize(write_mask(tmp_path / "m.tif", mask), tmp_path / "g.gpkg", **ROADS)
    edges, nodes, _ = read_graph(tmp_path / "g.gpkg")
    assert len(edges) == 1 and list(nodes["degree"]) == [1, 1]
    xs = sorted(g.x for g in nodes.geometry)
    assert xs == pytest.approx([TRANSFORM.c, TRANSFORM.c + 200 * 0.5])  # on the scene's edge
    vectorize(write_mask(tmp_path / "m.tif", mask), tmp_path / "s.gpkg", spur_length=0,
              gap_length=0, **ROADS)
    _, nodes, _ = read_graph(tmp_path / "s.gpkg")
    assert sorted(nodes["degree"]) == [1, 1, 1, 3]  # the stub is kept without pruning


def test_hole_in_a_road_leaves_one_edge_not_a_bubble(tmp_path: Path) -> None:
    mask = np.zeros((60, 300), np.uint8)
    mask[20:40, :] = 2  # a 10 m road with a 2 m x 3 m hole (a car): the skeleton goes round it
    mask[26:32, 140:146] = 0
    vectorize(write_mask(tmp_path / "m.tif", mask), tmp_path / "g.gpkg", **ROADS)
    edges, nodes, _ = read_graph(tmp_path / "g.gpkg")
    assert len(edges) == 1 and list(nodes["degree"]) == [1, 1]
    assert edges["length_m"].iloc[0] == pytest.approx(150.0, abs=3.0)  # round the hole


def test_graph_layers_cli_and_options(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from geounet.cli.main import cli
    from geounet.errors import InputError

    src = write_mask(tmp_path / "m.tif", crossing_roads())
    result = CliRunner().invoke(cli, ["vectorize", str(src), "--out", str(tmp_path / "a.gpkg"),
                                      "--gap-length", "5"])
    assert result.exit_code == 0, result.output
    assert "road_edges" in result.output and "road_nodes" in result.output
    result = CliRunner().invoke(cli, ["vectorize", str(src), "--out", str(tmp_path / "b.gpkg"),
                                      "--no-graph"])
    assert result.exit_code == 0 and "road_edges" not in result.output
    result = CliRunner().invoke(cli, ["vectorize", str(src), "--out", str(tmp_path / "c.gpkg"),
                                      "--gap-length", "-1"])
    assert result.exit_code == 2 and "--gap-length" in result.output
    with pytest.raises(InputError, match="gap length nan"):
        vectorize(src, tmp_path / "d.gpkg", gap_length=float("nan"))
    renamed = vectorize(src, tmp_path / "e.gpkg", layer_names={"road_edges": "links"})
    assert renamed.counts["links"] == 7 and "road_edges" not in renamed.counts
    noise = gaussian_filter(np.random.default_rng(1).standard_normal((40, 40)), 2) > 0
    empty = vectorize(write_mask(tmp_path / "n.tif", np.where(noise, 1, 0).astype(np.uint8)),
                      tmp_path / "f.gpkg")
    assert empty.counts["road_edges"] == 0 and empty.counts["road_nodes"] == 0
