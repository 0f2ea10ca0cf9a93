#!/usr/bin/env bash
# Issue 7's peers, one command: installs pip faiss-cpu, hnswlib, usearch, chromadb, h5py and matplotlib into a venv
# (default /tmp/steer-peers-venv), Debian's python3-faiss with apt when missing, then runs every peer on a
# steer-bench data set and writes Benchmarks/peers/results/<set>.json (rows, matched-recall table,
# command, commit, machine, load average, thread settings).
#
#   bash Benchmarks/peers/run.sh /tmp/steer-bench-data/200k64
#   PEERS="hnswlib faiss-pip" bash Benchmarks/peers/run.sh DIR     # a subset
#   DEBIAN_EF= bash Benchmarks/peers/run.sh DIR                     # Debian faiss: IVF only (its HNSW build is the slowest)
#   THREADS=2 bash Benchmarks/peers/run.sh FILE.hdf5                # saturation with 2 threads (default: all cores, as Steer's server)
#
# Every in-process peer is measured twice: one query per call on one thread (latency), and all queries in
# one call on THREADS threads (saturation QPS, the same cores the Steer server uses); rows record `threads`.
#
# The data set comes from `steer-bench generate` (Benchmarks/steer-bench/run.sh makes the issue's sets).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:?usage: run.sh DATA_DIR (from steer-bench generate)}
SET=$(basename "$DATA" .hdf5)
VENV=${VENV:-/tmp/steer-peers-venv}
PEERS=${PEERS:-"faiss-debian faiss-pip hnswlib usearch chroma"}
THREADS=${THREADS:-$(nproc)}
# Huge pages for the peers too (Steer's HNSW asks for them with madvise, docs/index.md): glibc's malloc
# then madvises transparent huge pages for its large mappings (glibc >= 2.35; THP mode madvise or always).
# PEER_HUGEPAGES=0 leaves malloc as it is. Recorded in the results file's "threads".
if [ "${PEER_HUGEPAGES:-1}" = 1 ]; then export GLIBC_TUNABLES=glibc.malloc.hugetlb=1; fi
EF=${EF:-"16,24,32,48,64,96,128,256"}
EFC=${EFC:-100}   # HNSW efConstruction (M is 32) for every HNSW peer, as in Steer's spec
CHROMA_EF=${CHROMA_EF:-"16,32,64,128"}
NPROBE=${NPROBE-"1,2,4,8,16,32,64"}
QUERIES=${QUERIES:-1000}
# Like for like on one core (docs/benchmarks.md "Like for like"): PIN_CORE=1 runs every in-process peer's
# measured phase on core 1 after a build on BUILD_THREADS threads, and Chroma's server on core 1 from its
# start; CLIENT_CORE=0 puts Chroma's Python client (and the peers' own process before pinning) on core 0.
PIN=(); [ -n "${PIN_CORE:-}" ] && PIN=(--pin-core "$PIN_CORE")
BUILD=(); [ -n "${BUILD_THREADS:-}" ] && BUILD=(--build-threads "$BUILD_THREADS")
CLIENT=(); [ -n "${CLIENT_CORE:-}" ] && CLIENT=(taskset -c "$CLIENT_CORE")
OUT=${OUT:-Benchmarks/peers/results/$SET.json}
mkdir -p Benchmarks/peers/results

# One thread per query, the same as steer-bench's single-connection levels and Steer's serving model.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-SkylakeX}
echo "threads: OMP_NUM_THREADS=$OMP_NUM_THREADS OPENBLAS_NUM_THREADS=$OPENBLAS_NUM_THREADS OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE; saturation THREADS=$THREADS" >&2
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

if [[ " $PEERS " == *" faiss-debian "* ]] && ! /usr/bin/python3 -c "import faiss, numpy" 2>/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-faiss python3-numpy
fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c "import faiss, hnswlib, usearch, chromadb, h5py, matplotlib" 2>/dev/null ||
  "$VENV/bin/pip" install -q numpy "faiss-cpu==1.15.1" hnswlib usearch chromadb h5py matplotlib

LISTS=$("$VENV/bin/python" -c "
import json, math, os, sys
p = sys.argv[1]
if os.path.isfile(p):
    import h5py
    n = h5py.File(p, 'r')['train'].shape[0]
else:
    n = json.load(open(os.path.join(p, 'meta.json')))['count']
print(max(16, 2 ** round(math.log2(4 * math.sqrt(n)))))" "$DATA")
rows=$(mktemp)
run() { echo "+ $*" >&2; "$@" "${PIN[@]}" "${BUILD[@]}" --efc "$EFC" --k "${K:-10}" | tee -a "$rows" >&2; }
for peer in $PEERS; do
  case $peer in
    faiss-debian) run /usr/bin/python3 Benchmarks/peers/peers.py --data "$DATA" --engine faiss --label "python3-faiss (Debian)" --ef "${DEBIAN_EF-$EF}" --nprobe "$NPROBE" --lists "$LISTS" --queries "$QUERIES" --threads "$THREADS" ;;
    faiss-pip) run "$VENV/bin/python" Benchmarks/peers/peers.py --data "$DATA" --engine faiss --label "pip faiss-cpu" --ef "$EF" --nprobe "$NPROBE" --lists "$LISTS" --queries "$QUERIES" --threads "$THREADS" ;;
    hnswlib) run "$VENV/bin/python" Benchmarks/peers/peers.py --data "$DATA" --engine hnswlib --ef "$EF" --queries "$QUERIES" --threads "$THREADS" ;;
    usearch) run "$VENV/bin/python" Benchmarks/peers/peers.py --data "$DATA" --engine usearch --ef "$EF" --queries "$QUERIES" --threads "$THREADS" ;;
    chroma) run "${CLIENT[@]}" "$VENV/bin/python" Benchmarks/peers/peers.py --data "$DATA" --engine chroma --ef "$CHROMA_EF" --chroma "$VENV/bin/chroma" --queries "$QUERIES" ;;
    *) echo "unknown peer $peer (faiss-debian faiss-pip hnswlib usearch chroma)" >&2; exit 2 ;;
  esac
done

"$VENV/bin/python" Benchmarks/peers/collect.py --rows "$rows" --data "$DATA" --out "$OUT" --load-start "$LOAD_START" \
  --command "$(printf '%q ' PEERS="$PEERS" THREADS="$THREADS" PIN_CORE="${PIN_CORE:-}" BUILD_THREADS="${BUILD_THREADS:-}" CLIENT_CORE="${CLIENT_CORE:-}" PEER_HUGEPAGES="${PEER_HUGEPAGES:-1}" EF="$EF" EFC="$EFC" K="${K:-10}" CHROMA_EF="$CHROMA_EF" NPROBE="$NPROBE" DEBIAN_EF="${DEBIAN_EF-$EF}" bash Benchmarks/peers/run.sh "$DATA")"
