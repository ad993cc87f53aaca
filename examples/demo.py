"""The main job on built-in data (run by `make demo`): grows with the project."""

from __future__ import annotations

import sys
from pathlib import Path

from click.testing import CliRunner  # only to run the real CLI in-process

from geounet.cli.main import cli


def run(*args: str) -> None:
    print("$ geounet", " ".join(args), flush=True)
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    print(result.output, end="")
    if result.exit_code != 0:
        sys.exit(result.exit_code)


def main() -> None:
    out = Path("demo-out")
    out.mkdir(exist_ok=True)
    run("info")
    # a synthetic 2048 x 2048 scene (0.5 m, UTM 33N) with ground truth:
    # demo-out/scene.tif, truth.gpkg (buildings, roads), truth_mask.tif, synth.json
    run("synth", str(out), "--size", "2048", "--seed", "0", "--overwrite")


if __name__ == "__main__":
    main()
