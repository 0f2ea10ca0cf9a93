#!/usr/bin/env bash
# The foundation benchmark: SteerIndex (AVX2 kernels on and off) against Debian's python3-faiss and
# pip faiss-cpu, on the same seeded data, in one run. Writes Benchmarks/index/results-<n>.json.
#
#   bash Benchmarks/index/run.sh            # 1M x 64 (about 30-40 minutes on 2 cores)
#   N=100000 bash Benchmarks/index/run.sh   # a quick version
#   N=200000 SPECS="HNSW32,efC100" HNSW_EF="32 64" OUT=/tmp/r.json bash Benchmarks/index/run.sh  # one spec
#
# SPECS (default all three), OUT (default Benchmarks/index/results-<n>.json) and SCRATCH (the SwiftPM
# scratch path, default .build) narrow or redirect a run.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-1000000}
D=${D:-64}
DATA=${DATA:-/tmp/steer-index-bench-$N}
OUT=${OUT:-Benchmarks/index/results-$N.json}
SCRATCH=${SCRATCH:-.build}
SPECS=${SPECS:-"HNSW32,efC100 IVF4096,Flat Flat"}
HNSW_EF=${HNSW_EF:-"16 32 64 128"}
IVF_NPROBE=${IVF_NPROBE:-"1 4 8 16 32"}
REPEATS=${REPEATS:-3} # single-query passes per setting; the fastest counts (both sides)

# Thread settings, chosen deliberately and recorded: one thread everywhere (single-query serving model,
# and builds compared at equal threads); SkylakeX kernels for OpenBLAS, which does not recognise this CPU.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-SkylakeX}
echo "threads: OMP_NUM_THREADS=$OMP_NUM_THREADS OPENBLAS_NUM_THREADS=$OPENBLAS_NUM_THREADS OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE" >&2

# Peers: Debian's python3-faiss (the same libfaiss 1.7.3) and pip faiss-cpu in a private venv.
dpkg -s python3-faiss >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-faiss python3-venv; }
VENV=${VENV:-/tmp/steer-bench-venv}
[ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv "$VENV"
"$VENV/bin/python" -c "import faiss" 2>/dev/null || "$VENV/bin/pip" install -q faiss-cpu numpy

swift build -c release --scratch-path "$SCRATCH" --product steer-index-bench >&2
BENCH=$SCRATCH/release/steer-index-bench
[ -f "$DATA/meta.json" ] || $BENCH generate --out "$DATA" --count "$N" --dimension "$D"

rows=$(mktemp)
export STEER_BENCH_LOAD_START="$(cut -d" " -f1-3 /proc/loadavg)"
run() { echo "+ $*" >&2; "$@" | tee -a "$rows" >&2; }
# Each configuration runs in its own process so peak memory and build time are its own.
for spec in $SPECS; do
  pyspec=${spec%%,efC*}
  args=(--repeats "$REPEATS"); pyargs=(--repeats "$REPEATS")
  case $spec in
    HNSW*) args+=(--ef $HNSW_EF); pyargs+=(--ef "${HNSW_EF// /,}" --efc 100) ;;
    IVF*) args+=(--nprobe $IVF_NPROBE); pyargs+=(--nprobe "${IVF_NPROBE// /,}") ;;
  esac
  # Steer and pip faiss-cpu (the target's reference) back to back, then the other two.
  run $BENCH run --data "$DATA" --spec "$spec" --kernels on "${args[@]}"
  run "$VENV/bin/python" Benchmarks/index/peers.py --data "$DATA" --label "pip faiss-cpu" --spec "$pyspec" "${pyargs[@]}"
  run $BENCH run --data "$DATA" --spec "$spec" --kernels off "${args[@]}"
  run /usr/bin/python3 Benchmarks/index/peers.py --data "$DATA" --label "python3-faiss (Debian)" --spec "$pyspec" "${pyargs[@]}"
done

SPECS=$SPECS HNSW_EF=$HNSW_EF REPEATS=$REPEATS /usr/bin/python3 - "$rows" "$OUT" "$N" "$D" <<'PY'
import json, platform, subprocess, sys, os
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
out = {
    "command": f"N={sys.argv[3]} D={sys.argv[4]} SPECS=\"{os.environ['SPECS']}\" HNSW_EF=\"{os.environ['HNSW_EF']}\" REPEATS={os.environ['REPEATS']} bash Benchmarks/index/run.sh",
    "load_average": {"start": os.environ.get("STEER_BENCH_LOAD_START"), "end": " ".join(f"{v:.2f}" for v in os.getloadavg())},
    "commit": commit,
    "machine": {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release()},
    "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE")},
    "data": json.load(open(os.path.join(os.environ.get("DATA", f"/tmp/steer-index-bench-{sys.argv[3]}"), "meta.json"))),
    "rows": rows,
}
json.dump(out, open(sys.argv[2], "w"), indent=1)
print(f"wrote {sys.argv[2]} ({len(rows)} rows)", file=sys.stderr)
PY
