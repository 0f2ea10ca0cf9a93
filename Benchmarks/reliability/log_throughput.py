"""Throughput and catch-up through the replicated write log (docs/scaling.md, "Following a stream").

The cluster of convergence.py (3-node NATS on loopback, R=3 streams, 2 shards x 2 `steer serve --follow`
replicas, 2 `steer route --follow` routers), 64-d vectors, then:

1. **Throughput**: `--writers` threads upsert batches of `--batch` items (vector_b64, from a pool of 1,024
   vectors per writer generated before the run) through the routers for `--seconds`; reports
   acknowledged items/s (all shards and per shard), and the time until every replica applied
   everything acknowledged (apply rate).
2. **Catch-up**: one replica of shard 0 is killed with SIGKILL; paced writers send single-item upserts at
   `--rate` writes/s through the routers for `--down-seconds`; the replica restarts on its data
   directory while the writes go on, and the harness measures the time from its restart until it
   applied the last sequence shard 0 had when it restarted, and until it is level with its peer.
3. **Read-your-writes** (`--ryw-requests N`): one client alternates, through one router, (a) a
   single-item upsert then a `get` of that item with the write's `min_sequences`, and (b) another
   single-item upsert then a `get` of it without them; reports both reads' latency percentiles (the
   difference is what asking for your own write costs) and how often each read found the item (a read
   without the token right after the write may not: eventual consistency).

`--shards 1` runs one shard (2 replicas) instead of 2: the throughput of a shard that has the machine to
itself (with two shards on a 2-core machine each gets half of it).

Usage: python3 Benchmarks/reliability/log_throughput.py [--seconds 15] [--down-seconds 60] [--rate 1000]
       [--shards 2] [--ryw-requests 0] [--no-throughput] [--no-catch-up]
Standard library only; needs `nats-server`. The machine is shared: the results record its load.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import random
import shutil
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from convergence import TOKEN, Cluster, call, shard_of, start_with_retries
from harness import Connection, ConnectionBroken, steer_binary, write_results

DIMENSION = 64
VECTOR_POOL = 1024


def vector_b64(rng: random.Random) -> str:
    return base64.b64encode(
        struct.pack(f"<{DIMENSION}f", *[rng.uniform(-1, 1) for _ in range(DIMENSION)])
    ).decode()


def applied(port: int) -> int:
    return int(call(port, {"op": "stats", "token": TOKEN}, timeout=30)["applied_sequence"])


def wait_applied(cluster: Cluster, targets: list[int], timeout: float = 600.0) -> float:
    """Seconds until every replica of every shard applied `targets[shard]`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if all(applied(r.port) >= targets[shard] for shard, row in enumerate(cluster.replicas) for r in row):
            return time.monotonic() - started
        time.sleep(0.05)
    raise TimeoutError(f"replicas did not apply {targets} within {timeout:.0f} s")


def cpu_seconds(cluster: Cluster) -> dict[str, float]:
    """CPU seconds (user + system) each process of the cluster and this tool used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    children = [
        *cluster.nats,
        *(r for row in cluster.replicas for r in row),
        *cluster.routers,
    ]
    for child in children:
        if child.process is None or child.process.poll() is not None:
            continue
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{child.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[child.name] = (int(fields[11]) + int(fields[12])) / ticks
    times = os.times()
    out["writers (this tool)"] = times.user + times.system
    return out


def throughput(cluster: Cluster, writers: int, batch: int, seconds: float) -> dict[str, Any]:
    stop = threading.Event()
    lock = threading.Lock()
    totals = {"items": 0, "requests": 0, "failed": 0}
    latest = [0] * len(cluster.replicas)
    errors: dict[str, str] = {}

    # Each writer cycles through vectors generated before the run: generating 64 floats per item in
    # Python would take a large share of the one core the cluster runs on.
    pools = [[vector_b64(random.Random(index)) for _ in range(VECTOR_POOL)] for index in range(writers)]

    def run(index: int) -> None:
        pool = pools[index]
        connection = Connection(cluster.routers[index % len(cluster.routers)].port, timeout=60)
        next_id = index * 10_000_000
        while not stop.is_set():
            items = [
                {"id": next_id + n, "vector_b64": pool[(next_id + n) % VECTOR_POOL], "tags": ["t"]}
                for n in range(batch)
            ]
            next_id += batch
            try:
                answer = connection.call(
                    {"op": "upsert", "token": TOKEN, "items": items, "timeout_ms": 30000}
                )
            except (ConnectionBroken, OSError) as error:
                with lock:
                    totals["failed"] += 1
                    errors.setdefault(type(error).__name__, str(error))
                continue
            with lock:
                if answer.get("ok") is True:
                    totals["items"] += batch
                    totals["requests"] += 1
                    for shard, sequence in enumerate(answer["sequences"]):
                        latest[shard] = max(latest[shard], sequence)
                else:
                    totals["failed"] += 1
                    errors.setdefault(str(answer.get("error", {}).get("code")), str(answer.get("error")))
        connection.close()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(writers)]
    cpu_before = cpu_seconds(cluster)
    started = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=120)
    elapsed = time.monotonic() - started
    drain = wait_applied(cluster, latest)
    cpu_after = cpu_seconds(cluster)
    items_per_second = totals["items"] / elapsed
    return {
        "writers": writers,
        "batch_items": batch,
        "seconds": round(elapsed, 1),
        "acknowledged_items": totals["items"],
        "acknowledged_requests": totals["requests"],
        "failed_requests": totals["failed"],
        "first_error_by_code": errors,
        "items_per_second": round(items_per_second),
        "items_per_second_per_shard": round(items_per_second / len(cluster.replicas)),
        "seconds_until_all_replicas_applied_after_the_last_ack": round(drain, 2),
        "apply_items_per_second_per_replica": round(
            totals["items"] / len(cluster.replicas) / (elapsed + drain)
        ),
        "cpu_seconds_during_the_run_and_drain": {
            name: round(cpu_after[name] - cpu_before.get(name, 0.0), 2) for name in cpu_after
        },
    }


def catch_up(cluster: Cluster, rate: float, down_seconds: float, writers: int) -> dict[str, Any]:
    victim = cluster.replicas[0][1]
    peer = cluster.replicas[0][0]
    stop = threading.Event()
    lock = threading.Lock()
    counts = {"acknowledged": 0, "failed": 0}
    shard0_latest = [0]
    interval = writers / rate

    def run(index: int) -> None:
        rng = random.Random(1000 + index)
        connection = Connection(cluster.routers[index % len(cluster.routers)].port, timeout=60)
        next_tick = time.monotonic()
        number = 0
        while not stop.is_set():
            item = index * 10_000_000 + 5_000_000 + number
            number += 1
            request = {
                "op": "upsert",
                "token": TOKEN,
                "timeout_ms": 10000,
                "items": [{"id": item, "vector_b64": vector_b64(rng)}],
            }
            try:
                answer = connection.call(request)
            except (ConnectionBroken, OSError):
                answer = {}
            with lock:
                if answer.get("ok") is True:
                    counts["acknowledged"] += 1
                    if shard_of(item, len(cluster.replicas)) == 0:
                        shard0_latest[0] = max(shard0_latest[0], answer["sequences"][0])
                else:
                    counts["failed"] += 1
            next_tick += interval
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        connection.close()

    before = applied(victim.port)
    victim.kill()
    killed_at = time.monotonic()
    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(writers)]
    for thread in threads:
        thread.start()
    time.sleep(down_seconds)
    with lock:
        written_while_down = counts["acknowledged"]
    achieved = written_while_down / (time.monotonic() - killed_at)
    restart = time.monotonic()
    start_with_retries(victim)
    listening = time.monotonic() - restart
    with lock:
        target = shard0_latest[0]
    while applied(victim.port) < target:
        time.sleep(0.02)
    caught_up = time.monotonic() - restart
    # Level with the peer while the writes go on: the peer's applied sequence at the moment of asking.
    level = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ahead = applied(peer.port)
        if applied(victim.port) >= ahead:
            level = time.monotonic() - restart
            break
        time.sleep(0.02)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    return {
        "target_writes_per_second": rate,
        "achieved_writes_per_second_while_down": round(achieved),
        "down_seconds": down_seconds,
        "acknowledged_while_down": written_while_down,
        "failed_writes": counts["failed"],
        "shard0_messages_behind_at_restart": target - before,
        "seconds_from_restart_to_listening": round(listening, 2),
        "seconds_from_restart_to_applied_the_restart_target": round(caught_up, 2),
        "seconds_from_restart_to_level_with_peer": None if level is None else round(level, 2),
    }


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def read_your_writes(cluster: Cluster, requests: int) -> dict[str, Any]:
    rng = random.Random(7)
    connection = Connection(cluster.routers[0].port, timeout=60)
    latency: dict[str, list[float]] = {"write": [], "read_with_min_sequences": [], "read_without": []}
    found = {"read_with_min_sequences": 0, "read_without": 0}
    base = 90_000_000
    try:
        for number in range(2 * requests):
            item = base + number
            kind = "read_with_min_sequences" if number % 2 == 0 else "read_without"
            write = {
                "op": "upsert",
                "token": TOKEN,
                "timeout_ms": 10000,
                "items": [{"id": item, "vector_b64": vector_b64(rng)}],
            }
            started = time.perf_counter()
            answer = connection.call(write)
            latency["write"].append(time.perf_counter() - started)
            if answer.get("ok") is not True:
                raise RuntimeError(f"write failed: {answer}")
            read: dict[str, Any] = {"op": "get", "token": TOKEN, "ids": [item], "timeout_ms": 10000}
            if kind == "read_with_min_sequences":
                read["min_sequences"] = answer["sequences"]
            started = time.perf_counter()
            got = connection.call(read)
            latency[kind].append(time.perf_counter() - started)
            if got.get("ok") is not True:
                raise RuntimeError(f"read failed: {got}")
            if got.get("items"):
                found[kind] += 1
    finally:
        connection.close()

    def summary(values: list[float]) -> dict[str, float]:
        return {
            "p50_ms": round(percentile(values, 0.5) * 1000, 3),
            "p90_ms": round(percentile(values, 0.9) * 1000, 3),
            "p99_ms": round(percentile(values, 0.99) * 1000, 3),
            "mean_ms": round(sum(values) / len(values) * 1000, 3),
        }

    return {
        "pairs": requests,
        "write": summary(latency["write"]),
        "read_with_min_sequences": summary(latency["read_with_min_sequences"]),
        "read_without": summary(latency["read_without"]),
        "found_with_min_sequences": found["read_with_min_sequences"],
        "found_without": found["read_without"],
        "p50_overhead_ms": round(
            (percentile(latency["read_with_min_sequences"], 0.5) - percentile(latency["read_without"], 0.5))
            * 1000,
            3,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--down-seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--paced-writers", type=int, default=16)
    parser.add_argument(
        "--sync-writes",
        default="true",
        choices=["true", "false"],
        help="the replicas' --sync-writes (fsync per apply)",
    )
    parser.add_argument("--label", default="loaded", help="recorded in the results (quiet or loaded)")
    parser.add_argument("--no-catch-up", action="store_true", help="skip the catch-up phase")
    parser.add_argument("--no-throughput", action="store_true", help="skip the throughput phase")
    parser.add_argument("--shards", type=int, default=2, choices=[1, 2])
    parser.add_argument(
        "--index-save-seconds",
        type=int,
        help="the replicas' --index-save-seconds (default: the server's); the catch-up victim restarts "
        "from its last saved index",
    )
    parser.add_argument(
        "--ryw-requests", type=int, default=0, help="pairs of the read-your-writes phase (0: skip)"
    )
    parser.add_argument("--binary")
    parser.add_argument("--out")
    arguments = parser.parse_args()
    binary = steer_binary(arguments.binary)
    root = Path(tempfile.mkdtemp(prefix="steer-log-throughput-"))
    cluster = Cluster(
        binary,
        root,
        dimension=DIMENSION,
        replica_arguments=(
            "--sync-writes",
            arguments.sync_writes,
            *(
                ("--index-save-seconds", str(arguments.index_save_seconds))
                if arguments.index_save_seconds is not None
                else ()
            ),
        ),
        shards=arguments.shards,
    )
    body: dict[str, Any] = {
        "load_average_start": os.getloadavg(),
        "uptime_start": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "dimension": DIMENSION,
        "stream_replicas": 3,
        "shards": arguments.shards,
        "replicas_per_shard": 2,
    }
    body["replica_sync_writes"] = arguments.sync_writes
    body["replica_index_save_seconds"] = arguments.index_save_seconds
    body["label"] = arguments.label
    body["pinned"] = os.environ.get("STEER_PINNED", "")
    try:
        cluster.start()
        if not arguments.no_throughput:
            body["throughput"] = throughput(cluster, arguments.writers, arguments.batch, arguments.seconds)
            print(body["throughput"], flush=True)
        if arguments.ryw_requests > 0:
            body["read_your_writes"] = read_your_writes(cluster, arguments.ryw_requests)
            print(body["read_your_writes"], flush=True)
        if not arguments.no_catch_up:
            body["catch_up"] = catch_up(
                cluster, arguments.rate, arguments.down_seconds, arguments.paced_writers
            )
            print(body["catch_up"], flush=True)
    finally:
        cluster.stop()
        body["load_average_end"] = os.getloadavg()
        body["uptime_end"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        with contextlib.suppress(OSError):
            shutil.rmtree(root)
    out = (
        Path(arguments.out)
        if arguments.out
        else Path(__file__).parent / f"log-results-{time.strftime('%Y-%m-%d')}.json"
    )
    write_results(out, binary, body)


if __name__ == "__main__":
    main()
