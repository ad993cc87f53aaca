"""``geounet batch``: many scenes in one job on one cluster, with a result table."""

from __future__ import annotations

from typing import Any

import click

from geounet.cli import options, vector_options


@click.command()
@click.argument("scenes", nargs=-1)
@click.option(
    "--out-dir",
    "-o",
    required=True,
    help="Folder (created if missing) or s3://bucket/prefix for every scene's outputs.",
)
@click.option(
    "--manifest",
    "manifests",
    multiple=True,
    help="A .txt file with one scene path or URL per line, or a .csv file with a 'path' "
    "column (repeatable). Relative entries are taken from the manifest's folder.",
)
@options.batch_raster
@options.vector_format
@click.option(
    "--work-dir",
    default=None,
    type=click.Path(file_okay=False),
    help="With an s3:// --out-dir: where stores are built before upload (workers must reach "
    "it; keep it for --resume). Default: a folder in the system temp dir.",
)
@options.prediction_options
@vector_options.vectorize_options
@click.pass_context
def batch(ctx: click.Context, scenes: tuple[str, ...], out_dir: str, **kwargs: Any) -> None:
    """Segment many SCENES in one job: paths, globs, s3:// URLs or manifests (.txt/.csv).

    Each scene NAME.tif gets NAME.gpkg (or NAME_<layer>.parquet) and, with --raster, NAME.zarr
    or NAME.tif under --out-dir; the table of results is printed and written as batch.csv and
    batch.json there. A failing scene does not stop the others; the exit code is 1 if any
    failed. Examples:

        geounet batch 'scenes/*.tif' --out-dir out/

        geounet batch --manifest scenes.csv --out-dir s3://bucket/run1 --raster zarr --resume
    """
    from geounet.batch.job import run_batch
    from geounet.batch.options import BatchOptions
    from geounet.cli.progress import progress_for

    batch = BatchOptions(raster=kwargs.pop("raster"), vector_format=kwargs.pop("vector_format"),
                         vectorize=vector_options.pop_vectorize_options(kwargs),
                         work_dir=kwargs.pop("work_dir"))
    predict_options = options.pop_predict_options(kwargs)
    client = options.pop_client(kwargs)
    with progress_for(ctx) as bar:
        result = run_batch(scenes, out_dir, predict_options, batch=batch, client=client,
                           progress=bar, **kwargs)
    click.echo(result.format_table())
    if result.tables:
        click.echo(f"table: {', '.join(result.tables)}")
    if not result.ok:
        ctx.exit(1)
