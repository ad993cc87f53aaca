"""Building instances beside raster masks (issue 21 item 2): published building datasets
hold a raster mask *and* per-chip vector labels per chip. The mask gives the classes; the
polygons tell touching buildings apart, which a mask cannot. The border weights and the
contact class both see those instances (docs/training.md, "Building instances")."""

from __future__ import annotations

import logging
import warnings

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import box

from geounet.training.contact import instances_of
from geounet.training.dataset import ChipDataset, SampleSpec
from geounet.training.layout import open_dataset

CRS = "EPSG:32633"
TRANSFORM = from_origin(500000.0, 4000020.0, 0.5, 0.5)
WALL = [(8, 6, 24, 20), (8, 20, 24, 34)]  # two 16 px roofs sharing the wall at x = 20 px
CONTACT = 3


def _write(path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=40, height=40, count=data.shape[0],
                       dtype="uint8", crs=CRS, transform=TRANSFORM) as dst:
        dst.write(data)


def _chip(tmp_path, image, mask, labels) -> None:
    """A 40 x 40 px chip: image, 0/1 raster mask (the two roofs as one block) and, at
    ``labels``, the two roofs as polygons (EPSG:4326, as OSM exports them)."""
    _write(tmp_path / image, np.random.default_rng(0).integers(0, 255, (3, 40, 40),
                                                               dtype=np.uint8))
    block = np.zeros((1, 40, 40), np.uint8)
    block[0, 8:24, 6:34] = 1
    _write(tmp_path / mask, block)
    if labels is not None:
        geoms = [box(*(TRANSFORM * (c0, r1)), *(TRANSFORM * (c1, r0)))
                 for r0, c0, r1, c1 in WALL]
        (tmp_path / labels).parent.mkdir(parents=True, exist_ok=True)
        gpd.GeoDataFrame(geometry=geoms, crs=CRS).to_crs("EPSG:4326").to_file(tmp_path / labels)


def _sample(records, **options):
    ds = ChipDataset(records, SampleSpec(40, 40, 0), mean=(0,) * 3, std=(1,) * 3,
                     num_classes=2, train=False, border_class=1, **options)
    return [t.numpy() for t in ds[0]]


LAYOUTS = {
    "images-masks-labels": ("images/a.tif", "masks/a.mask.tif", "labels/a.geojson"),
    "flat, labels folder": ("a.tif", "a.mask.tif", "labels/a.geojson"),
    "flat, side by side": ("a.tif", "a.mask.tif", "a.geojson"),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_polygons_beside_a_raster_mask_give_the_building_instances(tmp_path, caplog, layout):
    image, mask, labels = LAYOUTS[layout]
    _chip(tmp_path, image, mask, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the vector file is not "without a partner"
        with caplog.at_level(logging.INFO, logger="geounet.training.layout"):
            ds = open_dataset(tmp_path)
    (rec,) = ds.records
    assert rec.mask == tmp_path / mask  # the raster mask gives the classes
    assert rec.instances is not None and rec.instances.resolve() == (tmp_path / labels).resolve()
    assert "building instances: polygons of the per-chip vector labels" in caplog.text
    assert "1 of 1 chips" in caplog.text


def test_border_weights_and_contact_see_the_polygons_not_the_mask(tmp_path):
    """With the polygons the shared wall is contact and the border weights peak beside it;
    with the mask alone the two roofs are one building and neither happens."""
    _chip(tmp_path / "with", *LAYOUTS["images-masks-labels"])
    _chip(tmp_path / "without", "images/a.tif", "masks/a.mask.tif", None)
    with_ids = list(open_dataset(tmp_path / "with").records)
    without = list(open_dataset(tmp_path / "without").records)
    assert without[0].instances is None

    weights = _sample(with_ids, border_weight=10.0)[2]  # border weights alone, no contact
    assert weights[7, 19] > 5.0  # background just outside the wall, between two buildings
    assert _sample(without, border_weight=10.0)[2].max() == 1.0

    target = _sample(with_ids, contact=True)[1]
    assert (target[8:24, 19:21] == CONTACT).all()
    assert not (_sample(without, contact=True)[1] == CONTACT).any()
    # the class mask itself is the raster mask either way
    assert (_sample(with_ids, contact=True)[3][8:24, 6:34] == 1).all()


def test_instances_are_fitted_to_the_mask():
    """Polygons a little off the mask: uncovered building pixels take the nearest id of their
    own component, a component no polygon touches is a building of its own, and ids off the
    building pixels are dropped."""
    mask = np.zeros((12, 30), np.uint8)
    mask[2:10, 2:14] = 1  # two roofs joined in the mask
    mask[2:10, 22:28] = 1  # a roof the polygons miss
    ids = np.zeros(mask.shape, np.int32)
    ids[3:10, 1:8] = 1  # offset up-left: covers background at column 1
    ids[3:10, 8:15] = 2  # reaches column 14, background
    got = instances_of(mask, 1, ids)
    assert (got[mask == 0] == 0).all()
    assert (got[2, 2:8] == 1).all() and (got[2, 8:14] == 2).all()  # row 2: nearest id
    assert set(np.unique(got[2:10, 2:14])) == {1, 2}
    orphan = np.unique(got[2:10, 22:28])
    assert orphan.size == 1 and orphan[0] not in (0, 1, 2)
    # no ids at all: the 4-connected components
    assert len(np.unique(instances_of(mask, 1, None))) == 3
