#!/usr/bin/env bash
# Issue 7's sweeps through `steer serve` with steer-bench: recall against QPS over efSearch (HNSW) and
# nprobe (IVF), latency against offered load (open loop), and a search/upsert mix. Writes
# Benchmarks/steer-bench/results/<set>-<kind>.json (each with command, commit, machine, load average
# and thread settings).
#
#   bash Benchmarks/steer-bench/run.sh 1m64        # 1M x 64   (the issue's sets; hours on 2 cores)
#   bash Benchmarks/steer-bench/run.sh 1m128       # 1M x 128
#   bash Benchmarks/steer-bench/run.sh 200k384     # 200k x 384
#   bash Benchmarks/steer-bench/run.sh checkpoint  # item embeddings of demo-data/checkpoint (make demo)
#   N=200000 D=64 bash Benchmarks/steer-bench/run.sh custom   # any size, same generator settings
#
# Environment: DURATION / WARMUP (seconds per level, default 10 / 2), DATA_ROOT (default
# /tmp/steer-bench-data), SCRATCH (build folder, default .build), KINDS (default "hnsw ivf load mix";
# "hnsw recommend" for the checkpoint set; add "poisson" and "poisson-nospin" for issue 18's random
# arrivals with server CPU per request), POISSON_DURATION (seconds per Poisson level, default 60),
# CHECKPOINT (default demo-data/checkpoint).
set -euo pipefail
cd "$(dirname "$0")/../.."
SET=${1:-1m64}
# Cluster overlap (docs/benchmarks.md, "Data sets"): 1000 centres; the within-cluster spread grows with
# the dimension (distances concentrate as d grows, which separates the clusters at a fixed spread), so that
# every set has IVF at nprobe 1 well below 0.9 recall@10 and HNSW below 0.95 at efSearch 16.
spread_for() { case $1 in 64) echo 1.2 ;; 128) echo 1.5 ;; 384) echo 2.0 ;; *) echo 1.2 ;; esac; }
case $SET in
  1m64) N=1000000 D=64 ;;
  1m128) N=1000000 D=128 ;;
  200k384) N=200000 D=384 ;;
  checkpoint) N=0 D=0 ;;
  custom) N=${N:?set N} D=${D:?set D} ;;
  *) echo "unknown set $SET (1m64, 1m128, 200k384, checkpoint, custom)" >&2; exit 2 ;;
esac
[ "$SET" = custom ] && SET="$((N / 1000))k$D"
CLUSTERS=${CLUSTERS:-1000}
SPREAD=${SPREAD:-$(spread_for "$D")}
SEED=${SEED:-1}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
DATA_ROOT=${DATA_ROOT:-/tmp/steer-bench-data}
SCRATCH=${SCRATCH:-.build}
if [ "$SET" = checkpoint ]; then KINDS=${KINDS:-"hnsw recommend"}; else KINDS=${KINDS:-"hnsw ivf load mix"}; fi
OUT=Benchmarks/steer-bench/results
mkdir -p "$OUT" "$DATA_ROOT"

# Thread settings, chosen deliberately and recorded in every report: one OpenMP and one OpenBLAS thread
# per request (Steer parallelises across requests with its own worker threads; more threads per
# single-query search only contend on 2 cores, docs/dependencies.md), and SkylakeX kernels for OpenBLAS, which
# does not recognise this CPU. steer-bench gives the index build (steer-index) all cores.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-SkylakeX}
echo "threads: OMP_NUM_THREADS=$OMP_NUM_THREADS OPENBLAS_NUM_THREADS=$OPENBLAS_NUM_THREADS OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE" >&2
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

for product in steer steer-index steer-bench; do
  swift build -c release --scratch-path "$SCRATCH" --product "$product" >&2
done
BIN=$SCRATCH/release
BENCH=$BIN/steer-bench

DATA=$DATA_ROOT/$SET
if [ ! -f "$DATA/meta.json" ]; then
  if [ "$SET" = checkpoint ]; then
    CKPT=${CHECKPOINT:-demo-data/checkpoint}
    [ -f "$CKPT/config.json" ] || { echo "no checkpoint at $CKPT (make demo makes one)" >&2; exit 1; }
    $BENCH generate --out "$DATA" --checkpoint "$CKPT" --minilm "${STEER_MINILM_DIR:-models/all-MiniLM-L6-v2}" --seed "$SEED"
  else
    $BENCH generate --out "$DATA" --count "$N" --dimension "$D" --clusters "$CLUSTERS" --spread "$SPREAD" --seed "$SEED"
  fi
fi
N=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['count'])" "$DATA/meta.json")
# IVF lists: about 4·sqrt(N), a power of two (4096 at 1M, 2048 at 200k).
LISTS=$(python3 -c "import math,sys; n=int(sys.argv[1]); print(max(16, 2 ** round(math.log2(4 * math.sqrt(n)))))" "$N")
SERVER_DATA=$DATA_ROOT/$SET-server
HNSW=${HNSW_SPEC:-HNSW32,efC100}
IVF=${IVF_SPEC:-IVF$LISTS,Flat}
EF=${EF:-"16,24,32,48,64,96,128,256"}
NPROBE=${NPROBE:-"1,2,4,8,16,32,64"}
common=(--data "$DATA" --steer "$BIN/steer" --server-data "$SERVER_DATA" --warmup "$WARMUP" --duration "$DURATION")

run() { echo "+ $*" >&2; "$@"; }
for kind in $KINDS; do
  case $kind in
    hnsw) # recall against QPS over efSearch: one connection (latency) and 4 (saturation on 2 cores)
      run $BENCH run "${common[@]}" --spec "$HNSW" --ef-search "$EF" --concurrency 1,4 --label "$SET hnsw sweep" --out "$OUT/$SET-hnsw.json" ;;
    ivf)
      run $BENCH run "${common[@]}" --spec "$IVF" --nprobe "$NPROBE" --concurrency 1,4 --label "$SET ivf sweep" --out "$OUT/$SET-ivf.json" ;;
    load) # latency against offered load at the efSearch that passes recall 0.95 in the hnsw sweep
      ef=$(python3 Benchmarks/steer-bench/pick.py "$OUT/$SET-hnsw.json" --recall 0.95 --field value)
      max=$(python3 Benchmarks/steer-bench/pick.py "$OUT/$SET-hnsw.json" --recall 0.95 --field qps)
      rates=$(python3 -c "import sys; m=float(sys.argv[1]); print(','.join(str(int(m*f)) for f in (0.1,0.25,0.5,0.75,0.9,1.0,1.1)))" "$max")
      run $BENCH run "${common[@]}" --spec "$HNSW" --ef-search "$ef" --mode open --rate "$rates" --connections 4 \
        --label "$SET latency vs offered load (max closed-loop QPS $max at ef $ef)" --out "$OUT/$SET-load.json" ;;
    poisson|poisson-nospin) # Poisson arrivals at 10/50/90 % of a closed-loop maximum measured first (4 connections),
      # at the efSearch that passes recall 0.95; server CPU per answered request at every level. poisson-nospin
      # turns the worker and event-loop spins off, so the two files decide the spin defaults (docs/benchmarks.md).
      ef=$(python3 Benchmarks/steer-bench/pick.py "$OUT/$SET-hnsw.json" --recall 0.95 --field value)
      spin=(); [ "$kind" = poisson-nospin ] && spin=(--server-arg --worker-spin-us --server-arg 0 --server-arg --loop-spin-us --server-arg 0)
      run $BENCH run --data "$DATA" --steer "$BIN/steer" --server-data "$SERVER_DATA" --warmup "$WARMUP" --duration "${POISSON_DURATION:-60}" \
        --spec "$HNSW" --ef-search "$ef" --mode open --arrivals poisson --load-fractions 0.1,0.5,0.9 --connections 4 "${spin[@]}" \
        --label "$SET Poisson arrivals at fractions of the maximum ($kind, ef $ef)" --out "$OUT/$SET-$kind.json" ;;
    mix) # reads with 10% writes (re-upserts of existing items with their own vectors: truth unchanged)
      ef=$(python3 Benchmarks/steer-bench/pick.py "$OUT/$SET-hnsw.json" --recall 0.95 --field value)
      run $BENCH run "${common[@]}" --spec "$HNSW" --ef-search "$ef" --mix search=0.9,upsert=0.1 --concurrency 1,4 \
        --label "$SET search/upsert 90/10" --out "$OUT/$SET-mix.json" ;;
    recommend) # checkpoint sets: half searches, half recommends (the DPR encode + search + hydration path)
      run $BENCH run "${common[@]}" --spec "$HNSW" --ef-search 64 --mix search=0.5,recommend=0.5 --concurrency 1,4 \
        --label "$SET search/recommend 50/50" --out "$OUT/$SET-recommend.json" ;;
    *) echo "unknown kind $kind" >&2; exit 2 ;;
  esac
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
