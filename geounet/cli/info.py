"""``geounet info``: versions of geounet and its stack, and the CUDA devices torch sees."""

from __future__ import annotations

import click


@click.command()
def info() -> None:
    """Show versions of geounet, torch, GDAL/rasterio, dask, zarr, pyogrio and CUDA devices."""
    from geounet.environment import describe_environment

    for key, value in describe_environment().items():
        click.echo(f"{key:<12} {value}")
