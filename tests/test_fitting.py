"""Tests for geounet.raster.fitting: parsing ``rescale``, planning warps and value maps."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from geounet.errors import IncompatibleSceneError, InputError
from geounet.model import ModelCard, UNetConfig
from geounet.raster import open_scene, read_window
from geounet.raster.fitting import RescaleSpec, parse_rescale, plan_resample, plan_rescale


def _card(**changes: object) -> ModelCard:
    base = dict(architecture=UNetConfig(), classes=("background", "buildings", "roads"),
                bands=(1, 2, 3), mean=(100.0,) * 3, std=(50.0,) * 3, dtype="uint8",
                value_range=(0.0, 255.0), pixel_size=0.5)
    base.update(changes)
    return ModelCard(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "want"),
    [("percentile", RescaleSpec("percentile", 2.0, 98.0)),
     ("percentile:1,99.5", RescaleSpec("percentile", 1.0, 99.5)),
     ("bits", RescaleSpec("bits")), ("bits:11", RescaleSpec("bits", bits=11)),
     ("0,2047", RescaleSpec("range", 0.0, 2047.0)), ((10, 4000), RescaleSpec("range", 10, 4000)),
     (None, None)],
)
def test_parse_rescale(value: object, want: RescaleSpec | None) -> None:
    assert parse_rescale(value) == want  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["percent", "percentile:98,2", "percentile:0,101", "5,5",
                                   "1,2,3", "bits:0", "a,b", (1,)])
def test_parse_rescale_rejects_with_the_forms(value: object) -> None:
    with pytest.raises(InputError, match="percentile|MIN|bit depth"):
        parse_rescale(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("pixel_size", "mode", "warped"),
    [(0.5, "auto", False), (0.6, "auto", False), (0.7, "auto", True), (0.2, "auto", True),
     (0.2, "error", False), (0.5, "always", False), (0.55, "always", True)],
)
def test_plan_resample_modes(make_scene: Callable[..., Path], pixel_size: float, mode: str,
                             warped: bool) -> None:
    info = open_scene(make_scene(60, 70, pixel_size=pixel_size))
    planned = plan_resample(info, 0.5, mode)  # type: ignore[arg-type]
    assert (planned.warp is not None) == warped
    if warped:
        assert planned.pixel_size == pytest.approx(0.5)
        assert planned.crs_wkt == info.crs_wkt
        # the warped grid starts at the scene's corner and covers all of it
        assert planned.transform[2] == info.transform[2]
        assert planned.transform[5] == info.transform[5]
        assert planned.width * 0.5 >= info.width * pixel_size - 1e-6
        assert planned.width * 0.5 < info.width * pixel_size + 0.5
    else:
        assert planned == info


def test_plan_resample_geographic_and_rotated(tmp_path: Path) -> None:
    import rasterio
    from affine import Affine

    from geounet.georef import pixel_sides_m

    for name, crs, transform in (
        ("geo.tif", "EPSG:4326", Affine(2e-6, 0, 15.0, 0, -2e-6, 45.0)),
        ("rot.tif", "EPSG:32633", Affine(0.2, 0, 500000, 0, -0.2, 5e6) * Affine.rotation(20)),
    ):
        path = tmp_path / name
        with rasterio.open(path, "w", driver="GTiff", height=80, width=90, count=3,
                           dtype="uint8", crs=crs, transform=transform) as dst:
            dst.write(np.full((3, 80, 90), 9, np.uint8))
        planned = plan_resample(open_scene(path), 0.5, "auto")
        assert planned.warp is not None and planned.transform[1] == planned.transform[3] == 0
        sides = pixel_sides_m(planned.crs_wkt, planned.transform, planned.width / 2,
                              planned.height / 2)
        assert sides == pytest.approx((0.5, 0.5), rel=1e-3), name
        _, valid = read_window(planned, 0, 0, planned.height, planned.width)
        assert valid.any()


def test_plan_resample_always_needs_pixel_sizes(make_scene: Callable[..., Path]) -> None:
    info = open_scene(make_scene(30, 30, crs=None))
    assert plan_resample(info, 0.5, "auto") == info
    with pytest.raises(IncompatibleSceneError, match="no CRS"):
        plan_resample(info, 0.5, "always")
    with pytest.raises(InputError, match="error, auto, always"):
        plan_resample(info, 0.5, "sometimes")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="bilinear"):
        plan_resample(info, 0.5, "auto", resampling="blurry")


def test_plan_rescale(make_scene: Callable[..., Path]) -> None:
    info = open_scene(make_scene(200, 220, dtype="uint16", seed=2))  # values 1..4095
    card = _card()
    with pytest.raises(IncompatibleSceneError, match=r"--rescale.*12-bit data.*0..4095"):
        plan_rescale(info, card, None)
    assert plan_rescale(dataclasses.replace(info, dtype="uint8"), card, None) is None
    pixels, valid = read_window(info, 0, 0, 200, 220)
    # percentiles come from the sample: here the sample covers the scene
    plan = plan_rescale(info, card, "percentile:5,95")
    assert plan is not None and plan.dtype == "uint8"
    for band in range(3):
        lo, hi = np.percentile(pixels[band][valid], [5, 95])
        assert plan.low[band] == pytest.approx(lo) and plan.high[band] == pytest.approx(hi)
    mapped, _ = read_window(dataclasses.replace(info, rescale=plan), 0, 0, 200, 220)
    assert mapped.dtype == np.uint8
    assert (mapped[0][pixels[0] <= plan.low[0]] == 0).all()
    assert (mapped[0][pixels[0] >= plan.high[0]] == 255).all()
    bits = plan_rescale(info, card, "bits")
    assert bits is not None and bits.high == (4095.0,) * 3
    fixed = plan_rescale(info, card, "0,2047")
    assert fixed is not None and fixed.low == (0.0,) * 3 and fixed.high == (2047.0,) * 3


@pytest.mark.parametrize("mask_kind", ["alpha", "msk", "nodata"])
def test_masks_survive_the_warp(tmp_path: Path, mask_kind: str) -> None:
    import rasterio
    from rasterio.enums import ColorInterp
    from rasterio.transform import from_origin

    height, width = 100, 120
    data = np.random.default_rng(1).integers(1, 255, (4, height, width), dtype=np.uint8)
    hole = (slice(40, 80), slice(20, 70))  # 0.2 m pixels: 8 x 10 m
    profile = dict(driver="GTiff", height=height, width=width, count=4, dtype="uint8",
                   crs="EPSG:32633", transform=from_origin(500000, 5e6, 0.2, 0.2))
    if mask_kind == "alpha":
        data[3] = 255
        data[3][hole] = 0
    else:  # band 4 is NIR: written as grey, not as GDAL's default alpha of 4-band uint8
        profile["photometric"] = "MINISBLACK"
    if mask_kind == "nodata":
        profile["nodata"] = 0
        data[:, hole[0], hole[1]] = 0
    path = tmp_path / "s.tif"
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=False), rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if mask_kind == "alpha":
            dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue,
                               ColorInterp.alpha]
        if mask_kind == "msk":
            mask = np.full((height, width), 255, np.uint8)
            mask[hole] = 0
            dst.write_mask(mask)
    planned = plan_resample(open_scene(path), 0.5, "auto")
    assert planned.warp is not None and (planned.height, planned.width) == (40, 48)
    _, valid = read_window(planned, 0, 0, planned.height, planned.width, bands=[1, 2, 3])
    assert not valid[17:31, 9:27].any()  # inside the hole (0.5 m pixels), off its edges
    assert valid[:15].all() and valid[33:].all()


@pytest.mark.parametrize(("pixel_size", "refused"),
                         [(2.0, False), (0.125, False), (2.02, True), (0.12, True), (30.0, True)])
def test_auto_resamples_only_within_the_factor(make_scene: Callable[..., Path],
                                               pixel_size: float, refused: bool) -> None:
    from geounet.config import AUTO_RESAMPLE_MAX_FACTOR

    assert AUTO_RESAMPLE_MAX_FACTOR == 4.0
    info = open_scene(make_scene(40, 50, pixel_size=pixel_size))
    if refused:
        with pytest.raises(IncompatibleSceneError,
                           match=r"within a factor 4: this warp would create .* px .*"
                                 r"--resample always"):
            plan_resample(info, 0.5, "auto")
    else:
        assert plan_resample(info, 0.5, "auto").pixel_size == pytest.approx(0.5)
    # always: any factor (the pixel ceiling is planning's, not this function's)
    assert plan_resample(info, 0.5, "always").width == pytest.approx(50 * pixel_size / 0.5,
                                                                     abs=1)
