"""Tests for the recipes in ``workflows/``: the local one runs against a real scheduler and
workers started by its script; SLURM and Kubernetes are checked as far as possible without
those systems (the generated job script, scripts that parse, manifests naming the image)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_pipeline import make_checkpoint

from geounet.batch import job as batch

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"


def _images(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "image":
                yield value
            else:
                yield from _images(value)
    elif isinstance(node, list):
        for item in node:
            yield from _images(item)


def _containers(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "containers":
                yield from value
            else:
                yield from _containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from _containers(item)


def test_every_recipe_has_a_readme() -> None:
    for name in ("local", "slurm", "kubernetes"):
        text = (WORKFLOWS / name / "README.md").read_text()
        assert "geounet batch" in text or "geounet" in text
    assert "resume" in (WORKFLOWS / "README.md").read_text()


@pytest.mark.parametrize("script", ["local/run_batch.sh", "slurm/geounet_batch.sbatch",
                                    "kubernetes/build.sh"])
def test_shell_scripts_parse(script: str) -> None:
    path = WORKFLOWS / script
    subprocess.run(["bash", "-n", str(path)], check=True)
    if script != "kubernetes/build.sh":
        text = path.read_text()
        assert re.search(r'geounet batch "\$@" --scheduler "\$ADDRESS"', text) or \
            re.search(r'\$GEOUNET batch "\$@" --scheduler "\$ADDRESS"', text)


def test_slurm_job_script() -> None:
    pytest.importorskip("dask_jobqueue")
    spec = importlib.util.spec_from_file_location("slurm_cluster",
                                                  WORKFLOWS / "slurm" / "slurm_cluster.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]

    cluster = module.make_cluster(cores=8, memory="16GB", walltime="01:30:00", queue="cpu",
                                  account="proj42")
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert script.startswith("#!/")
    for line in ("#SBATCH -J geounet-worker", "#SBATCH -p cpu", "#SBATCH -A proj42",
                 "#SBATCH -t 01:30:00", "#SBATCH --cpus-per-task=8",
                 "export OMP_NUM_THREADS=2"):
        assert line in script, (line, script)
    assert "distributed.cli.dask_worker" in script or "dask worker" in script
    assert "--nworkers 4" in script and "--nthreads 1" in script
    assert sys.executable in script  # workers run the same Python (shared file system)

    gpu = module.make_cluster(cores=8, memory="16GB", gpus=2)
    try:
        script = gpu.job_script()
    finally:
        gpu.close()
    assert "#SBATCH --gres=gpu:2" in script and "--nworkers 2" in script
    assert "export OMP_NUM_THREADS=4" in script


def test_kubernetes_manifests_name_the_built_image() -> None:
    import yaml

    folder = WORKFLOWS / "kubernetes"
    built = re.search(r'IMAGE="\$\{IMAGE:-([^}]+)\}"', (folder / "build.sh").read_text())
    assert built is not None
    image = built.group(1)
    assert "workflows/kubernetes/Dockerfile" in (folder / "build.sh").read_text()
    dockerfile = (folder / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "\nFROM python:" in dockerfile
    assert "COPY geounet ./geounet" in dockerfile and 'pip install ".[s3]"' in dockerfile
    assert image in dockerfile  # the build command in its header names the same tag

    kinds = {}
    for name in ("daskcluster.yaml", "daskjob.yaml"):
        docs = [d for d in yaml.safe_load_all((folder / name).read_text()) if d]
        assert len(docs) == 1
        doc = docs[0]
        assert doc["apiVersion"] == "kubernetes.dask.org/v1"
        kinds[doc["kind"]] = doc
        images = set(_images(doc))
        assert images == {image}, (name, images)
        assert len(list(_containers(doc))) >= 2
    assert set(kinds) == {"DaskCluster", "DaskJob"}
    job = kinds["DaskJob"]["spec"]["job"]["spec"]["containers"][0]
    command = " ".join(job["command"] + job["args"])
    assert "geounet batch" in command and "$DASK_SCHEDULER_ADDRESS" in command
    worker = kinds["DaskJob"]["spec"]["cluster"]["spec"]["worker"]["spec"]["containers"][0]
    assert worker["args"][:2] == ["dask", "worker"]
    assert {e["name"] for e in worker["env"]} >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


@pytest.mark.cluster
def test_local_workflow_matches_local_batch(make_scene: Callable[..., Path],
                                           tmp_path: Path) -> None:
    """The copyable local recipe: `dask scheduler` + two `dask worker` processes (in their own
    working directory), `geounet batch` with relative paths against them; outputs equal an
    in-process batch."""
    from geounet.output import open_prediction

    data = tmp_path / "data"
    data.mkdir()
    model = make_checkpoint(data / "m.pt")
    scenes = [make_scene(150, 173, seed=1, name="data/a.tif"),
              make_scene(100, 120, seed=2, name="data/b.tif")]
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    (client_dir / "scenes.txt").write_text("../data/a.tif\n../data/b.tif\n")
    common = ["--precision", "fp32", "--chunk-size", "64", "--raster", "zarr"]
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "WORKERS": "2", "TORCH_THREADS": "1",
           "GEOUNET": f"{sys.executable} -m geounet", "DASK": f"{sys.executable} -m dask",
           "PYTHON": sys.executable, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        ["bash", str(WORKFLOWS / "local" / "run_batch.sh"), "scenes.txt", "--out-dir", "out",
         "--model", "../data/m.pt", *common],
        cwd=client_dir, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 scene(s): 2 done" in proc.stdout
    assert re.search(r"Dask scheduler tcp://127\.0\.0\.1:\d+ with 2 worker", proc.stderr)

    local = batch.run_batch(scenes, tmp_path / "local", model=model, client="threads",
                            precision="fp32", chunk_size=64, raster="zarr")
    out = client_dir / "out"
    remote_rows = json.loads((out / "batch.json").read_text())["scenes"]
    assert [r["status"] for r in remote_rows] == ["done", "done"]
    assert [r["scene"] for r in remote_rows] == [str(s) for s in scenes]  # made absolute
    assert [r["objects"] for r in remote_rows] == [r.objects for r in local.scenes]
    import geopandas as gpd
    import pyogrio

    for scene in ("a", "b"):
        for layer, _ in pyogrio.list_layers(out / f"{scene}.gpkg"):
            mine = gpd.read_file(out / f"{scene}.gpkg", layer=layer)
            ref = gpd.read_file(tmp_path / "local" / f"{scene}.gpkg", layer=layer)
            assert sorted(mine.geometry.to_wkb()) == sorted(ref.geometry.to_wkb())
        x, y = open_prediction(out / f"{scene}.zarr"), open_prediction(
            tmp_path / "local" / f"{scene}.zarr")
        np.testing.assert_array_equal(x.probabilities.values, y.probabilities.values)
