#!/usr/bin/env bash
# Issue 5's serving benchmark: recommend round trips through `steer serve --checkpoint` (Swift client, one
# connection), with no prompt, a cached prompt and uncached prompts. Writes
# Benchmarks/recommend/results-<date>.json with the command, commit, machine and thread settings.
#
#   bash Benchmarks/recommend/run.sh [CHECKPOINT]   # default: demo-data/checkpoint (make demo makes it)
set -euo pipefail
cd "$(dirname "$0")/../.."
CKPT=${1:-demo-data/checkpoint}
[ -f "$CKPT/config.json" ] || { echo "no checkpoint at $CKPT (run make demo, or steer-train demo-checkpoint --out $CKPT)" >&2; exit 1; }
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-SkylakeX}
echo "threads: OMP_NUM_THREADS=$OMP_NUM_THREADS OPENBLAS_NUM_THREADS=$OPENBLAS_NUM_THREADS OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE" >&2
swift build -c release --product steer >&2
swift build -c release --product steer-recommend-bench >&2
rows=$(.build/release/steer-recommend-bench --checkpoint "$CKPT" --minilm "${STEER_MINILM_DIR:-models/all-MiniLM-L6-v2}")
OUT=Benchmarks/recommend/results-$(date -u +%Y-%m-%d).json
python3 - "$rows" "$OUT" "$CKPT" <<'PY'
import json, os, platform, subprocess, sys
rows = json.loads(sys.argv[1])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
out = {
    "command": f"bash Benchmarks/recommend/run.sh {sys.argv[3]}",
    "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
    "machine": {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release()},
    "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE")},
    "checkpoint": json.load(open(os.path.join(sys.argv[3], "config.json"))).get("dataset"),
    **rows,
}
json.dump(out, open(sys.argv[2], "w"), indent=1)
print(f"wrote {sys.argv[2]}", file=sys.stderr)
PY
