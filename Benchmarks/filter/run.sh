#!/usr/bin/env bash
# Filtered recall@10 per plan (Flat, IVF1024,Flat, HNSW32) at 50/90/99/99.9 % filtered out, and recall
# after rescoring vs oversample (IVF1024,SQ8, IVF1024,PQ16), in process on seeded data.
# Usage: Benchmarks/filter/run.sh [ITEMS] [DIMENSION] [QUERIES] [memory]  (default 100000 64 50); writes to stdout.
# With `memory`: the resident growth of a fresh process opening the data with each spec instead.
set -euo pipefail
cd "$(dirname "$0")/../.."
swift build --product steer-filter-bench >&2
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
exec .build/debug/steer-filter-bench "${1:-100000}" "${2:-64}" "${3:-50}" "$(mktemp -d)/data" ${4:+"$4"}
