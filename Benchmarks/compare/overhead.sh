#!/usr/bin/env bash
# Where a server request's time goes, on the cores of the like-for-like runs (docs/benchmarks.md "Where
# the server's time goes"):
#   1. floor: a bare TCP round trip of the same request and answer sizes between the server core and the
#      client core (steer-bench floor: no server code at all);
#   2. the server at 1 and 4 connections (steer-bench closed loop, --ef-search EF), with `perf record -g`
#      on the server process during a second pass of each, and the share of its samples per stage;
#   3. with STEER_B=PATH, a second steer binary measured the same way right after the first, ROUNDS
#      times alternating (A/B in one run: only ratios inside this run mean anything).
#
#   bash Benchmarks/compare/overhead.sh /tmp/steer-bench-data/debian-minilm-128 OUT_DIR
#
# The server data directory (DATA_ROOT/SET-server, holding the set and its generation) is the one
# Benchmarks/compare/run.sh prepared. Environment: EF (default 24), CORE (1), CLIENT_CORE (0),
# DURATION (seconds per level, 10), WARMUP (seconds before each measured level, 2: a fresh server's first
# seconds are slower, so raise it for absolute numbers), ROUNDS (2), STEER_B, NOTE (what else ran).
set -euo pipefail
DATA=${1:?usage: overhead.sh DATA_DIR OUT_DIR}
OUT=${2:?usage: overhead.sh DATA_DIR OUT_DIR}
SET=$(basename "$DATA")
DATA_ROOT=${DATA_ROOT:-/tmp/steer-bench-data}
SERVER_DATA=$DATA_ROOT/$SET-server
[ -d "$SERVER_DATA/generations" ] || { echo "$SERVER_DATA: run Benchmarks/compare/run.sh $DATA (step steer) first" >&2; exit 2; }
EF=${EF:-24}
CORE=${CORE:-1}
CLIENT_CORE=${CLIENT_CORE:-0}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-2}
BIN=$PWD/.build/release
STEER_A=$BIN/steer
STEER_B=${STEER_B:-}
command -v perf >/dev/null || { echo "perf is needed (apt-get install linux-perf)" >&2; exit 2; }
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-SkylakeX}
mkdir -p "$OUT"

PID=
start_server() { # $1 binary; sets PORT and PID
  local log="$OUT/server.log"
  taskset -c "$CORE" "$1" serve --data "$SERVER_DATA" --port 0 --log-level warning --worker-threads 1 --event-loop-threads 1 > "$log" 2>&1 &
  PID=$!
  for _ in $(seq 600); do grep -q "listening on" "$log" && break; sleep 0.1; done
  PORT=$(grep -m1 "listening on" "$log" | sed 's/.*://')
  [ -n "$PORT" ] || { cat "$log" >&2; exit 1; }
}
stop_server() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=; }
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null || true' EXIT

python3 - "$OUT/run.json" "$SET" "$EF" "$CORE" "$CLIENT_CORE" "$DURATION" "$ROUNDS" "$STEER_B" "${NOTE:-}" "$WARMUP" <<'EOF'
import json, subprocess, sys, datetime
path, s, ef, core, client, duration, rounds, b, note, warmup = sys.argv[1:]
git = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True).stdout.strip()
json.dump({"tool": "Benchmarks/compare/overhead.sh", "set": s, "ef_search": int(ef), "core": int(core),
           "client_core": int(client), "duration_s": int(duration), "warmup_s": float(warmup), "rounds": int(rounds),
           "steer_a": "release build of the commit below", "steer_b": b or None, "note": note,
           "commit": git("rev-parse", "--short", "HEAD") + ("" if subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "Sources", "Benchmarks"]).returncode == 0 else "+dirty"),
           "cpu": next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
           "thp": open("/sys/kernel/mm/transparent_hugepage/enabled").read().strip(),
           "threads": "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1",
           "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "uptime_start": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}, open(path, "w"), indent=1)
EOF

# 1. The floor, with the answer size of a real answer.
start_server "$STEER_A"
"$BIN/steer-bench" floor --data "$DATA" --ef-search "$EF" --server "127.0.0.1:$PORT" \
  --server-core "$CORE" --client-core "$CLIENT_CORE" --out "$OUT/floor.json"
stop_server

# 2./3. Each binary: a measured pass at 1 and 4 connections, then a pass under perf.
measure() { # $1 label, $2 binary, $3 round
  start_server "$2"
  taskset -c "$CLIENT_CORE" "$BIN/steer-bench" run --data "$DATA" --server "127.0.0.1:$PORT" --server-pid "$PID" \
    --ef-search "$EF" --concurrency 1,4 --warmup "$WARMUP" --duration "$DURATION" \
    --label "overhead.sh $1 round $3: server on core $CORE (1 worker, 1 event loop), client on core $CLIENT_CORE" \
    --out "$OUT/$1-round$3.json" | grep ef_search || true
  if [ "$3" = 1 ]; then
    for c in 1 4; do
      perf record -F 2000 -g -p "$PID" -o "$OUT/perf.data" -- sleep $((DURATION + 1)) 2> /dev/null &
      local perf_pid=$!
      taskset -c "$CLIENT_CORE" "$BIN/steer-bench" run --data "$DATA" --server "127.0.0.1:$PORT" --ef-search "$EF" \
        --concurrency "$c" --warmup 0 --duration "$DURATION" --out /dev/null > /dev/null
      wait "$perf_pid" || true
      python3 Benchmarks/compare/perf_stages.py "$OUT/perf.data" > "$OUT/$1-perf-c$c.txt"
      rm -f "$OUT/perf.data"
    done
  fi
  stop_server
}
for round in $(seq "$ROUNDS"); do
  measure a "$STEER_A" "$round"
  [ -z "$STEER_B" ] || measure b "$STEER_B" "$round"
done

python3 Benchmarks/compare/finish_run.py "$OUT/run.json"
echo "wrote $OUT"
