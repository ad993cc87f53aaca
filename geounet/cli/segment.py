"""``geounet segment``: a scene to GeoPackage polygons (predict, then vectorize) in one run."""

from __future__ import annotations

from typing import Any

import click

from geounet.cli import options, vector_options


@click.command()
@click.argument("scene")
@options.out("GeoPackage to write (one layer per class), e.g. objects.gpkg.",
             dir_okay=False)
@click.option(
    "--raster-out",
    type=click.Path(dir_okay=True),
    default=None,
    help="Also keep the prediction raster: PRED.zarr or PRED.tif. Default: not kept.",
)
@options.prediction_options
@vector_options.vectorize_options
@click.pass_context
def segment(
    ctx: click.Context, scene: str, out: str, raster_out: str | None, **kwargs: Any
) -> None:
    """Segment SCENE end to end into building and road polygons in a GeoPackage.

    Prediction options are those of `geounet predict`, polygon options those of
    `geounet vectorize`. Example:

        geounet segment scene.tif --out objects.gpkg --model model.pt --raster-out pred.tif
    """
    from geounet.cli.progress import progress_for
    from geounet.run.pipeline import segment as run_segment

    vectorize = vector_options.pop_vectorize_options(kwargs)
    predict_options = options.pop_predict_options(kwargs)
    client = options.pop_client(kwargs)
    with progress_for(ctx) as bar:
        result = run_segment(
            scene, out, predict_options, raster_out=raster_out, vectorize=vectorize,
            client=client, progress=bar, **kwargs,
        )
    if not ctx.find_root().obj.get("quiet"):
        click.echo(result.summary())
