"""``geounet segment``: a scene to GeoPackage polygons (predict, then vectorize) in one run."""

from __future__ import annotations

import click

from geounet.cli.predict import prediction_options
from geounet.config import Precision, ProbabilityDtype


@click.command()
@click.argument("scene")
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(dir_okay=False),
    help="GeoPackage to write (one layer per class), e.g. objects.gpkg.",
)
@click.option(
    "--raster-out",
    type=click.Path(dir_okay=True),
    default=None,
    help="Also keep the prediction raster: PRED.zarr or PRED.tif. Default: not kept.",
)
@prediction_options
@click.pass_context
def segment(
    ctx: click.Context,
    scene: str,
    out: str,
    raster_out: str | None,
    model: str | None,
    bands: tuple[int, ...] | None,
    chunk_size: int,
    tile_size: int | None,
    batch_size: int | None,
    device: str,
    precision: Precision,
    probability_dtype: ProbabilityDtype,
    threshold: float | None,
    workers: int | None,
    scheduler_address: str | None,
    resume: bool,
    allow_no_crs: bool,
    overwrite: bool,
) -> None:
    """Segment SCENE end to end into building and road polygons in a GeoPackage.

    Example:

        geounet segment scene.tif --out objects.gpkg --model model.pt --raster-out pred.tif
    """
    from geounet.cli.progress import progress_for
    from geounet.pipeline import segment as run_segment

    with progress_for(ctx) as bar:
        result = run_segment(
            scene, out, raster_out=raster_out, model=model, bands=bands,
            chunk_size=chunk_size, tile_size=tile_size, batch_size=batch_size, device=device,
            precision=precision, probability_dtype=probability_dtype, threshold=threshold,
            overwrite=overwrite, resume=resume, allow_no_crs=allow_no_crs,
            client=scheduler_address, workers=workers, progress=bar,
        )
    if not ctx.find_root().obj.get("quiet"):
        click.echo(result.summary())
