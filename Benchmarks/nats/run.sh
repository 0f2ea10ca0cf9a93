#!/usr/bin/env bash
# Publish-with-ack throughput of SteerNATS against one local nats-server (JetStream, file storage, R=1).
# Usage: Benchmarks/nats/run.sh [MESSAGES]   (after `swift build`; writes one JSON line per run to stdout)
# The server binds 127.0.0.1 on a free port, stores under a temporary directory, and is stopped at exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
MESSAGES=${1:-20000}
BIN=$(swift build --show-bin-path)/steer-nats-bench
[ -x "$BIN" ] || { echo "build first: swift build --product steer-nats-bench" >&2; exit 1; }
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
STORE=$(mktemp -d)
nats-server -js -a 127.0.0.1 -p "$PORT" -sd "$STORE" >"$STORE/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$STORE"' EXIT
for _ in $(seq 50); do nc -z 127.0.0.1 "$PORT" 2>/dev/null && break; sleep 0.1; done
echo "# nats-server $(nats-server --version | awk '{print $2}'), $(nproc) cores, $MESSAGES messages per run"
for concurrency in 1 16 64 256; do
  "$BIN" "$PORT" "$MESSAGES" "$concurrency" 300
done
