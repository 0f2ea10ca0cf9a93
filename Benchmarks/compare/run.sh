#!/usr/bin/env bash
# Like for like, one data set, one run (docs/benchmarks.md "Like for like"): every system's measured
# phase runs on the same single core (CORE, default 1), every client on another (CLIENT_CORE, default 0);
# index builds may use BUILD_THREADS threads (default 2; build times are not compared here). Writes one
# directory of results files, then summarize.py's table of matched-recall ratios and targets.
#
#   bash Benchmarks/compare/run.sh /tmp/steer-bench-data/1m128
#   STEPS="steer inproc peers" bash Benchmarks/compare/run.sh DIR     # a subset
#
# Steps (STEPS, default all but spin-off and load-poisson-off):
#   steer        steer-bench against a started `steer serve` pinned to CORE (1 worker thread, 1 event-loop
#                thread): efSearch sweep at 1 connection (latency) and at 4 connections (saturation)
#   steer-batch  the same with BATCH (16) queries per request (not in the default STEPS)
#   inproc       steer-index-bench: SteerIndex in process, one query per call, the same efSearch sweep
#   peers        hnswlib, pip faiss-cpu, usearch in process (Benchmarks/peers), measured on CORE
#   chroma       Chroma's server on CORE through its Python client on CLIENT_CORE
#   steer-python the same Steer server through Steer's Python client on CLIENT_CORE (Chroma's client stack)
#   poisson      Poisson arrivals at 10/50/90 % of the maximum, 60 s windows, server CPU per request, at
#                the smallest efSearch with recall@10 >= 0.95 — with the server's spin defaults
#   poisson-nospin  the same with --worker-spin-us 0 --loop-spin-us 0
# Environment: DATA_ROOT (server data, default /tmp/steer-bench-data), EF (efSearch list), K (default
# 10), EFC (efConstruction of every HNSW, default 100), SPEC (default HNSW32,efC$EFC), DURATION (sweep seconds per level, default 10), POISSON_DURATION
# (default 60), OUT (results directory, default Benchmarks/compare/results/<set>-<date>), SERVER_SPIN
# ("default" or "off": the spin settings of the steer and steer-python steps, default "default"; with
# "off" the steer step writes steer-nospin.json),
# OTHER_LOAD (what else ran on the machine meanwhile, recorded in run.json; say it when anything did).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:?usage: run.sh DATA_DIR (steer-bench generate, or Benchmarks/datasets/to_dir.py of an HDF5 file)}
[ -f "$DATA/meta.json" ] || { echo "$DATA/meta.json: not a data directory" >&2; exit 2; }
SET=$(basename "$DATA")
CORE=${CORE:-1}
CLIENT_CORE=${CLIENT_CORE:-0}
BUILD_THREADS=${BUILD_THREADS:-2}
DATA_ROOT=${DATA_ROOT:-/tmp/steer-bench-data}
EFC=${EFC:-100}
SPEC=${SPEC:-HNSW32,efC$EFC}
EF=${EF:-"16,24,32,48,64,96,128,256"}
K=${K:-10}
DURATION=${DURATION:-10}
POISSON_DURATION=${POISSON_DURATION:-60}
STEPS=${STEPS:-"steer inproc peers chroma steer-python poisson poisson-nospin"}
# Every system searches the same queries: all of the set's (steer-bench and steer-index-bench always do).
QUERIES=${QUERIES:-$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['queries'])" "$DATA/meta.json")}
SERVER_SPIN=${SERVER_SPIN:-default}
OUT=${OUT:-Benchmarks/compare/results/$SET-$(date -u +%F)}
VENV=${VENV:-/tmp/steer-peers-venv}
mkdir -p "$OUT"
BIN=$PWD/.build/release
for product in steer steer-index steer-bench steer-index-bench; do
  [ -x "$BIN/$product" ] || swift build -c release --product "$product" >&2
done

# One OpenMP/OpenBLAS thread per query for every system (Steer parallelises across requests).
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-SkylakeX}
{
  echo "{\"set\": \"$SET\", \"data\": \"$DATA\", \"core\": $CORE, \"client_core\": $CLIENT_CORE, \"build_threads\": $BUILD_THREADS,"
  echo " \"spec\": \"$SPEC\", \"k\": $K, \"steps\": \"$STEPS\", \"server_spin\": \"$SERVER_SPIN\","
  echo " \"commit\": \"$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- Sources Benchmarks || echo '+dirty')\","
  echo " \"started\": \"$(date -u +%FT%TZ)\", \"uptime_start\": \"$(uptime)\","
  echo " \"thp\": \"$(cat /sys/kernel/mm/transparent_hugepage/enabled)\","
  echo " \"threads\": \"OMP_NUM_THREADS=$OMP_NUM_THREADS OPENBLAS_NUM_THREADS=$OPENBLAS_NUM_THREADS OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE\","
  echo " \"cpu\": \"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\", \"cores\": $(grep -c ^processor /proc/cpuinfo),"
  echo " \"other_load\": \"${OTHER_LOAD:-nothing else was running}\"}"
} > "$OUT/run.json"

# The started server runs on CORE with one worker and one event-loop thread; steer-index (the build)
# is not pinned.
WRAP=$(mktemp -d)
trap 'rm -rf "$WRAP"' EXIT
printf '#!/bin/sh\nexec taskset -c %s %s "$@"\n' "$CORE" "$BIN/steer" > "$WRAP/steer"
chmod +x "$WRAP/steer"
# steer-bench (on CLIENT_CORE) starts steer-index, which would inherit its one core (and steer-bench's
# OMP_NUM_THREADS, its own core count): give the build BUILD_THREADS threads on every core.
ALL=$(grep -c ^processor /proc/cpuinfo)
printf '#!/bin/sh\nexport OMP_NUM_THREADS=%s\nexec taskset -c %s %s "$@"\n' "$BUILD_THREADS" "0-$((ALL - 1))" "$BIN/steer-index" > "$WRAP/steer-index"
chmod +x "$WRAP/steer-index"
SERVER_FLAGS=(--worker-threads 1 --event-loop-threads 1)
NOSPIN=(--worker-spin-us 0 --loop-spin-us 0)
STEER_FILE=steer.json
if [ "$SERVER_SPIN" = off ]; then SERVER_FLAGS+=("${NOSPIN[@]}"); STEER_FILE=steer-nospin.json; fi
server_args() { for a in "$@"; do printf -- '--server-arg=%s\n' "$a"; done; }
mapfile -t SA < <(server_args "${SERVER_FLAGS[@]}")
mapfile -t SA_NOSPIN < <(server_args --worker-threads 1 --event-loop-threads 1 "${NOSPIN[@]}")
SERVER_DATA=$DATA_ROOT/$SET-server
BENCH=(taskset -c "$CLIENT_CORE" "$BIN/steer-bench" run --data "$DATA" --steer "$WRAP/steer" --server-data "$SERVER_DATA" --spec "$SPEC" --k "$K")
run() { echo "+ $*" >&2; "$@"; }

pick_ef() { # the smallest efSearch whose recall@K reaches 0.95 in the steer sweep (else the largest)
  python3 Benchmarks/steer-bench/pick.py "$OUT/steer.json" --recall 0.95 --field value 2>/dev/null || echo "${EF##*,}"
}

for step in $STEPS; do
  case $step in
    steer)
      run "${BENCH[@]}" "${SA[@]}" --ef-search "$EF" --concurrency 1,4 --warmup 2 --duration "$DURATION" \
        --label "compare: steer serve pinned to core $CORE (1 worker, 1 event loop, spin $SERVER_SPIN), client on core $CLIENT_CORE" \
        --out "$OUT/$STEER_FILE" ;;
    steer-batch)
      # The same server with BATCH queries per request (`vectors`): the per-request overhead shared by a batch.
      run "${BENCH[@]}" "${SA[@]}" --ef-search "$EF" --concurrency 1,4 --warmup 2 --duration "$DURATION" --batch "${BATCH:-16}" \
        --label "compare: steer serve pinned to core $CORE, ${BATCH:-16}-query batches, client on core $CLIENT_CORE" \
        --out "$OUT/steer-batch.json" ;;
    inproc)
      echo "+ steer-index-bench run --data $DATA --spec $SPEC --ef ${EF//,/ } --build-threads $BUILD_THREADS --pin-core $CORE" >&2
      # shellcheck disable=SC2086
      "$BIN/steer-index-bench" run --data "$DATA" --spec "$SPEC" --ef ${EF//,/ } --k "$K" --repeats 3 \
        --build-threads "$BUILD_THREADS" --pin-core "$CORE" | tee "$OUT/inproc.jsonl" >&2 ;;
    peers)
      run env PEERS="${PEERS:-hnswlib faiss-pip usearch}" EFC="$EFC" K="$K" THREADS=1 PIN_CORE="$CORE" BUILD_THREADS="$BUILD_THREADS" \
        EF="$EF" NPROBE= DEBIAN_EF= QUERIES="$QUERIES" OUT="$OUT/peers.json" bash Benchmarks/peers/run.sh "$DATA" ;;
    chroma)
      run env PEERS=chroma EFC="$EFC" K="$K" THREADS=1 PIN_CORE="$CORE" CLIENT_CORE="$CLIENT_CORE" CHROMA_EF="${CHROMA_EF:-32,64,128}" QUERIES="$QUERIES" \
        OUT="$OUT/chroma.json" bash Benchmarks/peers/run.sh "$DATA" ;;
    steer-python)
      # The server steer-bench prepared (store and generation in SERVER_DATA), started again on CORE.
      log=$(mktemp)
      taskset -c "$CORE" "$BIN/steer" serve --data "$SERVER_DATA" --port 0 --log-level warning "${SERVER_FLAGS[@]}" > "$log" 2>&1 &
      pid=$!
      for _ in $(seq 600); do grep -q "listening on" "$log" && break; sleep 0.1; done
      port=$(grep -m1 "listening on" "$log" | sed 's/.*://')
      [ -n "$port" ] || { cat "$log" >&2; kill "$pid"; exit 1; }
      rows=$(mktemp)
      run taskset -c "$CLIENT_CORE" "$VENV/bin/python" Benchmarks/peers/peers.py --data "$DATA" --engine steer \
        --steer "127.0.0.1:$port" --ef "$EF" --k "$K" --queries "$QUERIES" | tee "$rows" >&2
      kill "$pid"; wait "$pid" 2>/dev/null || true
      "$VENV/bin/python" Benchmarks/peers/collect.py --rows "$rows" --data "$DATA" --out "$OUT/steer-python.json" \
        --load-start "$(cut -d' ' -f1-3 /proc/loadavg)" --command "compare/run.sh steer-python: server on core $CORE, client on core $CLIENT_CORE"
      rm -f "$rows" "$log" ;;
    poisson)
      ef=$(pick_ef)
      run "${BENCH[@]}" "${SA[@]}" --ef-search "$ef" --mode open --load-fractions 0.1,0.5,0.9 --connections 4 \
        --warmup 5 --duration "$POISSON_DURATION" --label "compare: Poisson arrivals, server spin $SERVER_SPIN, core $CORE" \
        --out "$OUT/poisson.json" ;;
    poisson-nospin)
      ef=$(pick_ef)
      run "${BENCH[@]}" "${SA_NOSPIN[@]}" --ef-search "$ef" --mode open --load-fractions 0.1,0.5,0.9 --connections 4 \
        --warmup 5 --duration "$POISSON_DURATION" --label "compare: Poisson arrivals, server spin off, core $CORE" \
        --out "$OUT/poisson-nospin.json" ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
python3 Benchmarks/compare/finish_run.py "$OUT/run.json"
"$VENV/bin/python" Benchmarks/compare/summarize.py "$OUT"
