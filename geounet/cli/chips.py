"""``geounet chips``: cut a scene and vector labels into labelled training chips."""

from __future__ import annotations

import click

from geounet.cli import options


def _class_layers(ctx: click.Context, param: click.Parameter,
                  value: tuple[str, ...]) -> dict[str, str] | None:
    if not value:
        return None
    out: dict[str, str] = {}
    for item in value:
        name, sep, layer = item.partition("=")
        if not sep or not name or not layer:
            raise click.BadParameter(
                f"{item!r} is not CLASS=LAYER; use e.g. --class-layer buildings=footprints.",
                param=param)
        out[name] = layer
    return out


@click.command()
@click.argument("scene", type=click.Path(exists=True))
@click.argument("labels", type=click.Path(exists=True, dir_okay=False), required=False)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Output directory (images/, masks/, split.csv, chips.json).")
@click.option("--chip-size", type=int, default=256, show_default=True, callback=options._positive,
              help="Chip side in pixels.")
@click.option("--class-layer", "class_layers", multiple=True, callback=_class_layers,
              help="CLASS=LAYER, repeatable, in class order (index 1, 2, ...). "
                   "Default: buildings=buildings, roads=roads.")
@options.line_width
@click.option("--min-labelled", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Skip chips with a smaller labelled (non-background) share.")
@click.option("--max-nodata", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
              help="Skip chips with a larger nodata share.")
@click.option("--val-fraction", type=click.FloatRange(0.0, 1.0), default=0.2, show_default=True,
              help="Share of split blocks held out for validation.")
@options.split_block
@options.mask_pattern
@options.mask_values
@options.classes
@options.seed
@options.overwrite
def chips(scene: str, labels: str | None, out_dir: str, chip_size: int,
          class_layers: dict[str, str] | None, line_width: float | None, min_labelled: float,
          max_nodata: float, val_fraction: float, split_block: int,
          mask_pattern: str | None, mask_values: tuple[int, ...] | None,
          classes: tuple[str, ...] | None, seed: int, overwrite: bool) -> None:
    """Cut SCENE and vector LABELS (GeoPackage, any CRS) into image + mask GeoTIFF chips with
    the scene's georeferencing and a spatially blocked train/val split.

    SCENE may also be a folder of labelled chips in any layout `geounet train` reads (LABELS
    then optional: one labels file for all chips); it is rewritten as a chips directory with
    class-index masks, split.csv and chips.json (--mask-pattern, --mask-values, --classes)."""
    from pathlib import Path

    from geounet.training.chips import make_chips

    ctx = click.get_current_context()
    folder = Path(scene).is_dir()
    # Options of the other mode would be silently ignored: name them instead.
    other = (("chip_size", "class_layers", "min_labelled", "max_nodata") if folder
             else ("mask_pattern", "mask_values", "classes"))
    given = [name for name in other
             if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE]
    if given:
        flags = ", ".join("--" + name.replace("_", "-").replace("class-layers", "class-layer")
                          for name in given)
        what = ("a folder of labelled chips (rewritten as they are)" if folder
                else "a scene file cut with vector LABELS")
        raise click.UsageError(
            f"{flags} do(es) not apply when SCENE is {what}; drop "
            + ("them" if len(given) > 1 else "it")
            + (", or give a scene file to cut." if folder
               else ", or give a folder of chips + masks to rewrite."))

    if folder:
        from geounet.training.layout import DatasetConfig, export_chips

        config = DatasetConfig(mask_pattern=mask_pattern, mask_values=mask_values,
                               classes=classes, labels=labels, line_width=line_width,
                               split_block=split_block)
        found = export_chips(scene, out_dir, config, val_fraction=val_fraction, seed=seed,
                             overwrite=overwrite)
        n_val = sum(r.split == "val" for r in found.records)
        click.echo(f"{len(found.records)} chips ({len(found.records) - n_val} train, {n_val} "
                   f"val, {found.n_buffer} buffer left out) in {out_dir}; classes "
                   f"{','.join(found.classes)}")
        return
    if labels is None:
        raise click.UsageError("give LABELS (a GeoPackage) with a SCENE file, e.g. "
                               "geounet chips scene.tif truth.gpkg --out chips.")

    summary = make_chips(scene, labels, out_dir, chip_size=chip_size, class_layers=class_layers,
                         line_width=line_width, min_labelled=min_labelled,
                         max_nodata=max_nodata, val_fraction=val_fraction,
                         split_block=split_block, seed=seed, overwrite=overwrite)
    click.echo(f"{summary.n_chips} chips ({summary.n_train} train, {summary.n_val} val, "
               f"{summary.n_skipped} skipped) in {summary.out_dir}")
