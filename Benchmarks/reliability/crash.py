#!/usr/bin/env python3
"""Crash harness for `steer serve` (docs/reliability.md).

Starts the built server on a fresh data directory with an admin token and an exact (Flat, l2) index,
drives batched upserts, deletes, gets and searches from several client threads, kills the server with
SIGKILL at a random moment (every `--graceful-every`-th round SIGTERM instead, so the saved-index +
change-replay path is exercised too), restarts it on the same directory and checks:

- every acknowledged upsert is present with its batch's title, tags and vector; every acknowledged
  delete is absent;
- the one request each writer had in flight when the server died is applied entirely or not at all
  (each batch tags its items with its own batch id; writers own disjoint ids, so no later write can
  have changed them);
- the index agrees with the store: `stats.items == stats.indexed ==` the number of items found, a search
  with each recently written item's own vector returns that item first, and no search returns an item
  that does not exist.

    python3 Benchmarks/reliability/crash.py .build/release/steer --rounds 100

Prints a summary and writes Benchmarks/reliability/crash-results-<date>.json (or `--results`); exits 1
when any check failed.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
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

ItemKey = int | str
MAX_VIOLATIONS_KEPT = 200


@dataclass(frozen=True)
class Item:
    """What the harness knows about one stored item."""

    title: str
    tags: tuple[str, ...]
    vector: bytes  # little-endian float32

    @staticmethod
    def from_wire(value: dict[str, Any], dimension: int) -> Item:
        vector = value.get("vector") or []
        try:
            packed = struct.pack(f"<{len(vector)}f", *vector)
        except (struct.error, TypeError):
            packed = b"?"
        if len(vector) != dimension:
            packed = b"?" + packed
        return Item(str(value.get("title")), tuple(sorted(value.get("tags") or [])), packed)


@dataclass
class PendingWrite:
    """A write sent but not acknowledged when the connection ended."""

    kind: str  # "upsert" or "delete"
    batch: str
    items: dict[ItemKey, Item | None]  # the state each id has if the write was applied


@dataclass
class Counters:
    upsert_batches: int = 0
    upserted_items: int = 0
    delete_requests: int = 0
    deleted_ids: int = 0
    gets: int = 0
    searches: int = 0
    error_responses: int = 0
    pending_applied: int = 0
    pending_not_applied: int = 0
    pending_indistinguishable: int = 0
    stats_checks: int = 0
    own_vector_searches: int = 0
    deleted_vector_searches: int = 0


@dataclass
class Shared:
    """State shared by the client threads of one round."""

    port: int
    stop: threading.Event
    lock: threading.Lock = field(default_factory=threading.Lock)
    violations: list[dict[str, Any]] = field(default_factory=list)
    counters: Counters = field(default_factory=Counters)
    signalled: threading.Event = field(default_factory=threading.Event)
    ivf: bool = False  # an IVF index answers `unavailable` to searches until it is trained

    def violation(self, kind: str, **details: Any) -> None:
        with self.lock:
            self.violations.append({"kind": kind, **details})


def float32_vector(rng: random.Random, dimension: int) -> bytes:
    return struct.pack(f"<{dimension}f", *(rng.gauss(0.0, 1.0) for _ in range(dimension)))


def unpack(vector: bytes) -> list[float]:
    return list(struct.unpack(f"<{len(vector) // 4}f", vector))


class Writer:
    """One client thread owning the ids `keys`: sequential batched upserts and deletes (one in flight)."""

    def __init__(self, index: int, keys: list[ItemKey], dimension: int, max_items: int, seed: int) -> None:
        self.index = index
        self.keys = keys
        self.dimension = dimension
        self.max_items = max_items
        self.rng = random.Random(seed)
        self.model: dict[ItemKey, Item] = {}
        self.pending: PendingWrite | None = None
        self.batches = 0
        self.written_this_round: set[ItemKey] = set()
        self.deleted_this_round: dict[ItemKey, Item] = {}

    def run(self, shared: Shared, round_number: int) -> None:
        self.pending = None
        self.written_this_round = set()
        self.deleted_this_round = {}
        try:
            connection = Connection(shared.port, timeout=30.0)
        except OSError:
            return  # the server died before this thread connected
        with connection:
            while not shared.stop.is_set():
                write = self._next_write(round_number)
                request: dict[str, Any] = {"id": write.batch, "op": write.kind, "token": DEFAULT_TOKEN}
                if write.kind == "upsert":
                    request["items"] = [
                        {
                            "id": key,
                            "vector": unpack(item.vector),
                            "title": item.title,
                            "tags": list(item.tags),
                            "attributes": {"batch": write.batch},
                        }
                        for key, item in write.items.items()
                        if item is not None
                    ]
                else:
                    request["ids"] = list(write.items)
                self.pending = write
                try:
                    response = connection.call(request)
                except ConnectionBroken:
                    return
                except TimeoutError:
                    shared.violation("hang", writer=self.index, batch=write.batch, op=write.kind)
                    return
                except OSError:
                    return
                self.pending = None
                if response.get("ok") is not True:
                    error = response.get("error") or {}
                    if not (shared.signalled.is_set() and error.get("code") == "unavailable"):
                        shared.violation(
                            "error_response", writer=self.index, batch=write.batch, op=write.kind, error=error
                        )
                    with shared.lock:
                        shared.counters.error_responses += 1
                    continue  # refused: the model keeps its state, verified after the restart
                self._apply(write)
                with shared.lock:
                    if write.kind == "upsert":
                        shared.counters.upsert_batches += 1
                        shared.counters.upserted_items += len(write.items)
                    else:
                        shared.counters.delete_requests += 1
                        shared.counters.deleted_ids += len(write.items)

    def _next_write(self, round_number: int) -> PendingWrite:
        self.batches += 1
        batch = f"r{round_number}-w{self.index}-b{self.batches}"
        count = self.rng.randint(1, self.max_items)
        keys = self.rng.sample(self.keys, min(count, len(self.keys)))
        if self.rng.random() < 0.7:
            items: dict[ItemKey, Item | None] = {
                key: Item(batch, (f"batch-{batch}",), float32_vector(self.rng, self.dimension))
                for key in keys
            }
            return PendingWrite("upsert", batch, items)
        return PendingWrite("delete", batch, dict.fromkeys(keys[: max(1, count // 2)]))

    def _apply(self, write: PendingWrite) -> None:
        for key, item in write.items.items():
            if item is None:
                previous = self.model.pop(key, None)
                if previous is not None:
                    self.deleted_this_round[key] = previous
                self.written_this_round.discard(key)
            else:
                self.model[key] = item
                self.written_this_round.add(key)
                self.deleted_this_round.pop(key, None)


def reader(shared: Shared, keys: list[ItemKey], dimension: int, seed: int) -> None:
    """Searches and gets (results not checked against a model here; errors and hangs are)."""
    rng = random.Random(seed)
    try:
        connection = Connection(shared.port, timeout=30.0)
    except OSError:
        return
    with connection:
        while not shared.stop.is_set():
            if rng.random() < 0.6:
                request: dict[str, Any] = {
                    "op": "search",
                    "k": 5,
                    "vector": unpack(float32_vector(rng, dimension)),
                }
            else:
                request = {"op": "get", "ids": rng.sample(keys, 8)}
            try:
                response = connection.call(request)
            except TimeoutError:
                shared.violation("hang", reader=seed, op=request["op"])
                return
            except (ConnectionBroken, OSError):
                return
            with shared.lock:
                if response.get("ok") is True:
                    if request["op"] == "search":
                        shared.counters.searches += 1
                    else:
                        shared.counters.gets += 1
                    continue
                shared.counters.error_responses += 1
            error = response.get("error") or {}
            untrained = (
                shared.ivf and request["op"] == "search" and "not trained" in str(error.get("message"))
            )
            if not (error.get("code") == "unavailable" and (shared.signalled.is_set() or untrained)):
                shared.violation("error_response", op=request["op"], error=error)


def fetch_all(connection: Connection, keys: list[ItemKey], dimension: int) -> dict[ItemKey, Item]:
    found: dict[ItemKey, Item] = {}
    for start in range(0, len(keys), 512):
        chunk = keys[start : start + 512]
        response = connection.call({"op": "get", "ids": chunk})
        if response.get("ok") is not True:
            raise HarnessError(f"get failed after restart: {response}")
        for value in response.get("items", []):
            found[value["id"]] = Item.from_wire(value, dimension)
        if len(response.get("items", [])) + len(response.get("missing", [])) != len(chunk):
            raise HarnessError(
                f"get answered {len(response.get('items', []))} items and "
                f"{len(response.get('missing', []))} missing for {len(chunk)} ids"
            )
    return found


def verify(
    server: Server,
    writers: list[Writer],
    shared: Shared,
    round_number: int,
    dimension: int,
    rng: random.Random,
    exact_index: bool,
) -> None:
    """Checks the restarted server against every writer's model, then adopts what was found."""
    counters = shared.counters
    all_keys = [key for writer in writers for key in writer.keys]
    with Connection(server.port, timeout=60.0) as connection:
        actual = fetch_all(connection, all_keys, dimension)
        for writer in writers:
            pending = writer.pending
            applied: list[ItemKey] = []
            not_applied: list[ItemKey] = []
            for key in writer.keys:
                have = actual.get(key)
                if have is not None and have.tags != (f"batch-{have.title}",):
                    shared.violation(
                        "torn_item", round=round_number, id=key, title=have.title, tags=list(have.tags)
                    )
                acknowledged = writer.model.get(key)
                matches_ack = have == acknowledged
                if pending is not None and key in pending.items:
                    matches_applied = have == pending.items[key]
                    if matches_applied and not matches_ack:
                        applied.append(key)
                    elif matches_ack and not matches_applied:
                        not_applied.append(key)
                    elif not matches_ack:
                        shared.violation(
                            "unexpected_state",
                            round=round_number,
                            id=key,
                            pending=pending.batch,
                            found=None if have is None else have.title,
                            acknowledged=None if acknowledged is None else acknowledged.title,
                        )
                elif not matches_ack:
                    shared.violation(
                        "lost_acknowledged_write"
                        if have is None or acknowledged is not None
                        else "resurrected_or_unacknowledged_item",
                        round=round_number,
                        id=key,
                        found=None if have is None else have.title,
                        acknowledged=None if acknowledged is None else acknowledged.title,
                    )
            if pending is not None:
                if applied and not_applied:
                    shared.violation(
                        "half_applied_batch",
                        round=round_number,
                        batch=pending.batch,
                        op=pending.kind,
                        applied=applied[:20],
                        not_applied=not_applied[:20],
                    )
                elif applied:
                    counters.pending_applied += 1
                elif not_applied:
                    counters.pending_not_applied += 1
                else:
                    counters.pending_indistinguishable += 1
                for key in applied:
                    item = pending.items[key]
                    if item is None:
                        previous = writer.model.get(key)
                        if previous is not None:
                            writer.deleted_this_round[key] = previous
                        writer.written_this_round.discard(key)
                    else:
                        writer.written_this_round.add(key)
            # Adopt what the server holds (after reporting any difference) so one failure is reported once.
            writer.model = {key: actual[key] for key in writer.keys if key in actual}
            writer.pending = None

        stats = connection.call({"op": "stats"})
        if stats.get("ok") is not True:
            raise HarnessError(f"stats failed after restart: {stats}")
        counters.stats_checks += 1
        if stats.get("items") != len(actual) or stats.get("indexed") != len(actual):
            shared.violation(
                "index_store_disagree",
                round=round_number,
                stats_items=stats.get("items"),
                stats_indexed=stats.get("indexed"),
                found_by_get=len(actual),
            )

        recent = [
            (key, actual[key]) for writer in writers for key in writer.written_this_round if key in actual
        ]
        rng.shuffle(recent)
        for key, item in recent[:40]:
            response = connection.call({"op": "search", "k": 3, "vector": unpack(item.vector)})
            counters.own_vector_searches += 1
            hits = response.get("hits") if response.get("ok") is True else None
            if not hits:
                shared.violation("own_vector_search_failed", round=round_number, id=key, response=response)
                continue
            if exact_index and hits[0].get("id") != key:
                shared.violation(
                    "own_vector_not_first", round=round_number, id=key, hits=[hit.get("id") for hit in hits]
                )
            for hit in hits:
                if hit.get("id") not in actual:
                    shared.violation("search_returned_missing_item", round=round_number, id=hit.get("id"))
        deleted = [
            (key, item)
            for writer in writers
            for key, item in writer.deleted_this_round.items()
            if key not in actual
        ]
        rng.shuffle(deleted)
        for key, item in deleted[:20]:
            response = connection.call({"op": "search", "k": 3, "vector": unpack(item.vector)})
            counters.deleted_vector_searches += 1
            if response.get("ok") is not True:
                shared.violation(
                    "deleted_vector_search_failed", round=round_number, id=key, response=response
                )
                continue
            if any(hit.get("id") not in actual for hit in response.get("hits", [])):
                shared.violation(
                    "search_returned_deleted_item",
                    round=round_number,
                    id=key,
                    hits=[hit.get("id") for hit in response.get("hits", [])],
                )


def run(
    binary: str,
    rounds: int = 100,
    writers: int = 4,
    readers: int = 2,
    keys_per_writer: int = 64,
    dimension: int = 8,
    max_items: int = 16,
    min_run: float = 0.05,
    max_run: float = 1.0,
    graceful_every: int = 10,
    seed: int = 1,
    index_spec: str = "Flat",
    sync_writes: bool = True,
    keep: bool = False,
    log: Any = print,
) -> dict[str, Any]:
    """Runs the harness; returns the results record (without command/commit/machine)."""
    rng = random.Random(seed)
    workdir = tempfile.mkdtemp(prefix="steer-crash-")
    data = str(Path(workdir) / "data")
    arguments = [
        "--dimension",
        str(dimension),
        "--metric",
        "l2",
        "--index-spec",
        index_spec,
        "--admin-token",
        DEFAULT_TOKEN,
        "--public-reads",
        "true",
        "--sync-writes",
        "true" if sync_writes else "false",
    ]
    writer_list = [
        Writer(
            index,
            [f"w{index}-{n}" if n % 2 == 0 else (index + 1) * 1_000_000 + n for n in range(keys_per_writer)],
            dimension,
            max_items,
            seed * 1000 + index,
        )
        for index in range(writers)
    ]
    all_keys = [key for writer in writer_list for key in writer.keys]
    violations: list[dict[str, Any]] = []
    counters = Counters()
    restart_seconds: list[float] = []
    kills = graceful = 0
    started = time.monotonic()
    try:
        server = Server(binary, data, arguments)
        for round_number in range(1, rounds + 1):
            shared = Shared(
                port=server.port, stop=threading.Event(), counters=counters, ivf=index_spec.startswith("IVF")
            )
            threads = [
                threading.Thread(target=writer.run, args=(shared, round_number), daemon=True)
                for writer in writer_list
            ]
            threads += [
                threading.Thread(
                    target=reader,
                    args=(shared, all_keys, dimension, seed * 7919 + round_number * 31 + index),
                    daemon=True,
                )
                for index in range(readers)
            ]
            for thread in threads:
                thread.start()
            time.sleep(rng.uniform(min_run, max_run))
            is_graceful = graceful_every > 0 and round_number % graceful_every == 0
            shared.signalled.set()
            if is_graceful:
                # Requests already sent are answered; the clients stop sending so connections go quiet.
                server.process.send_signal(signal.SIGTERM)
                shared.stop.set()
                code = server.terminate()
                graceful += 1
                if code != 0:
                    shared.violation(
                        "graceful_exit_status",
                        round=round_number,
                        status=code,
                        stderr=server.stderr_tail(500),
                    )
            else:
                if not server.alive():
                    shared.violation(
                        "server_died",
                        round=round_number,
                        status=server.process.returncode,
                        stderr=server.stderr_tail(500),
                    )
                server.kill()
                kills += 1
            shared.stop.set()
            for thread in threads:
                thread.join(timeout=60)
                if thread.is_alive():
                    shared.violation("client_thread_hung", round=round_number)
            restart = time.monotonic()
            server = Server(binary, data, arguments)
            restart_seconds.append(time.monotonic() - restart)
            verify(server, writer_list, shared, round_number, dimension, rng, index_spec == "Flat")
            violations.extend(shared.violations)
            if shared.violations:
                log(f"round {round_number}: {len(shared.violations)} violation(s): {shared.violations[:3]}")
            elif round_number % 10 == 0 or round_number == rounds:
                log(
                    f"round {round_number}/{rounds}: ok ({counters.upsert_batches} upsert batches, "
                    f"{counters.delete_requests} deletes acknowledged so far)"
                )
        final = server.terminate()
        if final != 0:
            violations.append(
                {"kind": "final_exit_status", "status": final, "stderr": server.stderr_tail(500)}
            )
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    return {
        "rounds": rounds,
        "sigkills": kills,
        "sigterms": graceful,
        "seconds": round(elapsed, 1),
        "settings": {
            "writers": writers,
            "readers": readers,
            "keys_per_writer": keys_per_writer,
            "dimension": dimension,
            "max_items_per_batch": max_items,
            "run_seconds": [min_run, max_run],
            "graceful_every": graceful_every,
            "seed": seed,
            "index_spec": index_spec,
            "metric": "l2",
            "sync_writes": sync_writes,
        },
        "acknowledged": {
            "upsert_batches": counters.upsert_batches,
            "upserted_items": counters.upserted_items,
            "delete_requests": counters.delete_requests,
            "deleted_ids": counters.deleted_ids,
        },
        "reads": {"searches": counters.searches, "gets": counters.gets},
        "in_flight_at_kill": {
            "applied": counters.pending_applied,
            "not_applied": counters.pending_not_applied,
            "indistinguishable": counters.pending_indistinguishable,
        },
        "checks": {
            "stats": counters.stats_checks,
            "own_vector_searches": counters.own_vector_searches,
            "deleted_vector_searches": counters.deleted_vector_searches,
        },
        "error_responses": counters.error_responses,
        "restart_seconds": {
            "mean": round(sum(restart_seconds) / max(1, len(restart_seconds)), 3),
            "max": round(max(restart_seconds, default=0.0), 3),
        },
        "violation_count": len(violations),
        "violations": violations[:MAX_VIOLATIONS_KEPT],
        "data_directory": data if keep else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "binary", nargs="?", help="the steer binary (default: STEER_BIN or .build/debug/steer)"
    )
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--keys-per-writer", type=int, default=64)
    parser.add_argument("--dimension", type=int, default=8)
    parser.add_argument("--max-items", type=int, default=16, help="largest upsert batch")
    parser.add_argument(
        "--min-run", type=float, default=0.05, help="shortest time under load before the kill (s)"
    )
    parser.add_argument(
        "--max-run", type=float, default=1.0, help="longest time under load before the kill (s)"
    )
    parser.add_argument(
        "--graceful-every", type=int, default=10, help="every Nth round SIGTERM instead (0: never)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--index-spec", default="Flat", help="Flat enables the own-vector-first check")
    parser.add_argument("--no-sync-writes", action="store_true", help="serve with --sync-writes false")
    parser.add_argument(
        "--results", help="results file (default Benchmarks/reliability/crash-results-<date>.json)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    options = parser.parse_args()
    try:
        binary = steer_binary(options.binary)
    except HarnessError as error:
        print(error, file=sys.stderr)
        return 2
    result = run(
        binary,
        rounds=options.rounds,
        writers=options.writers,
        readers=options.readers,
        keys_per_writer=options.keys_per_writer,
        dimension=options.dimension,
        max_items=options.max_items,
        min_run=options.min_run,
        max_run=options.max_run,
        graceful_every=options.graceful_every,
        seed=options.seed,
        index_spec=options.index_spec,
        sync_writes=not options.no_sync_writes,
        keep=options.keep,
    )
    path = results_path("crash", options.results)
    write_results(path, binary, result)
    acknowledged = result["acknowledged"]
    print(
        f"{result['rounds']} rounds ({result['sigkills']} SIGKILL, {result['sigterms']} SIGTERM) in "
        f"{result['seconds']} s; acknowledged {acknowledged['upsert_batches']} upsert batches "
        f"({acknowledged['upserted_items']} items), {acknowledged['delete_requests']} deletes "
        f"({acknowledged['deleted_ids']} ids); in flight at the kill: {result['in_flight_at_kill']}; "
        f"restart {result['restart_seconds']} s; violations: {result['violation_count']}"
    )
    print(f"results: {path}")
    return 1 if result["violation_count"] else 0


if __name__ == "__main__":
    sys.exit(main())
