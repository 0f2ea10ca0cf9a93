#!/usr/bin/env bash
# Publish-with-ack throughput of SteerNATS (JetStream, file storage, 300-byte payloads).
# Usage: Benchmarks/nats/run.sh [MESSAGES] [single|cluster]   (after `swift build`; one JSON line per run)
#   single:  one `nats-server -js`, R=1 stream
#   cluster: three nodes on loopback ports (cluster `steer`), R=3 stream, the client on node 1
# Servers bind 127.0.0.1 on free ports, store under a temporary directory, and are stopped at exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
MESSAGES=${1:-20000}
MODE=${2:-single}
BIN=$(swift build --show-bin-path)/steer-nats-bench
[ -x "$BIN" ] || { echo "build first: swift build --product steer-nats-bench" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
STORE=$(mktemp -d)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$STORE"' EXIT
wait_port() { for _ in $(seq 100); do nc -z 127.0.0.1 "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 not listening" >&2; exit 1; }
if [ "$MODE" = cluster ]; then
  REPLICAS=3
  P=( $(free_port) $(free_port) $(free_port) )
  R=( $(free_port) $(free_port) $(free_port) )
  ROUTES="nats-route://127.0.0.1:${R[0]}, nats-route://127.0.0.1:${R[1]}, nats-route://127.0.0.1:${R[2]}"
  for i in 0 1 2; do
    cat >"$STORE/n$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:${P[$i]}
jetstream { store_dir: "$STORE/n$i" }
cluster { name: steer, listen: 127.0.0.1:${R[$i]}, routes: [$ROUTES] }
CONF
    nats-server -c "$STORE/n$i.conf" >"$STORE/n$i.log" 2>&1 &
    PIDS+=($!)
  done
  for i in 0 1 2; do wait_port "${P[$i]}"; done
  PORT=${P[0]}
else
  REPLICAS=1
  PORT=$(free_port)
  nats-server -js -a 127.0.0.1 -p "$PORT" -sd "$STORE/single" >"$STORE/server.log" 2>&1 &
  PIDS+=($!)
  wait_port "$PORT"
fi
echo "# nats-server $(nats-server --version | awk '{print $2}'), $(nproc) cores, $MESSAGES messages per run, R=$REPLICAS, load $(cut -d' ' -f1-3 /proc/loadavg)"
for concurrency in 1 16 64 256; do
  "$BIN" "$PORT" "$MESSAGES" "$concurrency" 300 "$REPLICAS"
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
