"""User histories benchmark: `recommend` by `user` vs by an explicit `history` (p50/p99 on one connection,
throughput with several), and `event` ingestion (single events and batches, fsynced writes).

Usage: STEER_BIN=.build/release/steer python3 Benchmarks/histories/bench.py [--results PATH]
Writes Benchmarks/histories/results-<date>.json with the command, commit, machine, load average
(`os.getloadavg`, before and after) and thread settings. Short by design: numbers from a machine shared
with other work are not headline numbers; the results file says what the machine was doing.
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))
from harness import DEFAULT_TOKEN, Connection, Server, steer_binary, write_results

DIMENSION = 64
ITEMS = 5000
USERS = 200
EVENTS_PER_USER = 50


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(connection: Connection, requests: list[dict[str, object]]) -> list[float]:
    latencies = []
    for request in requests:
        started = time.perf_counter()
        answer = connection.call(request)
        latencies.append((time.perf_counter() - started) * 1e6)
        if answer.get("ok") is not True:
            raise RuntimeError(f"{request['op']} failed: {answer}")
    return latencies


def saturate(port: int, make: list[list[dict[str, object]]]) -> float:
    """Requests per second with one thread and connection per request list."""
    errors: list[str] = []

    def run(requests: list[dict[str, object]]) -> None:
        try:
            with Connection(port) as connection:
                timed(connection, requests)
        except Exception as error:  # reported below
            errors.append(str(error))

    threads = [threading.Thread(target=run, args=(requests,)) for requests in make]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(errors[0])
    return sum(len(requests) for requests in make) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    binary = steer_binary()
    rng = random.Random(0)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as root:
        server = Server(
            binary,
            str(Path(root) / "data"),
            [
                "--dimension",
                str(DIMENSION),
                "--admin-token",
                DEFAULT_TOKEN,
                "--public-reads",
                "true",
            ],
        )
        try:
            with Connection(server.port, timeout=120.0) as connection:
                for start in range(0, ITEMS, 250):
                    items = [
                        {
                            "id": n,
                            "vector": [rng.uniform(-1, 1) for _ in range(DIMENSION)],
                        }
                        for n in range(start, start + 250)
                    ]
                    assert connection.call(
                        {"op": "upsert", "token": DEFAULT_TOKEN, "items": items}
                    )["ok"]
                histories = {
                    f"u{u}": [rng.randrange(ITEMS) for _ in range(EVENTS_PER_USER)]
                    for u in range(USERS)
                }

                # Event ingestion: batches of 100 (every user's history), then single events.
                batches = []
                for user, items in histories.items():
                    for start in range(0, EVENTS_PER_USER, 25):
                        batches.append(
                            [
                                {"user": user, "item": item, "ts": 1000 + start + n}
                                for n, item in enumerate(items[start : start + 25])
                            ]
                        )
                grouped = [
                    [event for batch in batches[i : i + 4] for event in batch]
                    for i in range(0, len(batches), 4)
                ]
                started = time.perf_counter()
                for events in grouped:
                    assert connection.call(
                        {"op": "event", "token": DEFAULT_TOKEN, "events": events}
                    )["ok"]
                batched_rate = sum(len(events) for events in grouped) / (
                    time.perf_counter() - started
                )
                singles = [
                    {
                        "op": "event",
                        "token": DEFAULT_TOKEN,
                        "user": f"single{n % 50}",
                        "item": rng.randrange(ITEMS),
                        "ts": n,
                    }
                    for n in range(args.requests // 2)
                ]
                single_latencies = timed(connection, singles)
                single_rate = len(singles) / (sum(single_latencies) / 1e6)

                # recommend by user (the server reads the 50 stored items) vs the same history sent.
                users = [f"u{rng.randrange(USERS)}" for _ in range(args.requests)]
                by_user = [{"op": "recommend", "user": user, "k": 10} for user in users]
                by_history = [
                    {"op": "recommend", "history": histories[user], "k": 10}
                    for user in users
                ]
                timed(connection, by_user[:200])  # warm-up
                timed(connection, by_history[:200])
                user_latencies = timed(connection, by_user)
                history_latencies = timed(connection, by_history)
            per = args.requests // args.connections
            user_rate = saturate(
                server.port,
                [by_user[i * per : (i + 1) * per] for i in range(args.connections)],
            )
            history_rate = saturate(
                server.port,
                [by_history[i * per : (i + 1) * per] for i in range(args.connections)],
            )
        finally:
            server.terminate()
    load_after = os.getloadavg()
    body = {
        "what": (
            "recommend by user vs explicit history (mean-history encoder, Flat, 5000 items of 64 d, "
            "50-item histories, k 10); event ingestion with sync_writes on"
        ),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "note": (
            "machine shared with other builds and tests while this ran (see load averages): "
            "not headline numbers"
        ),
        "threads": {
            "server": "defaults (event loops and workers = cores)",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
        },
        "recommend_one_connection_us": {
            "by_user": {
                "p50": percentile(user_latencies, 0.5),
                "p99": percentile(user_latencies, 0.99),
                "requests": len(user_latencies),
            },
            "by_history": {
                "p50": percentile(history_latencies, 0.5),
                "p99": percentile(history_latencies, 0.99),
                "requests": len(history_latencies),
            },
        },
        "recommend_saturation_per_s": {
            "connections": args.connections,
            "by_user": user_rate,
            "by_history": history_rate,
        },
        "events_per_s": {
            "batched_100": batched_rate,
            "single_one_connection": single_rate,
        },
        "single_event_us": {
            "p50": percentile(single_latencies, 0.5),
            "p99": percentile(single_latencies, 0.99),
        },
    }
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    path = (
        Path(args.results)
        if args.results
        else Path(__file__).resolve().parent / f"results-{date}.json"
    )
    write_results(path, binary, body)
    print(path)


if __name__ == "__main__":
    main()
