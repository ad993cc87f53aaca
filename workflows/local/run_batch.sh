#!/usr/bin/env bash
# Run `geounet batch` on a Dask cluster of this machine started with the `dask` CLI:
# one scheduler, WORKERS worker processes (THREADS threads each), then the batch, then cleanup.
#
#   WORKERS=2 workflows/local/run_batch.sh 'scenes/*.tif' --out-dir out/ --raster cog
#
# Every argument goes to `geounet batch`. Environment:
#   WORKERS (2)  worker processes      THREADS (1)  Dask threads per worker
#   TORCH_THREADS (cores / (WORKERS*THREADS))  torch threads per worker thread
#   GEOUNET (geounet)  the geounet command      DASK (dask)  the dask command
#   PYTHON (python)    used to wait for the workers
# Copy it and change the two `dask` lines to start workers on other machines (same scheduler
# file on a shared file system, or `dask worker tcp://SCHEDULER:8786`).
set -euo pipefail

WORKERS="${WORKERS:-2}"
THREADS="${THREADS:-1}"
GEOUNET="${GEOUNET:-geounet}"
DASK="${DASK:-dask}"
PYTHON="${PYTHON:-python}"
CORES="$(nproc 2>/dev/null || echo 1)"
TORCH_THREADS="${TORCH_THREADS:-$(( CORES / (WORKERS * THREADS) > 0 ? CORES / (WORKERS * THREADS) : 1 ))}"

RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/geounet-cluster.XXXXXX")"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$RUN_DIR"
}
trap cleanup EXIT INT TERM

# the scheduler, on a free port; its address lands in the scheduler file
$DASK scheduler --host 127.0.0.1 --port 0 --dashboard-address :0 \
    --scheduler-file "$RUN_DIR/scheduler.json" >"$RUN_DIR/scheduler.log" 2>&1 &
PIDS+=($!)

# the workers, started in their own folder (not the client's working directory): geounet
# sends absolute paths, so relative scene paths given to `geounet batch` still work
for i in $(seq 1 "$WORKERS"); do
    mkdir -p "$RUN_DIR/worker-$i"
    ( cd "$RUN_DIR/worker-$i" && \
      OMP_NUM_THREADS="$TORCH_THREADS" MKL_NUM_THREADS="$TORCH_THREADS" \
      exec $DASK worker --scheduler-file "$RUN_DIR/scheduler.json" --nthreads "$THREADS" \
          --nworkers 1 --name "worker-$i" --local-directory "$RUN_DIR/worker-$i" \
          --dashboard-address :0 >"$RUN_DIR/worker-$i.log" 2>&1 ) &
    PIDS+=($!)
done

# wait until the scheduler file exists and every worker has joined (at most 120 s)
for _ in $(seq 1 240); do [ -s "$RUN_DIR/scheduler.json" ] && break; sleep 0.5; done
ADDRESS="$($PYTHON - "$RUN_DIR/scheduler.json" "$WORKERS" <<'PY'
import json, sys
from distributed import Client
path, workers = sys.argv[1], int(sys.argv[2])
with Client(scheduler_file=path, timeout="60s") as client:
    client.wait_for_workers(workers, timeout=120)
print(json.load(open(path))["address"])
PY
)"
echo "Dask scheduler $ADDRESS with $WORKERS worker(s)" >&2

status=0
$GEOUNET batch "$@" --scheduler "$ADDRESS" || status=$?
exit "$status"
