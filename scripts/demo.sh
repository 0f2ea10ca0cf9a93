#!/usr/bin/env bash
# The demo behind `make demo`: trains (or reuses) the small synthetic DPR checkpoint, ingests its
# catalog and item embeddings into a Steer data directory, builds the index, starts the server, and
# prints one user's top 10 with no prompt and with positive, negative and compound prompts; then
# simulated users send events for a minute, the retraining loop runs (scripts/retrain.py, warm-started)
# and the new generation's answers for one user are explained (scripts/demo_retrain.py; DEMO_RETRAIN=0
# skips that step). The data directory stays in place for the README's `nc` examples.
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO=${DEMO_DIR:-demo-data}
BIN=${STEER_BIN:-.build/release/steer}
CKPT=$DEMO/checkpoint
DATA=$DEMO/server
PY=${PYTHON:-python3}

# Thread settings for serving (docs/dependencies.md): one OpenMP/BLAS thread per request; OpenBLAS misdetects
# this CPU family, so name its core unless the caller chose one.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
if grep -q avx512f /proc/cpuinfo 2>/dev/null; then export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-SkylakeX}
elif grep -q avx2 /proc/cpuinfo 2>/dev/null; then export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}; fi
echo "== threads: OMP_NUM_THREADS=$OMP_NUM_THREADS OPENBLAS_NUM_THREADS=$OPENBLAS_NUM_THREADS OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-auto}"

started=$(date +%s)
mkdir -p "$DEMO"

echo "== 1. the foundation on seeded vectors (store, index, search, recall)"
"$BIN" demo --data "$DEMO/foundation" --count 20000

echo "== 2. the DPR checkpoint (synthetic catalog, SASRec backbone, three training stages)"
# Reused only when trained by the trainer as it is now (its sources and phrase files hashed), so a checkout
# whose trainer changed does not keep demoing an older model.
trainer=$(cat Tools/train/steer_train/*.py Tools/train/phrases/*.json | sha256sum | cut -d' ' -f1)
if [ -f "$CKPT/config.json" ] && [ -f "$CKPT/model.safetensors" ] && [ "$(cat "$CKPT/trainer.sha256" 2>/dev/null)" = "$trainer" ]; then
  echo "reusing $CKPT (trained by this trainer)"
else
  rm -rf "$CKPT.tmp"
  "$PY" -m steer_train.cli --no-progress demo-checkpoint --out "$CKPT.tmp" --seed 0
  echo "$trainer" > "$CKPT.tmp/trainer.sha256"
  rm -rf "$CKPT" && mv "$CKPT.tmp" "$CKPT"
fi

echo "== 3. ingest the catalog and item embeddings into $DATA"
# A fresh data directory: an earlier run's retraining swapped it to another checkpoint and stored events.
rm -rf "$DATA" "$DEMO"/retrain-* "$DEMO/serving-checkpoint"
"$BIN" ingest --data "$DATA" --checkpoint "$CKPT" --quiet

echo "== 4. start the server (index built from the store at start-up)"
log=$DEMO/server.log
# The admin key is for step 6 (events, ingest, swap); reads stay open for step 5 and the `nc` examples.
( umask 077; "$PY" -c 'import secrets; print(secrets.token_hex(16))' >"$DEMO/admin.token" )
"$BIN" serve --data "$DATA" --checkpoint "$CKPT" --host 127.0.0.1 --port 0 \
  --admin-token-file "$DEMO/admin.token" --public-reads true >"$log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
port=""
for _ in $(seq 1 600); do
  port=$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\).*/\1/p' "$log" | head -1)
  [ -n "$port" ] && break
  kill -0 $pid 2>/dev/null || { cat "$log"; echo "server exited"; exit 1; }
  sleep 0.1
done
[ -n "$port" ] || { cat "$log"; echo "server did not start"; exit 1; }
echo "server on 127.0.0.1:$port (log: $log)"

echo "== 5. one user's top 10, steered by prompts"
"$PY" scripts/demo_queries.py --port "$port" --interactions "$CKPT/data/interactions.csv"

serving=$CKPT
if [ "${DEMO_RETRAIN:-1}" != 0 ]; then
  echo
  echo "== 6. a minute of events from simulated users, the retraining loop, the new generation"
  "$PY" scripts/demo_retrain.py --port "$port" --token-file "$DEMO/admin.token" --checkpoint "$CKPT" \
    --data "$DATA" --root "$DEMO" --steer "$BIN"
  if [ -f "$DEMO/serving-checkpoint" ]; then serving=$(cat "$DEMO/serving-checkpoint"); fi
fi

echo
echo "demo finished in $(( $(date +%s) - started )) s; data left in $DATA. Serve it again with:"
echo "  $BIN serve --data $DATA --checkpoint $serving --port 7700"
echo "and talk to it:  echo '{\"op\":\"recommend\",\"history\":[19,321],\"prompt\":\"no horror\",\"k\":5}' | nc -q1 127.0.0.1 7700"
