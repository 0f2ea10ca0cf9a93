#!/usr/bin/env bash
# Filtered recall@10 per plan (default specs Flat, IVF1024,Flat, HNSW32) at 50/90/99/99.9 % filtered out,
# and recall@10 after rescoring vs breadth and oversample for quantized specs (default IVF1024,Flat,
# IVF1024,SQ8, IVF1024,PQ16), in process on seeded uniform data; writes markdown to stdout.
# Usage: Benchmarks/filter/run.sh [ITEMS] [DIMENSION] [QUERIES] [memory|filtered|quantized|distinct|tags]  (default 100000 64 50, both sections)
# With `memory`: the resident growth of a fresh process opening the data with each spec instead.
# Environment: STEER_BENCH_CONFIG=release|debug (default debug), STEER_FILTER_SPECS, STEER_QUANT_SPECS,
# STEER_MEMORY_SPECS, STEER_DISTINCT_SPECS, STEER_TAG_SPECS (space-separated index specs; see Benchmarks/filter/bench/main.swift).
# With `distinct`: QPS with a different range filter per request, RocksDB vs in-memory resolution.
# With `tags`: QPS of tag filters (tags_any, exclusion-only tags_none) at 50/90/99 % filtered out
# (STEER_TAG_SPECS; STEER_BENCH_HITS=FILE writes every request's hits, to compare two builds).
# The issue's proofs (docs/benchmarks.md, "Filtered search, recall calibration and rescoring"):
#   STEER_BENCH_CONFIG=release STEER_QUANT_SPECS="HNSW32 HNSW32,SQ8 IVF4096,SQ8 IVF4096,PQ16 OPQ16,IVF4096,PQ16" \
#     Benchmarks/filter/run.sh 1000000 128 200 quantized
#   (the same with 384 and PQ/OPQ 48 instead of 16), and for the filtered proof
#   STEER_BENCH_CONFIG=release STEER_FILTER_SPECS="Flat IVF4096,Flat HNSW32" Benchmarks/filter/run.sh 1000000 64 200 filtered
set -euo pipefail
cd "$(dirname "$0")/../.."
config="${STEER_BENCH_CONFIG:-debug}"
swift build -c "$config" --product steer-filter-bench >&2
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
exec ".build/$config/steer-filter-bench" "${1:-100000}" "${2:-64}" "${3:-50}" "$(mktemp -d)/data" ${4:+"$4"}
