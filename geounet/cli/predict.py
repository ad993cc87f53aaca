"""``geounet predict``: run the U-Net over a scene into a Zarr store or a Cloud-Optimized GeoTIFF."""

from __future__ import annotations

import click

from geounet.cli import options
from geounet.config import Precision, ProbabilityDtype


def prediction_options(func: click.decorators.FC) -> click.decorators.FC:
    """The options ``predict`` and ``segment`` share, in help order."""
    for decorator in reversed(
        [
            options.model,
            options.bands,
            options.chunk_size,
            options.tile_size,
            options.batch_size,
            options.device,
            options.precision,
            options.probability_dtype,
            options.threshold,
            options.workers,
            options.scheduler_address,
            options.resume,
            options.allow_no_crs,
            options.overwrite,
        ]
    ):
        func = decorator(func)
    return func


@click.command()
@click.argument("scene")
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(dir_okay=True),
    help="Output: PRED.zarr (Zarr v3 store) or PRED.tif (Cloud-Optimized GeoTIFF).",
)
@prediction_options
@click.pass_context
def predict(
    ctx: click.Context,
    scene: str,
    out: str,
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
    """Run the U-Net over SCENE chunk by chunk into class probabilities and a class mask.

    The output is exact and seamless whatever the chunk size or worker count, and is written
    under a temporary name until complete. Example:

        geounet predict scene.tif --out pred.zarr --model model.pt
    """
    from geounet.cli.progress import progress_for
    from geounet.pipeline import predict as run_predict

    with progress_for(ctx) as bar:
        result = run_predict(
            scene, out, model=model, bands=bands, chunk_size=chunk_size, tile_size=tile_size,
            batch_size=batch_size, device=device, precision=precision,
            probability_dtype=probability_dtype, threshold=threshold, overwrite=overwrite,
            resume=resume, allow_no_crs=allow_no_crs, client=scheduler_address,
            workers=workers, progress=bar,
        )
    if not ctx.find_root().obj.get("quiet"):
        click.echo(result.summary())
