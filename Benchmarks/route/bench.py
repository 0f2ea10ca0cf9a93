"""Router overhead: search latency through `steer route` over N shard servers against one `steer serve`
holding the same items, with the same client, interleaved request by request in one run.

    swift build -c release --product steer
    STEER_BIN=.build/release/steer python3 Benchmarks/route/bench.py [--items 50000] [--dimension 64]
        [--shards 3] [--queries 3000] [--spec HNSW32] [--out Benchmarks/route/results-DATE.json]

Every process is a child on loopback: one full server, N shard servers (each holding the items the
sharding function assigns to it), one router in front of the shards. The client (one blocking
connection per target, stdlib sockets) sends `search` (k = 10, `vector_b64`) alternately to the full
server and to the router, so drift of the machine hits both equally. Reported: p50/p99/mean latency
per target and router overhead = router − server at each percentile.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))
from harness import Connection, Router, Server, git_commit, machine, steer_binary

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3


def shard_of(item_id: int, shards: int) -> int:
    """Sharding (SteerCore): FNV-1a-64 of the id's key bytes (0x01 + big-endian with the sign bit
    flipped, for integers) mod the shard count."""
    key = b"\x01" + struct.pack(">Q", (item_id & 0xFFFFFFFFFFFFFFFF) ^ (1 << 63))
    value = FNV_OFFSET
    for byte in key:
        value = ((value ^ byte) * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return value % shards


def b64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round((len(ordered) - 1) * q))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_us": round(percentile(values, 0.5), 1),
        "p99_us": round(percentile(values, 0.99), 1),
        "mean_us": round(sum(values) / len(values), 1),
    }


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--dimension", type=int, default=64)
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--queries", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--spec", default="HNSW32")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--binary")
    parser.add_argument("--out")
    args = parser.parse_args()
    binary = steer_binary(args.binary)
    rng = random.Random(7)
    started = time.time()
    load_before = load_average()
    workdir = tempfile.mkdtemp(prefix="steer-route-bench-")
    processes: list[Server] = []
    try:
        common = [
            "--dimension",
            str(args.dimension),
            "--index-spec",
            args.spec,
            "--sync-writes",
            "false",
        ]
        full = Server(binary, f"{workdir}/full", common)
        shards = [
            Server(binary, f"{workdir}/shard{index}", common)
            for index in range(args.shards)
        ]
        processes += [full, *shards]
        print(f"upload {args.items} x {args.dimension} ...", file=sys.stderr)
        upload_started = time.time()
        full_connection = Connection(full.port, timeout=600)
        shard_connections = [Connection(shard.port, timeout=600) for shard in shards]
        batch = 1000
        for start in range(0, args.items, batch):
            items = []
            per_shard: list[list[dict[str, Any]]] = [[] for _ in shards]
            for item_id in range(start, min(args.items, start + batch)):
                vector = [rng.gauss(0, 1) for _ in range(args.dimension)]
                item = {"id": item_id, "vector_b64": b64(vector)}
                items.append(item)
                per_shard[shard_of(item_id, args.shards)].append(item)
            answer = full_connection.call({"op": "upsert", "items": items})
            assert answer.get("ok"), answer
            for connection, mine in zip(shard_connections, per_shard, strict=True):
                if mine:
                    answer = connection.call({"op": "upsert", "items": mine})
                    assert answer.get("ok"), answer
        upload_seconds = time.time() - upload_started
        shard_flags = [
            flag for shard in shards for flag in ("--shard", f"127.0.0.1:{shard.port}")
        ]
        router = Router(
            binary,
            f"{workdir}/router.stderr.log",
            [*shard_flags, "--health-interval-ms", "1000"],
        )
        processes.append(router)
        router_connection = Connection(router.port, timeout=60)

        queries = [
            b64([rng.gauss(0, 1) for _ in range(args.dimension)])
            for _ in range(args.queries + args.warmup)
        ]
        latencies: dict[str, list[float]] = {"server": [], "router": []}
        same_top = 0
        for index, query in enumerate(queries):
            line = (
                json.dumps({"op": "search", "vector_b64": query, "k": args.k}) + "\n"
            ).encode()
            order = [("server", full_connection), ("router", router_connection)]
            if index % 2:
                order.reverse()
            answers = {}
            for name, connection in order:
                begin = time.perf_counter_ns()
                connection.send(line)
                answer = connection.read()
                elapsed = (time.perf_counter_ns() - begin) / 1000
                if not answer.get("ok") or answer.get("partial"):
                    raise SystemExit(f"{name} answered {answer}")
                answers[name] = [hit["id"] for hit in answer["hits"]]
                if index >= args.warmup:
                    latencies[name].append(elapsed)
            if index >= args.warmup and answers["server"][0] == answers["router"][0]:
                same_top += 1
        router_stats = router_connection.call({"op": "stats"})
        # Where the time goes: each process's own view of its searches (parse to response, 4 % buckets).
        inside = {
            "server": full_connection.call({"op": "stats"})["ops"].get("search", {})
        }
        inside["router"] = router_stats["ops"].get("search", {})
        for index, connection in enumerate(shard_connections):
            inside[f"shard{index}"] = connection.call({"op": "stats"})["ops"].get(
                "search", {}
            )
        server_summary = summary(latencies["server"])
        router_summary = summary(latencies["router"])
        record = {
            "command": " ".join(["python3", *sys.argv])
            if not os.environ.get("STEER_BIN")
            else f"STEER_BIN={os.environ['STEER_BIN']} python3 {' '.join(sys.argv)}",
            "commit": git_commit(),
            "binary": binary,
            "machine": machine(),
            "load_average_before": load_before,
            "load_average_after": load_average(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "setup": {
                "items": args.items,
                "dimension": args.dimension,
                "shards": args.shards,
                "replicas_per_shard": 1,
                "spec": args.spec,
                "k": args.k,
                "queries": args.queries,
                "warmup": args.warmup,
                "vectors": "gaussian, seed 7",
                "encoding": "vector_b64",
                "connections": 1,
                "upload_seconds": round(upload_seconds, 1),
            },
            "server": server_summary,
            "router": router_summary,
            "overhead_us": {
                key: round(router_summary[key] - server_summary[key], 1)
                for key in server_summary
            },
            "same_top1_share": round(same_top / args.queries, 3),
            "router_counters": router_stats.get("counters"),
            "inside_process_search": inside,
            # Resident memory after the run (VmRSS): the capacity model's measured point.
            "rss_kib": {
                "server": full.rss_kib(),
                "router": router.rss_kib(),
                **{
                    f"shard{index}": shard.rss_kib()
                    for index, shard in enumerate(shards)
                },
            },
        }
        out = (
            Path(args.out)
            if args.out
            else Path(__file__).resolve().parent
            / f"results-{time.strftime('%Y-%m-%d', time.gmtime())}.json"
        )
        out.write_text(json.dumps(record, indent=2) + "\n")
        print(
            json.dumps(
                {
                    "server": server_summary,
                    "router": router_summary,
                    "overhead_us": record["overhead_us"],
                }
            )
        )
        print(f"wrote {out}", file=sys.stderr)
    finally:
        for process in reversed(processes):
            process.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
