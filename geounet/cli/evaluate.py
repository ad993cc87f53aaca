"""``geounet evaluate``: score a prediction against ground truth and print a table."""

from __future__ import annotations

import click

from geounet.cli import options


@click.command()
@click.argument("pred", type=click.Path(exists=True))
@click.argument("truth", type=click.Path(exists=True))
@click.option("--classes", default=None,
              help="Comma-separated class names in index order. Default: from the inputs, "
                   "else background,buildings,roads.")
@click.option("--iou-threshold", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.5,
              show_default=True, help="IoU a predicted building needs to match a true one.")
@click.option("--centerline-tolerance", type=click.FloatRange(0.0), default=2.0,
              show_default=True, help="Ground metres within which road centerlines count as matching (any CRS, "
                   "geodesic for lon/lat).")
@click.option("--line-width", type=click.FloatRange(0.0, min_open=True), default=None,
              help="Metres; width of vector road lines without a 'width' attribute.")
@click.option("--graph", "graph", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A predicted road graph to score with APLS against TRUTH's road lines: the "
                   "GeoPackage of `geounet segment`/`vectorize` (layer road_edges) or any line "
                   "file. Default: PRED itself when it holds road_edges and TRUTH is vectors.")
@click.option("--apls-spacing", type=click.FloatRange(0.0, min_open=True), default=50.0,
              show_default=True, help="APLS: metres between control nodes along the edges.")
@click.option("--apls-snap", type=click.FloatRange(0.0, min_open=True), default=4.0,
              show_default=True,
              help="APLS: the farthest (metres) a control node is snapped onto the other graph.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the scores as JSON to this file.")
@options.overwrite
def evaluate(pred: str, truth: str, classes: str | None, iou_threshold: float,
             centerline_tolerance: float, line_width: float | None, graph: str | None,
             apls_spacing: float, apls_snap: float, json_path: str | None,
             overwrite: bool) -> None:
    """Score PRED against TRUTH: pixel precision/recall/IoU/F1 per class, building object F1
    (IoU matching), road centerline precision/recall and, for a road graph, APLS.

    PRED and TRUTH are class-mask GeoTIFFs, geounet COGs (band 1), geounet Zarr stores, or a
    GeoPackage with `buildings` polygons and `roads` lines (burnt onto the raster's grid).
    Pixels that are nodata (255) on either side are left out. APLS (the SpaceNet road graph
    metric) scores --graph, or PRED's road_edges layer, against TRUTH's road lines (any CRS);
    with two vector files only APLS is scored.
    """
    from geounet.evaluation import check_json_output
    from geounet.evaluation import evaluate as run_evaluate

    if json_path:
        check_json_output(json_path, overwrite=overwrite)
    names = tuple(c.strip() for c in classes.split(",")) if classes else None
    report = run_evaluate(pred, truth, classes=names, iou_threshold=iou_threshold,
                          centerline_tolerance=centerline_tolerance, line_width=line_width,
                          graph=graph, apls_spacing=apls_spacing, apls_snap=apls_snap)
    click.echo(report.format_table())
    if json_path:
        report.to_json(json_path, overwrite=overwrite)
