"""Side by side: geounet `predict` vs NRCan geo-inference 3.2.4 on the same weights (issue 11).

Each tool runs as a fresh process on the same synthetic uint8 3-band GeoTIFF, with the same
random U-Net weights (depth 4, base 16, seed 0), on the CPU; the tools alternate order over
``--reps`` rounds. Measured per run: wall seconds of the whole process (interpreter start,
imports, model load, prediction, output written) and the peak RSS of the whole process tree
(the process and all its children, e.g. geounet's LocalCluster workers), sampled every 0.1 s
with psutil. Prints a markdown table per scene size (medians over rounds; memory is the
largest peak of the rounds) to paste into ``benchmarks/RESULTS.md``; ``--json`` writes every
run. A sanity row compares the class masks of the tools (same network, so they must mostly
agree; an all-background geo-inference mask would mean its model call failed silently).

Install geo-inference into its own virtualenv (it pins its own torch and needs torchgeo and
torchvision), beside the checkout, from the repository root::

    python3 -m venv ../gi-venv
    ../gi-venv/bin/pip install torch==2.14.1 torchvision==0.29.1   # ~5.5 GB CUDA build, runs on CPU
    ../gi-venv/bin/pip install geo-inference==3.2.4
    ../gi-venv/bin/python -c "import geo_inference.geo_inference"   # check

(On x86_64 Linux these two torch/torchvision pins are a pair that installs with
geo-inference 3.2.4; took about 1.5 + 2 min from a local package mirror.) The script finds that
interpreter as ``--gi-python``, else ``$GEOINFERENCE_PYTHON``, else ``../gi-venv/bin/python``
relative to the repository root. geounet runs with the interpreter that runs this script
(``python -m geounet``), or ``--geounet-python``.

Commands (the quiet full-size runs, on an otherwise idle machine):

    python benchmarks/bench_geoinference.py --size 4096 --reps 2 --json gi-4096.json
    python benchmarks/bench_geoinference.py --size 8192 --reps 2 --json gi-8192.json
    python benchmarks/bench_geoinference.py --size 16384 --reps 1 --json gi-16384.json

geo-inference alone takes about 70 s at 4096², 5 min at 8192² and 20 min at 16384² on an
idle 2-core machine (0.24 MP/s); ``--tools geounet-valid,geounet-same`` leaves it out.
Making the synthetic scene takes a few minutes at 16384² (once: it is cached in
``--workdir``); ``--scene noise`` is quicker and costs the models the same. Smoke test (checks
that it runs; wall times of a busy machine mean nothing):

    python benchmarks/bench_geoinference.py --size 1024 --reps 1

What each tool does with the same weights:

- **geounet-int8** (issue 20): the valid-padding checkpoint with ``--precision int8 --engine
  auto`` (the fastest installed int8 engine: OpenVINO, else ONNX Runtime): the model is
  quantized after calibration on 9 crops of this scene (docs/engine.md, "int8"); the cached
  int8 model is removed before each run, so every run pays calibration and quantization.
  Before any timing the script exports both checkpoints once for each installed engine (the
  one-time ONNX / OpenVINO export per checkpoint), so no timed run pays it.
- **geounet-valid / geounet-same** run ``geounet predict``'s defaults, which since issue 20
  include ``--engine auto`` (OpenVINO or ONNX Runtime where installed, for scenes of 4.2 MP or
  more) and ``--precision auto`` (int8 on a VNNI/AMX CPU for scenes of 16.8 MP or more); pass
  ``--geounet-args "--engine torch --precision fp32"`` for the issue-11 setting.

- **geounet** (``geounet predict SCENE --model CKPT --out OUT.zarr --device cpu``, all other
  settings default): reads each chunk (2048²) with its halo, normalizes ``(x - 127) / 50`` per
  band (the model card), runs tiles in batches of 1 (channels_last fp32, or bf16 where the
  CPU has it: ``--precision auto``), softmax; valid padding: 1212² tiles cropped to exact
  1028² cores, no blending; same padding: 1088² tiles (1024² cores) with 32 px overlap per
  side blended with a tapered window, each tile run once (the seams between chunks are
  blended in a second round from the tiles' kept outputs). Writes uint8 probabilities
  (3 bands) and the class mask to Zarr. In one process on Dask's threaded scheduler, one
  thread per core (at most 4) with cores // threads torch threads each.
- **geo-inference** (``GeoInference(model=TS, device="cpu", num_classes=3)(scene,
  patch_size=512)``, all other settings default): reads the scene with rioxarray in 256²
  dask chunks (stride = patch / 2), zero-pads it to a multiple of 256, and runs the
  TorchScript model on every 512² patch at stride 256 (each pixel is predicted 4 times),
  batch 1, on the **raw uint8 pixels** (``torch.as_tensor(chunk)``: no scaling, no
  normalization, no dtype change), in a dask thread pool of cores - 1 threads. Each patch's
  output is multiplied by a 2-D Hann window (flattened at the scene edges), the four
  overlapping quarters are summed and divided by the summed weights (float64), then argmax
  over classes (or ``> 0.3`` for one class). No test-time augmentation (off by default).
  All-zero pixels count as nodata (255) when the file declares none. Writes only the uint8
  class mask, a tiled GeoTIFF. Its own default patch is 1024 (``--patch-size 1024``); 512 is
  the size the issue measured. With many cores its dask pool (cores - 1 threads) times torch's
  intra-op threads oversubscribes the CPU; on 2 cores it is 1 thread calling a 2-thread torch.

So the TorchScript given to geo-inference is geounet's same-padding network wrapped to do
what geounet does around it: ``x.float()``, ``(x - 127) / 50``, the U-Net, softmax over the
3 classes (geo-inference blends what the model returns, and geounet blends probabilities).
Before timing, the script checks that the TorchScript gives geounet's probabilities on a
random 512² tile (max abs difference printed). geo-inference cannot run a valid-padding
network (its outputs must be patch-sized), so both geounet rows compare with the same
geo-inference row. The mask check therefore expects geounet-same to agree closely with
geo-inference (0.95 at 1024²: only the blending differs), geounet-valid much less (0.6 with
random weights: without zero padding at every convolution it is another function of the same
weights).

Peak RSS sums the resident memory of every process of the tree, so libraries shared between
geounet's worker processes count once per process (as in the issue's figures).

Not equal between the tools, and not fixable here: geounet writes 3 probability bands plus the
mask, geo-inference the mask only; geounet uses channels_last and may use bf16 (the header
says which; pass ``--geounet-args "--precision fp32"`` for fp32 on both), geo-inference runs
the TorchScript as given (NCHW fp32); each tool uses its own default parallelism; the tools
use different torch versions (the header gives both).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TOOLS = ("geounet-valid", "geounet-same", "geounet-int8", "geo-inference")
INT8_ARGS = ["--precision", "int8", "--engine", "auto"]
GI = "geo-inference"
CLASSES = ("background", "buildings", "roads")
MEAN, STD = 127.0, 50.0
INSTALL = (
    "python3 -m venv ../gi-venv\n"
    "    ../gi-venv/bin/pip install torch==2.14.1 torchvision==0.29.1\n"
    "    ../gi-venv/bin/pip install geo-inference==3.2.4"
)


# ---- the geo-inference side (runs under the geo-inference venv's python) ---------------------


def run_geoinference(scene: str, model: str, out_dir: str, patch_size: int, classes: int) -> None:
    """One geo-inference run with its defaults, on the CPU; prints its in-process seconds."""
    from geo_inference.geo_inference import GeoInference

    start = time.perf_counter()
    tool = GeoInference(model=model, work_dir=out_dir, device="cpu", num_classes=classes)
    loaded = time.perf_counter()
    mask = tool(scene, patch_size=patch_size)
    done = time.perf_counter()
    print(json.dumps({"mask": mask, "load_s": loaded - start, "predict_s": done - loaded}))


# ---- inputs: scene, weights, TorchScript -------------------------------------------------------


def gi_python(option: str | None) -> Path:
    """The geo-inference interpreter: option, $GEOINFERENCE_PYTHON, or ../gi-venv beside the repo."""
    path = Path(option or os.environ.get("GEOINFERENCE_PYTHON")
                or ROOT.parent / "gi-venv" / "bin" / "python")
    check = subprocess.run([str(path), "-c", "import geo_inference.geo_inference"],
                           check=False, capture_output=True, text=True) if path.is_file() else None
    if check is None or check.returncode:
        why = "does not exist" if check is None else (check.stderr.strip().splitlines() or ["?"])[-1]
        raise SystemExit(
            f"geo-inference python {path} {why}. Install geo-inference into its own venv, from "
            f"the repository root:\n    {INSTALL}\nthen pass --gi-python PATH or set "
            f"GEOINFERENCE_PYTHON (default: ../gi-venv/bin/python beside the repository).")
    return path


def make_scene(work: Path, size: int, kind: str) -> Path:
    """The test scene of ``size``², cached in ``work``: geounet's synth scene or smooth noise."""
    scene = work / f"scene-{kind}-{size}.tif"
    if scene.exists():
        return scene
    if kind == "synth":
        from geounet.synth import synthesize_scene

        result = synthesize_scene(work / f"synth-{size}", size=size, seed=0, overwrite=True)
        shutil.move(str(result.scene_path), scene)
        shutil.rmtree(result.out_dir)
        return scene
    sys.path.insert(0, str(HERE))
    from bench_predict import write_big_scene

    return write_big_scene(scene, size)


def _scripted_class() -> type:
    """The TorchScript-able wrapper: raw pixels in, softmax probabilities out."""
    import torch
    from torch import nn

    class GeoInferenceUNet(nn.Module):
        """geounet's same-padding U-Net as geo-inference runs it (the same modules)."""

        def __init__(self, net: nn.Module, mean: float, std: float) -> None:
            super().__init__()
            self.encoders = net.encoders
            self.pool = net.pool
            self.bottleneck = net.bottleneck
            self.ups = net.ups
            self.decoders = net.decoders
            self.head = net.head
            bands = net.config.in_channels
            self.register_buffer("mean", torch.full((1, bands, 1, 1), mean))
            self.register_buffer("inv_std", torch.full((1, bands, 1, 1), 1.0 / std))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = (x.float() - self.mean) * self.inv_std
            skips: list[torch.Tensor] = []
            for encoder in self.encoders:
                x = encoder(x)
                skips.append(x)
                x = self.pool(x)
            x = self.bottleneck(x)
            level = len(skips) - 1
            for up, decoder in zip(self.ups, self.decoders):
                x = up(x)
                x = decoder(torch.cat([skips[level], x], dim=1))
                level -= 1
            return torch.softmax(self.head(x), dim=1)

    return GeoInferenceUNet


def make_models(work: Path, depth: int, base: int, seed: int) -> dict[str, Path]:
    """One set of random weights as a valid and a same checkpoint and a TorchScript.

    Returns paths keyed ``valid``, ``same``, ``torchscript``, cached in ``work``; prints the
    max abs difference between the TorchScript's and geounet's probabilities on a random tile.
    """
    import numpy as np
    import torch

    from geounet.engine.inference import get_runner
    from geounet.model import ModelCard, UNet, UNetConfig, save_checkpoint

    stem = f"unet-d{depth}-b{base}-s{seed}"
    paths = {"valid": work / f"{stem}-valid.pt", "same": work / f"{stem}-same.pt",
             "torchscript": work / f"{stem}-same.torchscript.pt"}
    if all(p.exists() for p in paths.values()):
        return paths
    torch.manual_seed(seed)
    nets = {"same": UNet(UNetConfig(in_channels=3, num_classes=len(CLASSES), depth=depth,
                                    base_channels=base, padding="same"))}
    nets["valid"] = UNet(UNetConfig(in_channels=3, num_classes=len(CLASSES), depth=depth,
                                    base_channels=base, padding="valid"))
    nets["valid"].load_state_dict(nets["same"].state_dict())  # the same tensors
    for padding, net in nets.items():
        card = ModelCard(net.config, bands=(1, 2, 3), mean=(MEAN,) * 3, std=(STD,) * 3,
                         classes=CLASSES, pixel_size=0.5, dtype="uint8",
                         value_range=(0.0, 255.0),
                         description=f"random weights (seed {seed}) for bench_geoinference")
        save_checkpoint(paths[padding], net, card, overwrite=True)
    wrapper = _scripted_class()(nets["same"].eval(), MEAN, STD).eval()
    torch.jit.save(torch.jit.script(wrapper), str(paths["torchscript"]))

    pixels = np.random.default_rng(seed).integers(0, 256, (1, 3, 512, 512), dtype=np.uint8)
    scripted = torch.jit.load(str(paths["torchscript"]))
    with torch.no_grad():
        theirs = scripted(torch.from_numpy(pixels)).numpy()
    runner = get_runner(str(paths["same"]), "cpu", "fp32")
    ours = runner.forward(runner.normalize(pixels[0])[None])
    print(f"TorchScript vs geounet probabilities on a 512² tile: max abs diff "
          f"{float(np.abs(theirs - ours).max()):.1e}", file=sys.stderr)
    return paths


# ---- running and measuring ---------------------------------------------------------------------


def run_tree(cmd: list[str], log: Path, interval: float = 0.1) -> tuple[float, int, str]:
    """Run ``cmd``; return (wall s, peak RSS bytes of the process and all children, stdout)."""
    from _proctree import run_measured

    with log.open("w") as err:
        wall, peak, out, code = run_measured(cmd, stderr=err, interval=interval)
    if code:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise SystemExit(f"failed ({code}): {shlex.join(cmd)}\n{tail}")
    return wall, peak, out


def tool_command(tool: str, scene: Path, models: dict[str, Path], out: Path,
                 args: argparse.Namespace) -> list[str]:
    if tool == GI:
        return [str(args.gi_python), str(Path(__file__).resolve()), "_geoinference", str(scene),
                str(models["torchscript"]), str(out), str(args.patch_size), str(len(CLASSES))]
    padding = "valid" if tool == "geounet-int8" else tool.split("-")[1]
    int8 = INT8_ARGS if tool == "geounet-int8" else []
    return [args.geounet_python, "-m", "geounet", "predict", str(scene), "--model",
            str(models[padding]), "--out", str(out / "pred.zarr"), "--device", "cpu",
            *int8, *shlex.split(args.geounet_args)]


def warm_exports(models: dict[str, Path]) -> None:
    """Export both checkpoints for every installed engine once, before any timing: a one-time
    cost per checkpoint (docs/engine.md), not part of a run. int8 models are not made here."""
    from geounet.engine.backends import available_engines
    from geounet.engine.inference import clear_runner_cache, get_runner

    for padding in ("valid", "same"):
        for engine in available_engines():
            if engine != "torch":
                get_runner(str(models[padding]), "cpu", "fp32", engine=engine)
    clear_runner_cache()


def clear_int8(models: dict[str, Path]) -> None:
    """Remove cached int8 models, so every geounet-int8 run calibrates and quantizes."""
    for path in (models["valid"].parent / ".geounet-cache").glob("*-int8-*"):
        path.unlink()


def read_mask(tool: str, out: Path) -> Any:
    """The class mask a run wrote (uint8 array, 255 = nodata)."""
    if tool == GI:
        import rasterio

        (path,) = out.glob("*_mask_*.tif")
        with rasterio.open(path) as src:
            return src.read(1)
    import zarr

    return zarr.open_array(str(out / "pred.zarr" / "mask"))[:]


def agreement(masks: dict[str, Any]) -> list[str]:
    """Pixel agreement of each geounet mask with geo-inference's, and each mask's class shares."""
    lines = []
    for tool, mask in masks.items():
        shares = ", ".join(f"{name} {float((mask == k).mean()):.3f}"
                           for k, name in enumerate(CLASSES))
        line = f"{tool}: {shares}, nodata {float((mask == 255).mean()):.4f}"
        if tool != GI and GI in masks:
            line += f"; agrees with geo-inference on {float((mask == masks[GI]).mean()):.4f}"
        lines.append(line)
    return lines


def bench_size(size: int, models: dict[str, Path], args: argparse.Namespace) -> list[dict]:
    scene = make_scene(args.workdir, size, args.scene)
    runs = []
    masks: dict[str, Any] = {}
    for rep in range(args.reps):
        order = args.tools if rep % 2 == 0 else args.tools[::-1]
        for tool in order:
            out = args.workdir / f"out-{tool}-{size}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            cmd = tool_command(tool, scene, models, out, args)
            if tool == "geounet-int8":
                clear_int8(models)
            wall, peak, stdout = run_tree(cmd, args.workdir / f"log-{tool}-{size}-{rep}.txt")
            runs.append({"tool": tool, "size": size, "round": rep, "wall_s": wall,
                         "peak_rss_bytes": peak, "command": shlex.join(cmd),
                         "stdout_tail": stdout[-500:]})
            print(f"  {size}² round {rep} {tool}: {wall:.1f} s, {peak / 1e9:.2f} GB",
                  file=sys.stderr)
            if rep == 0 and size <= args.agreement_max:
                masks[tool] = read_mask(tool, out)
    for line in agreement(masks):
        print(f"  {size}² mask {line}", file=sys.stderr)
    if masks:
        runs.append({"size": size, "masks": agreement(masks)})
    return runs


# ---- report ------------------------------------------------------------------------------------


def table(runs: list[dict], size: int) -> list[list[str]]:
    megapixels = size * size / 1e6
    stats = {}
    for tool in TOOLS:
        mine = [r for r in runs if r.get("tool") == tool and r["size"] == size]
        if mine:
            wall = statistics.median(r["wall_s"] for r in mine)
            stats[tool] = (len(mine), wall, megapixels / wall,
                           max(r["peak_rss_bytes"] for r in mine) / 1e9)
    rows = []
    for tool, (n, wall, rate, peak) in stats.items():
        ref = stats.get(GI)
        rows.append([tool, f"{size}²", str(n), f"{wall:.1f}", f"{rate:.3f}", f"{peak:.2f}",
                     f"{rate / ref[2]:.2f}x" if ref else "-",
                     f"{peak / ref[3]:.2f}x" if ref else "-"])
    return rows


def versions(args: argparse.Namespace) -> str:
    probe = "import torch; print(torch.__version__)"
    ours = subprocess.run([args.geounet_python, "-c", probe + "; from geounet.engine.inference import "
                           "cpu_supports_bf16 as b; print('bf16' if b() else 'fp32')"],
                          check=False, capture_output=True, text=True).stdout.split()
    theirs = ["-"]
    if GI in args.tools:
        theirs = subprocess.run([str(args.gi_python), "-c", probe], check=False,
                                capture_output=True, text=True).stdout.split()
    given = shlex.split(args.geounet_args)
    precision = (given[given.index("--precision") + 1] if "--precision" in given[:-1]
                 else (ours[1:] or ["?"])[0])
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{time.strftime('%Y-%m-%d')}; geounet torch {ours[0] if ours else '?'} "
            f"({precision}, `--precision auto` unless given), geo-inference 3.2.4 torch "
            f"{theirs[0] if theirs else '?'} (fp32)")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_geoinference":  # child process, under the geo-inference venv
        run_geoinference(argv[1], argv[2], argv[3], int(argv[4]), int(argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="See the module docstring for install commands.")
    parser.add_argument("--size", type=int, action="append", default=None,
                        help="scene side in px; repeat or give a list (4096,8192). Default 4096")
    parser.add_argument("--reps", type=int, default=2, help="alternating rounds per size")
    parser.add_argument("--tools", default=",".join(TOOLS), help=f"any of {','.join(TOOLS)}")
    parser.add_argument("--gi-python", default=None,
                        help="python of the geo-inference venv (default: $GEOINFERENCE_PYTHON, "
                             "else ../gi-venv/bin/python beside the repository)")
    parser.add_argument("--geounet-python", default=sys.executable,
                        help="python with geounet installed (default: this one)")
    parser.add_argument("--geounet-args", default="",
                        help='extra `geounet predict` options, e.g. "--precision fp32"')
    parser.add_argument("--patch-size", type=int, default=512, help="geo-inference patch side")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--base", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scene", choices=("synth", "noise"), default="synth",
                        help="geounet's synthetic scene or smooth noise")
    parser.add_argument("--agreement-max", type=int, default=8192,
                        help="compare masks of round 0 up to this scene side")
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "bench-geoinference",
                        help="scenes, weights and outputs, kept so scenes are reused "
                             "(default: $TMPDIR/bench-geoinference)")
    parser.add_argument("--json", type=Path, default=None, help="write every run here")
    args = parser.parse_args(argv)

    sizes = sorted({int(s) for item in (args.size or ["4096"]) for s in str(item).split(",")})
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = sorted(set(args.tools) - set(TOOLS))
    if unknown or not args.tools:
        parser.error(f"--tools {unknown or 'empty'}: choose from {', '.join(TOOLS)}")
    if GI in args.tools:
        args.gi_python = gi_python(args.gi_python)
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    models = make_models(args.workdir, args.depth, args.base, args.seed)
    warm_exports(models)
    runs: list[dict] = []
    for size in sizes:
        runs += bench_size(size, models, args)

    environment = versions(args)
    cmd = "python benchmarks/bench_geoinference.py " + shlex.join(argv)
    print(f"\n### geounet vs geo-inference 3.2.4 (`predict`, U-Net depth {args.depth} base "
          f"{args.base}, same random weights, {args.scene} uint8 scene, CPU)\n")
    print(f"`{cmd}`  ")
    print(f"{environment}; wall = whole process, median of rounds; peak RSS = whole "
          f"process tree, largest of rounds; geo-inference patch {args.patch_size}\n")
    columns = ["tool", "scene", "rounds", "wall s", "MP/s", "peak RSS GB",
               "rate vs geo-inference", "memory vs geo-inference"]
    print("| " + " | ".join(columns) + " |")
    print("|" + " --- |" * len(columns))
    for size in sizes:
        for row in table(runs, size):
            print("| " + " | ".join(row) + " |")
    if args.json:
        args.json.write_text(json.dumps({"argv": argv, "environment": environment,
                                         "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
