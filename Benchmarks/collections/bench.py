"""Collections through `steer serve` (Benchmarks/collections/results.md).

1. Empty collections: start time and resident memory of a server with 0 and with N empty named
   collections, and the time of each `create_collection`.
2. 1 vs 20 collections with the same total items: search latency and throughput of closed-loop clients
   against one collection of M items, and against 20 collections of M/20 items (queries spread evenly).

    python3 Benchmarks/collections/bench.py --steer .build/debug/steer --out results.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "clients" / "python"))

from steer_client import SteerClient


class Server:
    """A `steer serve` child on a free port; `start_seconds` is spawn → `listening on` line."""

    def __init__(self, steer: str, data: str, *arguments: str) -> None:
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [
                steer,
                "serve",
                "--port",
                "0",
                "--data",
                data,
                "--log-level",
                "error",
                *arguments,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        self.start_seconds = time.perf_counter() - started
        if not line.startswith("listening on "):
            raise RuntimeError(f"steer serve did not start: {line!r}")
        self.port = int(line.strip().rsplit(":", 1)[1])

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return -1

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def client(self) -> SteerClient:
        return SteerClient(port=self.port, timeout=120)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=120)


def empty_collections(steer: str, count: int) -> dict:
    data = tempfile.mkdtemp(prefix="steer-collections-bench-")
    try:
        server = Server(steer, data, "--dimension", "16", "--max-collections", str(max(count, 1)))
        with server.client() as client:
            client.ping()
            base = {
                "start_seconds": server.start_seconds,
                "rss_bytes": server.rss_bytes(),
                "open_fds": server.open_fds(),
            }
            times = []
            for number in range(count):
                started = time.perf_counter()
                client.request("create_collection", name=f"c{number}", dimension=16)
                times.append(time.perf_counter() - started)
            created = {"rss_bytes": server.rss_bytes(), "open_fds": server.open_fds()}
        server.stop()
        restarted = Server(steer, data)
        with restarted.client() as client:
            client.ping()
            listed = client.request("list_collections")
            reopened = {
                "start_seconds": restarted.start_seconds,
                "rss_bytes": restarted.rss_bytes(),
                "open_fds": restarted.open_fds(),
                "collections_listed": len(listed["collections"]),
            }
        restarted.stop()
        times.sort()
        return {
            "collections": count,
            "fresh_server": base,
            "after_creating": created,
            "create_seconds": {
                "median": times[len(times) // 2],
                "max": times[-1],
                "total": sum(times),
            }
            if times
            else None,
            "restarted": reopened,
        }
    finally:
        shutil.rmtree(data, ignore_errors=True)


def fill(client: SteerClient, collection: str | None, rows: list[list[float]], first: int) -> None:
    for start in range(0, len(rows), 500):
        items = [{"id": first + start + i, "vector": row} for i, row in enumerate(rows[start : start + 500])]
        client.request("upsert", items=items, collection=collection)


def search_load(port: int, names: list[str | None], queries: list[list[float]], threads: int) -> dict:
    latencies: list[float] = []
    lock = threading.Lock()
    failures = [0]

    def run(part: int) -> None:
        mine: list[float] = []
        with SteerClient(port=port, timeout=120) as client:
            for number in range(part, len(queries), threads):
                started = time.perf_counter()
                try:
                    client.request(
                        "search",
                        vector=queries[number],
                        k=10,
                        collection=names[number % len(names)],
                    )
                except Exception:  # counted and reported as failures
                    with lock:
                        failures[0] += 1
                mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    workers = [threading.Thread(target=run, args=(part,)) for part in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "queries": len(queries),
        "failures": failures[0],
        "qps": len(queries) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


def one_vs_many(steer: str, items: int, dimension: int, collections: int, queries: int, threads: int) -> dict:
    generator = random.Random(18)
    rows = [[generator.uniform(-1, 1) for _ in range(dimension)] for _ in range(items)]
    probe = [[generator.uniform(-1, 1) for _ in range(dimension)] for _ in range(queries)]
    data = tempfile.mkdtemp(prefix="steer-collections-bench-")
    try:
        server = Server(steer, data, "--dimension", str(dimension), "--sync-writes", "false")
        with server.client() as client:
            fill(client, None, rows, 0)
            share = items // collections
            names: list[str | None] = [f"c{number}" for number in range(collections)]
            for number, name in enumerate(names):
                client.request("create_collection", name=name, dimension=dimension)
                fill(client, name, rows[number * share : (number + 1) * share], 0)
        search_load(server.port, [None], probe[: queries // 4], threads)  # warm-up
        one = search_load(server.port, [None], probe, threads)
        many = search_load(server.port, names, probe, threads)
        rss = server.rss_bytes()
        server.stop()
        return {
            "items": items,
            "dimension": dimension,
            "index_spec": "Flat",
            "threads": threads,
            "one_collection": one,
            f"{collections}_collections": many,
            "rss_bytes_with_both": rss,
        }
    finally:
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steer", default=".build/debug/steer")
    parser.add_argument("--empty", type=int, default=100)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--dimension", type=int, default=32)
    parser.add_argument("--collections", type=int, default=20)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--out")
    arguments = parser.parse_args()
    report = {
        "command": " ".join(sys.argv),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True
        ).stdout.strip(),
        "machine": f"{os.cpu_count()} cores",
        "load_average_before": os.getloadavg(),
        "empty_collections": [
            empty_collections(arguments.steer, 0),
            empty_collections(arguments.steer, arguments.empty),
        ],
        "one_vs_many": one_vs_many(
            arguments.steer,
            arguments.items,
            arguments.dimension,
            arguments.collections,
            arguments.queries,
            arguments.threads,
        ),
        "load_average_after": os.getloadavg(),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if arguments.out:
        Path(arguments.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
