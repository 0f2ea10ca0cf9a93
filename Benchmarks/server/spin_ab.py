#!/usr/bin/env python3
"""A/B of the worker pool's spin time (`steer serve --worker-spin-us`): single-connection closed-loop
`search` latency through `steer serve`, the same data directory and queries, servers with different
spin times started one after the other in a shuffled order, several rounds. Reports each setting's p50
and p99 per round and the ratio of medians to spin 0, side by side in one run.

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 python3 Benchmarks/server/spin_ab.py .build/release/steer \\
        --spins 0,50,200 --rounds 5 --queries 3000

Writes Benchmarks/server/spin-ab-results-<date>.json (or --results).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import socket
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))
from harness import Connection, Server, git_commit, machine


def vector_b64(rng: random.Random, dimension: int) -> str:
    values = [rng.gauss(0, 1) for _ in range(dimension)]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return base64.b64encode(struct.pack(f"<{dimension}f", *(v / norm for v in values))).decode()


def measure(port: int, lines: list[bytes], warmup: int) -> list[float]:
    """Closed loop on one blocking socket; latencies in microseconds (after `warmup` requests)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    latencies: list[float] = []
    buffer = b""
    try:
        for index, line in enumerate(lines):
            started = time.perf_counter_ns()
            sock.sendall(line)
            while b"\n" not in buffer:
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError("server closed the connection")
                buffer += chunk
            answer, buffer = buffer.split(b"\n", 1)
            elapsed = (time.perf_counter_ns() - started) / 1000.0
            if b'"ok":true' not in answer[:40]:
                raise RuntimeError(f"search failed: {answer[:200]!r}")
            if index >= warmup:
                latencies.append(elapsed)
    finally:
        sock.close()
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round((len(ordered) - 1) * fraction))]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("binary")
    parser.add_argument("--spins", default="0,50,200", help="spin times in µs, comma-separated (0 included)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--queries", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--dimension", type=int, default=64)
    parser.add_argument("--spec", default="HNSW32")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--results")
    options = parser.parse_args()
    spins = [int(value) for value in options.spins.split(",")]
    rng = random.Random(options.seed)
    workdir = tempfile.mkdtemp(prefix="steer-spin-ab-")
    data = str(Path(workdir) / "data")
    base = ["--dimension", str(options.dimension), "--index-spec", options.spec, "--sync-writes", "false"]
    server = Server(options.binary, data, base)
    with Connection(server.port, timeout=300.0) as connection:
        for start in range(0, options.items, 1000):
            items = [
                {
                    "id": n,
                    "vector_b64": vector_b64(rng, options.dimension),
                    "title": f"item {n}",
                    "tags": [f"t{n % 7}"],
                }
                for n in range(start, min(options.items, start + 1000))
            ]
            connection.call({"op": "upsert", "items": items})
    server.terminate()
    lines = [
        b'{"op":"search","k":10,"vector_b64":"%s"}\n' % vector_b64(rng, options.dimension).encode()
        for _ in range(options.queries + options.warmup)
    ]
    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    for round_number in range(options.rounds):
        order = spins[:]
        rng.shuffle(order)
        for spin in order:
            server = Server(options.binary, data, [*base, "--worker-spin-us", str(spin)])
            latencies = measure(server.port, lines, options.warmup)
            server.terminate()
            row = {
                "round": round_number,
                "spin_us": spin,
                "p50_us": round(percentile(latencies, 0.5), 1),
                "p99_us": round(percentile(latencies, 0.99), 1),
                "mean_us": round(statistics.fmean(latencies), 1),
                "load_average": [round(value, 2) for value in os.getloadavg()],
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {}
    for spin in spins:
        p50s = [row["p50_us"] for row in rows if row["spin_us"] == spin]
        p99s = [row["p99_us"] for row in rows if row["spin_us"] == spin]
        summary[str(spin)] = {
            "median_p50_us": statistics.median(p50s),
            "median_p99_us": statistics.median(p99s),
        }
    baseline = summary[str(spins[0])]["median_p50_us"]
    for spin in spins:
        summary[str(spin)]["p50_ratio_to_first"] = round(summary[str(spin)]["median_p50_us"] / baseline, 3)
    print(json.dumps(summary, indent=2))
    result = {
        "command": " ".join(["python3", *sys.argv]),
        "commit": git_commit(),
        "machine": machine(),
        "environment": {
            name: os.environ.get(name)
            for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_CORETYPE")
        },
        "load_average_before": [round(value, 2) for value in load_before],
        "settings": vars(options),
        "summary": summary,
        "rows": rows,
    }
    path = (
        Path(options.results)
        if options.results
        else Path(__file__).parent / f"spin-ab-results-{time.strftime('%Y-%m-%d')}.json"
    )
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
