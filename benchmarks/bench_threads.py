"""Dask workers x torch threads on this machine: the default vs alternatives vs oversubscribed.

    python benchmarks/bench_threads.py --size 4096

Predicts a synthetic scene with the built-in model into Zarr: in this process on Dask's
threaded scheduler (the default since issue 11: one thread per core, cores // threads torch
threads each) and with one thread x all cores; and under three local clusters: geounet's rule
(torch threads = cores // (workers x Dask threads), set on each worker by
geounet.distributed.cluster.get_client) with 1 and with 2 worker processes, and an oversubscribed cluster
of 2 workers x 2 torch threads each on a 2-core machine (what happens when Dask and torch
both assume they own every core). Cluster starts are not timed (the client is made first);
the model is loaded in this process before the in-process rows (a
worker loads it in its first task, timed). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    args = parser.parse_args(argv)

    import torch
    from distributed import Client, LocalCluster

    from geounet.distributed.cluster import get_client
    from geounet.distributed.threads import available_cores
    from geounet.engine.inference import get_runner
    from geounet.run.pipeline import predict
    from geounet.synth import synthesize_scene

    cores = available_cores()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        scene = synthesize_scene(Path(tmp) / "s", size=args.size, seed=7).scene_path
        configs = [
            ("in this process, threads (the default)", lambda: None, f"{min(4, cores)} x "
             f"{max(1, cores // min(4, cores))}"),
            ("in this process, one thread", lambda: "synchronous", f"1 x {cores}"),
            ("geounet rule, 1 worker", lambda: get_client(workers=1), f"1 x {cores}"),
            ("geounet rule, 2 workers", lambda: get_client(workers=2), f"2 x {max(1, cores // 2)}"),
            ("oversubscribed, 2 workers", lambda: Client(LocalCluster(
                n_workers=2, threads_per_worker=1, dashboard_address=None,
                env={"OMP_NUM_THREADS": str(cores)})), f"2 x {cores}"),
        ]
        get_runner(None, "cpu", "auto")  # in-process rows: the model is loaded before timing
        for name, make, threads in configs:
            client = make()
            if client == "synchronous":
                torch.set_num_threads(cores)
            try:
                start = time.perf_counter()
                result = predict(scene, Path(tmp) / "p.zarr", client=client, overwrite=True)
                seconds = time.perf_counter() - start
            finally:
                if client is not None and not isinstance(client, str):
                    cluster = client.cluster
                    client.close()
                    cluster.close()
            rows.append((name, threads, round(seconds, 1),
                         round(result.pixels / 1e6 / seconds, 3)))
    print(f"| where ({cores} cores) | workers or threads x torch threads | seconds | MP/s |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(str(v) for v in row) + " |")


if __name__ == "__main__":
    main()
