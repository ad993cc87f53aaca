"""vectorize on stores and COGs written by geounet.output (the real prediction writer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from test_vectorization import TRANSFORM, assert_same_polygons, blob_mask, read, reference

from geounet.vectorization import vectorize

output = pytest.importorskip("geounet.output")


@pytest.mark.parametrize("probability_dtype", ["uint8", "float32"])
def test_real_store_and_cog_give_the_whole_mask_polygons(tmp_path: Path,
                                                         probability_dtype: str) -> None:
    """A float32 store makes a float32 COG (band 1 'class' too): it must vectorize as well."""
    mask = blob_mask(11, 100, 120)
    valid = np.ones(mask.shape, bool)
    valid[:, :6] = False  # a nodata strip
    probs = np.stack([(mask == k).astype(np.float32) * 0.9 for k in range(3)])
    crs_wkt = rasterio.crs.CRS.from_epsg(32633).to_wkt()
    t = TRANSFORM
    spec = output.create_store(tmp_path / "p.zarr", height=100, width=120,
                               classes=("background", "buildings", "roads"), chunk_size=32,
                               crs_wkt=crs_wkt, transform=(t.a, t.b, t.c, t.d, t.e, t.f),
                               probability_dtype=probability_dtype)
    for y0 in range(0, 100, 32):
        for x0 in range(0, 120, 32):
            sl = (slice(y0, y0 + 32), slice(x0, x0 + 32))
            output.write_chunk(spec, y0, x0, probs[(slice(None), *sl)], mask[sl], valid[sl])
    output.finalize_store(tmp_path / "p.zarr")
    output.write_cog(tmp_path / "p.zarr", tmp_path / "p.tif")
    expected_mask = np.where(valid, mask, 0)
    for src, name in ((tmp_path / "p.zarr", "z.gpkg"), (tmp_path / "p.tif", "c.gpkg")):
        result = vectorize(src, tmp_path / name, chunk_size=32, min_area=0, simplify=0)
        for layer, value in (("buildings", 1), ("roads", 2)):
            gdf = read(tmp_path / name, layer)
            assert gdf.crs.to_epsg() == 32633
            assert_same_polygons(list(gdf.geometry), reference(expected_mask, value))
            assert gdf["mean_probability"].to_numpy() == pytest.approx(0.9, abs=1 / 255)
        assert result.counts["road_centerlines"] > 0
