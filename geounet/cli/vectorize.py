"""``geounet vectorize``: a prediction raster to seam-free polygons and road centerlines."""

from __future__ import annotations

from typing import Any

import click

from geounet.cli import options, vector_options


def _class_list(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    names = [part.strip() for part in value.split(",") if part.strip()]
    if not names:
        raise click.BadParameter(
            f"{value!r} names no class; use e.g. buildings,roads.", param=param
        )
    return names


@click.command()
@click.argument("pred", type=click.Path(exists=True))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Output .gpkg (layers per class), .parquet or .fgb (one file per layer).")
@click.option("--classes", callback=_class_list, default=None,
              help="Comma-separated classes to vectorize. Default: all but background.")
@click.option("--chunk-size", type=int, default=None, callback=options._positive,
              help="Window side in pixels. Default: the store's chunking, else 2048.")
@click.option("--cut-size", type=int, default=8192, show_default=True, callback=options._positive,
              help="Road polygons are cut on a scene-anchored grid of this side (bounded "
              "memory); buildings and centerlines are never cut.")
@vector_options.vectorize_options
@options.overwrite
@click.pass_context
def vectorize(ctx: click.Context, pred: str, out: str, **kwargs: Any) -> None:
    """Turn PRED (a geounet .zarr store or GeoTIFF class mask) into GeoPackage polygons.

    Objects crossing chunk seams are merged exactly; road centerlines stay connected.
    """
    from geounet.vectorization import VectorizeOptions
    from geounet.vectorization import vectorize as run

    overwrite = kwargs.pop("overwrite")
    result = run(pred, out, VectorizeOptions(**kwargs), overwrite=overwrite)
    for layer, count in result.counts.items():
        click.echo(f"{layer:<18} {count:>9} features  {result.paths[layer]}")
    click.echo(
        f"{result.pixels / 1e6:.1f} MP in {result.seconds:.1f} s "
        f"({result.megapixels_per_second:.1f} MP/s)"
    )
