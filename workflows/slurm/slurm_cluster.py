"""Run `geounet batch` on SLURM with dask-jobqueue: each SLURM job runs Dask workers.

    python workflows/slurm/slurm_cluster.py 'scenes/*.tif' --out-dir /shared/out \
        --jobs 4 --cores 16 --memory 64GB --walltime 02:00:00 --queue cpu -- --raster cog

Run it on a login node (or in a small job): the scheduler and the client live here, workers
are submitted as SLURM jobs. Paths must be on a file system the compute nodes share. Arguments
after ``--`` go to `geounet batch` unchanged. Re-run with ``--resume`` after a wall-time
limit: finished scenes are skipped and partial ones finished. Needs ``pip install
geounet[slurm]`` (dask-jobqueue).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def make_cluster(
    *,
    cores: int = 16,
    memory: str = "64GB",
    walltime: str = "02:00:00",
    queue: str | None = None,
    account: str | None = None,
    processes: int | None = None,
    gpus: int = 0,
    python: str | None = None,
) -> Any:
    """A ``dask_jobqueue.SLURMCluster`` for geounet: one job per node, a few worker processes
    per job (one per GPU, else up to 4), torch threads = cores / processes."""
    from dask_jobqueue import SLURMCluster

    processes = processes or (gpus if gpus else max(1, min(4, cores)))
    threads = max(1, cores // processes)
    directives = [f"--gres=gpu:{gpus}"] if gpus else []
    return SLURMCluster(
        cores=cores,
        processes=processes,
        memory=memory,
        walltime=walltime,
        queue=queue,
        account=account,
        python=python or sys.executable,
        job_name="geounet-worker",
        job_extra_directives=directives,
        # one Dask thread per worker process; its cores go to torch
        worker_extra_args=["--nthreads", "1"],
        job_script_prologue=[f"export OMP_NUM_THREADS={threads}",
                             f"export MKL_NUM_THREADS={threads}"],
        scheduler_options={"dashboard_address": ":0"},
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenes", nargs="+", help="scene paths, globs, URLs or manifests")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--jobs", type=int, default=2, help="SLURM jobs (nodes) of workers")
    parser.add_argument("--cores", type=int, default=16)
    parser.add_argument("--memory", default="64GB")
    parser.add_argument("--walltime", default="02:00:00")
    parser.add_argument("--queue", default=None)
    parser.add_argument("--account", default=None)
    parser.add_argument("--gpus", type=int, default=0)
    args = parser.parse_args(argv)

    from distributed import Client

    from geounet.cli.main import cli

    cluster = make_cluster(cores=args.cores, memory=args.memory, walltime=args.walltime,
                           queue=args.queue, account=args.account, gpus=args.gpus)
    print(cluster.job_script(), file=sys.stderr)
    cluster.scale(jobs=args.jobs)
    with Client(cluster) as client:
        print(f"dashboard: {client.dashboard_link}", file=sys.stderr)
        command = ["batch", *args.scenes, "--out-dir", args.out_dir,
                   "--scheduler", cluster.scheduler_address, *extra]
        try:
            cli.main(command, prog_name="geounet", standalone_mode=True)
        except SystemExit as exit_:
            return int(exit_.code or 0)
        finally:
            cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
