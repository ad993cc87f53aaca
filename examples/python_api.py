"""geounet from Python: synthesize a scene, predict into Zarr, read it with xarray, vectorize, score.

    python examples/python_api.py [OUT_DIR] [--size 1024]

Uses the built-in model (trained on synthetic scenes, for demos). Every step is one public
function; the CLI commands call the same functions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import geounet


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default="api-out")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    out = Path(args.out_dir)

    scene = geounet.synthesize_scene(out / "scene", size=args.size, seed=args.seed, overwrite=True)
    print("\n".join(scene.describe()))

    # Scheduler "threads" runs in this process with one thread (debugging); leave it out to
    # run on one thread per core here, or pass workers=N for a local cluster of N processes.
    result = geounet.predict(scene.scene_path, out / "pred.zarr", chunk_size=512,
                             client="threads", overwrite=True)
    print(result.summary())

    import rioxarray  # noqa: F401  (registers the .rio accessor)
    import xarray as xr

    pred = xr.open_zarr(out / "pred.zarr")
    print("store:", dict(pred.sizes), "CRS", pred.mask.rio.crs,
          "transform", tuple(pred.mask.rio.transform())[:6])

    vectors = geounet.vectorize(out / "pred.zarr", out / "objects.gpkg", regularize=True,
                                overwrite=True)
    print("features per layer:", vectors.counts)

    report = geounet.evaluate(out / "pred.zarr", scene.mask_path)
    print(report.format_table())


if __name__ == "__main__":
    main()
