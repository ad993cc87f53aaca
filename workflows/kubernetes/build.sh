#!/usr/bin/env bash
# Build (and optionally push) the image the manifests in this folder run.
#   workflows/kubernetes/build.sh            # build
#   PUSH=1 workflows/kubernetes/build.sh     # build and push
set -euo pipefail
IMAGE="${IMAGE:-ghcr.io/geounet/geounet:0.1.0}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
docker build -f "$ROOT/workflows/kubernetes/Dockerfile" -t "$IMAGE" "$ROOT"
if [ "${PUSH:-0}" = "1" ]; then docker push "$IMAGE"; fi
