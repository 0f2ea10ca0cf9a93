#!/usr/bin/env python3
"""Soak test for `steer serve` (docs/reliability.md).

Loads `--items` random items, measures the maximum throughput the clients reach with `--connections`
connections (unpaced, `--calibrate-seconds`), then runs `--minutes` at `--load` (default 80 %) of it (or at
`--qps` when given): each connection is a thread sending paced requests (searches by `vector_b64`, with
`--write-fraction` upserts and deletes) and waiting for each answer. Reports per interval: requests,
errors, p50/p99 latency (from send to answer) and the server's VmRSS; at the end the error total, the
resident memory growth after warm-up (the first interval) and the p99 spread.

    python3 Benchmarks/reliability/soak.py .build/release/steer --minutes 10 --connections 64

The clients are Python threads: on a small machine they, not the server, may set the maximum; the
results record both the measured maximum and the achieved rate. Writes
Benchmarks/reliability/soak-results-<date>.json (or `--results`); exits 1 on any error.
"""

from __future__ import annotations

import argparse
import base64
import random
import shutil
import struct
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    DEFAULT_TOKEN,
    Connection,
    ConnectionBroken,
    HarnessError,
    Server,
    results_path,
    steer_binary,
    write_results,
)


def b64_vector(rng: random.Random, dimension: int) -> str:
    values = [rng.gauss(0.0, 1.0) for _ in range(dimension)]
    return base64.b64encode(struct.pack(f"<{dimension}f", *values)).decode()


@dataclass
class Interval:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    writes: int = 0


class Load:
    """Per-interval latencies and errors shared by the client threads."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.lock = threading.Lock()
        self.start = time.monotonic()
        self.intervals: dict[int, Interval] = {}
        self.error_samples: list[str] = []

    def record(self, latency: float, ok: bool, write: bool, error: str = "") -> None:
        slot = int((time.monotonic() - self.start) / self.interval)
        with self.lock:
            bucket = self.intervals.setdefault(slot, Interval())
            bucket.latencies.append(latency)
            if write:
                bucket.writes += 1
            if not ok:
                bucket.errors += 1
                if len(self.error_samples) < 20:
                    self.error_samples.append(error[:300])


def client(
    port: int,
    load: Load,
    stop: threading.Event,
    rate: float,
    dimension: int,
    items: int,
    write_fraction: float,
    seed: int,
) -> None:
    rng = random.Random(seed)
    try:
        connection = Connection(port, timeout=30.0)
    except OSError as error:
        load.record(0.0, False, False, f"connect: {error}")
        return
    next_send = time.monotonic() + rng.uniform(0, 1.0 / rate if rate > 0 else 0)
    with connection:
        while not stop.is_set():
            if rate > 0:
                delay = next_send - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_send += 1.0 / rate
            draw = rng.random()
            write = draw < write_fraction
            if write and draw < write_fraction * 0.8:
                ident = rng.randrange(items)
                request: dict[str, Any] = {
                    "op": "upsert",
                    "token": DEFAULT_TOKEN,
                    "items": [
                        {"id": ident, "vector_b64": b64_vector(rng, dimension), "tags": [f"g{ident % 7}"]}
                    ],
                }
            elif write:
                request = {"op": "delete", "token": DEFAULT_TOKEN, "ids": [rng.randrange(items)]}
            else:
                request = {"op": "search", "k": 10, "vector_b64": b64_vector(rng, dimension)}
                if rng.random() < 0.1:
                    request["filter"] = {"tags_any": [f"g{rng.randrange(7)}"]}
            sent = time.monotonic()
            try:
                response = connection.call(request)
            except (TimeoutError, ConnectionBroken, OSError) as error:
                load.record(time.monotonic() - sent, False, write, f"{request['op']}: {error!r}")
                return
            ok = response.get("ok") is True
            load.record(time.monotonic() - sent, ok, write, "" if ok else f"{request['op']}: {response}")


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def drive(
    port: int,
    seconds: float,
    connections: int,
    qps: float,
    interval: float,
    dimension: int,
    items: int,
    write_fraction: float,
    seed: int,
    server: Server | None = None,
    log: Any = print,
) -> tuple[Load, list[tuple[int, int | None]], list[int | None]]:
    load = Load(interval)
    stop = threading.Event()
    rate = qps / connections if qps > 0 else 0.0
    threads = [
        threading.Thread(
            target=client,
            args=(port, load, stop, rate, dimension, items, write_fraction, seed * 1000 + index),
            daemon=True,
        )
        for index in range(connections)
    ]
    for thread in threads:
        thread.start()
    rss: list[tuple[int, int | None]] = []
    memtables: list[int | None] = []
    deadline = load.start + seconds
    slot = 0
    while time.monotonic() < deadline:
        time.sleep(max(0.0, min(deadline, load.start + (slot + 1) * interval) - time.monotonic()))
        if server is not None:
            rss.append((slot, server.rss_kib()))
            memtables.append(memtable_kib(port))
            with load.lock:
                bucket = load.intervals.get(slot, Interval())
                count, errors = len(bucket.latencies), bucket.errors
                p99 = percentile(bucket.latencies, 0.99)
            log(
                f"interval {slot}: {count / interval:.0f} req/s, {errors} errors, p99 {p99 * 1000:.2f} ms, "
                f"VmRSS {rss[-1][1]} KiB, RocksDB memtables {memtables[-1]} KiB"
            )
        slot += 1
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    return load, rss, memtables


def memtable_kib(port: int) -> int | None:
    """`stats.store_memtable_bytes` in KiB: RocksDB's unflushed writes, which grow with every write until
    the write buffer is flushed (not a leak, but resident memory all the same)."""
    try:
        with Connection(port, timeout=30.0) as connection:
            value = connection.call({"op": "stats"}).get("store_memtable_bytes")
    except (ConnectionBroken, OSError):
        return None
    return int(value) // 1024 if isinstance(value, int) else None


def warm_up_memtables(
    connection: Connection, rng: random.Random, dimension: int, items: int, log: Any
) -> dict[str, Any]:
    """Overwrites stored items in batches until RocksDB has flushed its memtables once (their total
    fell by half from its peak), so the soak starts with memory at its steady-state size: memtables
    that have reached their budget and been reused, not growing from empty."""
    peak = written = 0
    started = time.monotonic()
    while written < 2_000_000:
        batch = [
            {"id": ident, "vector_b64": b64_vector(rng, dimension), "tags": [f"g{ident % 7}"]}
            for ident in (rng.randrange(items) for _ in range(500))
        ]
        unique = list({entry["id"]: entry for entry in batch}.values())
        response = connection.call({"op": "upsert", "token": DEFAULT_TOKEN, "items": unique})
        if response.get("ok") is not True:
            raise HarnessError(f"warm-up failed: {response}")
        written += len(unique)
        memtables = int(connection.call({"op": "stats"}).get("store_memtable_bytes", 0))
        if memtables < peak // 2:
            log(
                f"memtables flushed after {written} overwrites "
                f"(peak {peak // 1024} KiB, now {memtables // 1024} KiB)"
            )
            return {
                "overwrites": written,
                "peak_memtable_kib": peak // 1024,
                "seconds": round(time.monotonic() - started, 1),
            }
        peak = max(peak, memtables)
    raise HarnessError(f"memtables never flushed in {written} overwrites (peak {peak // 1024} KiB)")


def run(
    binary: str,
    minutes: float = 10.0,
    connections: int = 64,
    qps: float = 0.0,
    load_fraction: float = 0.8,
    calibrate_seconds: float = 10.0,
    interval: float = 60.0,
    dimension: int = 64,
    items: int = 20_000,
    write_fraction: float = 0.05,
    seed: int = 1,
    warm_memtables: bool = False,
    log: Any = print,
) -> dict[str, Any]:
    rng = random.Random(seed)
    workdir = tempfile.mkdtemp(prefix="steer-soak-")
    data = str(Path(workdir) / "data")
    arguments = [
        "--dimension",
        str(dimension),
        "--admin-token",
        DEFAULT_TOKEN,
        "--public-reads",
        "true",
        "--sync-writes",
        "true",
    ]
    server = Server(binary, data, arguments)
    try:
        with Connection(server.port, timeout=120.0) as connection:
            for start in range(0, items, 500):
                batch = [
                    {"id": ident, "vector_b64": b64_vector(rng, dimension), "tags": [f"g{ident % 7}"]}
                    for ident in range(start, min(items, start + 500))
                ]
                response = connection.call({"op": "upsert", "token": DEFAULT_TOKEN, "items": batch})
                if response.get("ok") is not True:
                    raise HarnessError(f"load failed: {response}")
            warmup = warm_up_memtables(connection, rng, dimension, items, log) if warm_memtables else None
        maximum = None
        if qps <= 0:
            calibration, _, _ = drive(
                server.port,
                calibrate_seconds,
                connections,
                0.0,
                calibrate_seconds,
                dimension,
                items,
                write_fraction,
                seed + 1,
            )
            count = sum(len(bucket.latencies) for bucket in calibration.intervals.values())
            maximum = count / calibrate_seconds
            qps = load_fraction * maximum
            log(f"maximum {maximum:.0f} req/s with {connections} connections; soaking at {qps:.0f} req/s")
        load, rss, memtables = drive(
            server.port,
            minutes * 60.0,
            connections,
            qps,
            interval,
            dimension,
            items,
            write_fraction,
            seed + 2,
            server=server,
            log=log,
        )
        with Connection(server.port, timeout=60.0) as connection:
            server_ops = connection.call({"op": "stats"}).get("ops", {})
        final = server.terminate()
    finally:
        if server.alive():
            server.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    slots = sorted(slot for slot in load.intervals if slot < len(rss))
    per_interval: list[dict[str, Any]] = []
    for slot in slots:
        bucket = load.intervals[slot]
        per_interval.append(
            {
                "interval": slot,
                "requests": len(bucket.latencies),
                "writes": bucket.writes,
                "errors": bucket.errors,
                "qps": round(len(bucket.latencies) / interval, 1),
                "p50_ms": round(percentile(bucket.latencies, 0.5) * 1000, 3),
                "p99_ms": round(percentile(bucket.latencies, 0.99) * 1000, 3),
                "rss_kib": rss[slot][1],
                "memtable_kib": memtables[slot],
            }
        )
    errors = sum(bucket.errors for bucket in load.intervals.values())
    warm = [entry["rss_kib"] for entry in per_interval[1:] if entry["rss_kib"] is not None]
    first_warm = per_interval[0]["rss_kib"] if per_interval else None
    growth = round(100.0 * (warm[-1] - first_warm) / first_warm, 2) if warm and first_warm else None
    net_growth = None
    if (
        warm
        and first_warm
        and per_interval[0]["memtable_kib"] is not None
        and per_interval[-1]["memtable_kib"] is not None
    ):
        memtable_growth = per_interval[-1]["memtable_kib"] - per_interval[0]["memtable_kib"]
        net_growth = round(100.0 * (warm[-1] - first_warm - memtable_growth) / first_warm, 2)
    p99s = [entry["p99_ms"] for entry in per_interval[1:]] or [entry["p99_ms"] for entry in per_interval]
    return {
        "minutes": minutes,
        "connections": connections,
        "interval_s": interval,
        "dimension": dimension,
        "items": items,
        "write_fraction": write_fraction,
        "memtable_warmup": warmup,
        "max_qps_measured": None if maximum is None else round(maximum, 1),
        "target_qps": round(qps, 1),
        "achieved_qps": round(
            sum(e["requests"] for e in per_interval) / max(1e-9, len(per_interval) * interval), 1
        ),
        "server_side_ops": server_ops,
        "errors": errors,
        "error_samples": load.error_samples,
        "exit_status": final,
        "rss_growth_after_warmup_percent": growth,
        "rss_growth_after_warmup_net_of_memtables_percent": net_growth,
        "p99_ms_min": min(p99s, default=None),
        "p99_ms_max": max(p99s, default=None),
        "per_interval": per_interval,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "binary", nargs="?", help="the steer binary (default: STEER_BIN or .build/debug/steer)"
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--qps", type=float, default=0.0, help="target rate (default: --load of the measured maximum)"
    )
    parser.add_argument("--load", type=float, default=0.8, help="fraction of the measured maximum")
    parser.add_argument("--calibrate-seconds", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=60.0, help="reporting interval in seconds")
    parser.add_argument("--dimension", type=int, default=64)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--write-fraction", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--warm-memtables",
        action="store_true",
        help="before the soak, overwrite items until RocksDB has flushed its memtables once",
    )
    parser.add_argument(
        "--results", help="results file (default Benchmarks/reliability/soak-results-<date>.json)"
    )
    options = parser.parse_args()
    try:
        binary = steer_binary(options.binary)
    except HarnessError as error:
        print(error, file=sys.stderr)
        return 2
    result = run(
        binary,
        minutes=options.minutes,
        connections=options.connections,
        qps=options.qps,
        load_fraction=options.load,
        calibrate_seconds=options.calibrate_seconds,
        interval=options.interval,
        dimension=options.dimension,
        items=options.items,
        write_fraction=options.write_fraction,
        seed=options.seed,
        warm_memtables=options.warm_memtables,
    )
    path = results_path("soak", options.results)
    write_results(path, binary, result)
    print(
        f"{result['minutes']} min, {result['connections']} connections: "
        f"max {result['max_qps_measured']} req/s, "
        f"target {result['target_qps']}, achieved {result['achieved_qps']}; errors {result['errors']}; "
        f"VmRSS growth after warm-up {result['rss_growth_after_warmup_percent']} % "
        f"({result['rss_growth_after_warmup_net_of_memtables_percent']} % net of memtables); p99 "
        f"{result['p99_ms_min']}–{result['p99_ms_max']} ms per interval; exit status {result['exit_status']}"
    )
    print(f"results: {path}")
    return 1 if result["errors"] or result["exit_status"] != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
