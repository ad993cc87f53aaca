"""``geounet synth``: write a synthetic georeferenced scene with ground truth."""

from __future__ import annotations

import click

from geounet.cli import options
from geounet.config import DType, choices


@click.command()
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option(
    "--size", type=int, default=4096, show_default=True, callback=options._positive,
    help="Side of a square scene in pixels.",
)
@click.option("--height", type=int, default=None, callback=options._positive,
              help="Scene height in pixels (overrides --size).")
@click.option("--width", type=int, default=None, callback=options._positive,
              help="Scene width in pixels (overrides --size).")
@options.seed
@click.option(
    "--band-count", type=click.IntRange(3, 4), default=3, show_default=True,
    help="Number of bands: 3 (R, G, B) or 4 (R, G, B, NIR).",
)
@click.option(
    "--dtype", type=click.Choice(choices(DType)), default="uint8", show_default=True,
    help="Pixel type: uint8 (0-255) or uint16 (12-bit values up to 4095).",
)
@click.option("--crs", default="EPSG:32633", show_default=True,
              help="Projected CRS of the scene (EPSG code, WKT or PROJ string).")
@click.option("--pixel-size", type=float, default=0.5, show_default=True,
              help="Metres per pixel.")
@click.option(
    "--nodata-border", type=click.IntRange(min=0), default=0, show_default=True,
    help="Width in pixels of a nodata frame; > 0 declares nodata 0 in scene.tif.",
)
@click.option(
    "--chunk-size", type=int, default=1024, show_default=True, callback=options._positive,
    help="Rendering window side (multiple of 256); changes memory and speed, not pixels.",
)
@options.overwrite
@click.pass_context
def synth(
    ctx: click.Context,
    out_dir: str,
    size: int,
    height: int | None,
    width: int | None,
    seed: int,
    band_count: int,
    dtype: str,
    crs: str,
    pixel_size: float,
    nodata_border: int,
    chunk_size: int,
    overwrite: bool,
) -> None:
    """Write scene.tif, truth.gpkg, truth_mask.tif and synth.json into OUT_DIR.

    The scene shows a curved road network and buildings (rectangles and L-shapes with
    shadows) on vegetation and bare soil; truth.gpkg holds building polygons and road
    centerlines with a width in metres; truth_mask.tif is 0 background, 1 buildings,
    2 roads, 255 nodata. The same seed gives byte-identical files.
    """
    from geounet.synth import synthesize_scene

    result = synthesize_scene(
        out_dir, size, seed, height=height, width=width, band_count=band_count,
        dtype=dtype,  # type: ignore[arg-type]
        crs=crs, pixel_size=pixel_size, nodata_border=nodata_border, chunk_size=chunk_size,
        overwrite=overwrite,
    )
    if not (ctx.obj or {}).get("quiet"):
        for line in result.describe():
            click.echo(line)
