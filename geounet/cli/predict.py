"""``geounet predict``: run the U-Net over a scene into a Zarr store or a Cloud-Optimized GeoTIFF."""

from __future__ import annotations

from typing import Any

import click

from geounet.cli import options


@click.command()
@click.argument("scene")
@options.out("Output: PRED.zarr (Zarr v3 store) or PRED.tif (Cloud-Optimized GeoTIFF).",
             dir_okay=True)
@options.prediction_options
@click.pass_context
def predict(ctx: click.Context, scene: str, out: str, **kwargs: Any) -> None:
    """Run the U-Net over SCENE chunk by chunk into class probabilities and a class mask.

    The output is exact and seamless whatever the chunk size or worker count, and is written
    under a temporary name until complete. Example:

        geounet predict scene.tif --out pred.zarr --model model.pt
    """
    from geounet.cli.progress import progress_for
    from geounet.run.pipeline import predict as run_predict

    predict_options = options.pop_predict_options(kwargs)
    client = options.pop_client(kwargs)
    with progress_for(ctx) as bar:
        result = run_predict(scene, out, predict_options, client=client, progress=bar,
                             **kwargs)
    if not ctx.find_root().obj.get("quiet"):
        click.echo(result.summary())
