"""Convergence harness for replicated writes on NATS JetStream (docs/scaling.md, "Following a stream").

A 3-node NATS cluster on loopback ports (R=3 streams), 2 shards x 2 `steer serve --follow` replicas and 2
`steer route --follow` routers. Writers upsert and delete the same small id space through both routers
at once; each round kills one replica of every shard and one NATS node with SIGKILL, lets the writers go
on, then restarts them (same ports, data directories and NATS store). After the rounds the writers stop
and, once every replica applied its stream's last write, the harness checks:

- every acknowledged write is present: for every id, the state the replicas hold is that of the write
  with the highest acknowledged sequence of the id's shard, or of a write whose answer was lost (it may
  have been appended after the last acknowledged one); never an older acknowledged write, never a
  deleted id whose last acknowledged write is an upsert (nor the reverse) unless a write whose answer
  was lost explains it;
- the replicas of a shard hold identical items (`get` of the whole id space: ids, vectors, titles,
  tags, attributes) and answer identical `search` hits for a query set;
- each replica's index agrees with its store (`stats` items == indexed, and an exact search for every
  live item returns exactly the live ids).

Usage: python3 Benchmarks/reliability/convergence.py [--rounds 20] [--out FILE]
(Tests/reliability/test_convergence.py runs 2 rounds.) Standard library only; needs `nats-server`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import Connection, ConnectionBroken, HarnessError, steer_binary, write_results

TOKEN = "convergence-token"
DIMENSION = 8
ID_SPACE = 120
SHARDS = 2
CLUSTER = "conv"
# How long the final check retries its marker writes while a stream has no leader (after the last round).
MARKER_RETRY_SECONDS = 60.0
# How long the final check waits for every replica to apply the last write of its shard.
QUIESCENCE_TIMEOUT_SECONDS = 600.0
# The router's message when NATS answered "no responders": no stream took the write, nothing was stored.
NOT_APPENDED = "no JetStream stream takes"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nats_binary() -> str:
    for path in ("/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"):
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("nats-server")
    if found is None:
        raise HarnessError("nats-server not found: run `make setup-system` (Debian package nats-server)")
    return found


def wait_listening(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise HarnessError(f"{what} exited ({process.returncode}) before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise HarnessError(f"{what} did not listen on {port} within {timeout:.0f} s")


class Child:
    """A child process (nats-server, steer serve, steer route) with a fixed port; stderr to a log file."""

    def __init__(self, name: str, command: list[str], port: int, log: Path) -> None:
        self.name = name
        self.command = command
        self.port = port
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        with open(self.log, "ab") as sink:
            self.process = subprocess.Popen(
                self.command, stdout=subprocess.DEVNULL, stderr=sink, env=env, start_new_session=True
            )
        wait_listening(self.port, self.process, self.name, timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Ledger:
    """What the writers did: per id, acknowledged writes by (shard sequence, title or None for a
    delete), and the titles / deletes whose answer was lost (they may or may not be in the stream)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    acked: dict[int, list[tuple[int, str | None]]] = field(default_factory=dict)
    unknown_titles: dict[int, set[str]] = field(default_factory=dict)
    unknown_deletes: set[int] = field(default_factory=set)
    acked_count: int = 0
    failed_count: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    samples: dict[str, str] = field(default_factory=dict)


def vector_for(title: str) -> list[float]:
    rng = random.Random(title)
    values = [rng.uniform(-1, 1) for _ in range(DIMENSION)]
    return [float(struct.unpack("f", struct.pack("f", v))[0]) for v in values]


def same_vector(got: list[float], written: list[float]) -> bool:
    """Equal as float32 (the answer prints each float32 in decimal)."""
    pack = struct.Struct(f"{DIMENSION}f")
    return len(got) == len(written) == DIMENSION and pack.pack(*got) == pack.pack(*written)


def writer(index: int, routers: list[int], ledger: Ledger, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed * 1000 + index)
    connections: dict[int, Connection] = {}
    counter = 0
    while not stop.is_set():
        port = routers[counter % len(routers)]
        counter += 1
        item = rng.randrange(ID_SPACE)
        if rng.random() < 0.15:
            request: dict[str, Any] = {"op": "delete", "token": TOKEN, "ids": [item], "timeout_ms": 5000}
            title = None
        else:
            title = f"w{index}-{counter}"
            request = {
                "op": "upsert",
                "token": TOKEN,
                "timeout_ms": 5000,
                "items": [
                    {"id": item, "vector": vector_for(title), "title": title, "tags": [f"t{counter % 4}"]}
                ],
            }
        answer: dict[str, Any] | None = None
        try:
            connection = connections.get(port) or Connection(port, timeout=10)
            connections[port] = connection
            answer = connection.call(request)
        except (ConnectionBroken, OSError):
            with contextlib.suppress(Exception):
                connections.pop(port).close()
        with ledger.lock:
            if answer is not None and answer.get("ok") is True:
                sequence = max(answer["sequences"])
                ledger.acked.setdefault(item, []).append((sequence, title))
                ledger.acked_count += 1
            else:
                ledger.failed_count += 1
                code = (answer or {}).get("error", {}).get("code", "connection")
                ledger.errors[code] = ledger.errors.get(code, 0) + 1
                message = str((answer or {}).get("error", {}).get("message", ""))
                ledger.samples.setdefault(message[:60], message)
                # A refused write may still be in the stream (unavailable / deadline_exceeded), except
                # when no stream took the subject at all (NATS's no-responders status: nothing stored)
                # or the router refused it before publishing.
                if NOT_APPENDED in message or code in (
                    "invalid_request",
                    "dimension_mismatch",
                    "unauthorized",
                ):
                    pass
                elif title is None:
                    ledger.unknown_deletes.add(item)
                else:
                    ledger.unknown_titles.setdefault(item, set()).add(title)
        if answer is None:
            time.sleep(0.05)
        elif answer.get("ok") is not True:
            time.sleep(0.01)
    for connection in connections.values():
        connection.close()


class Cluster:
    def __init__(
        self,
        binary: str,
        root: Path,
        dimension: int = DIMENSION,
        replica_arguments: tuple[str, ...] = (),
        shards: int = SHARDS,
    ) -> None:
        self.binary = binary
        self.root = root
        nats = nats_binary()
        client_ports = [free_port() for _ in range(3)]
        route_ports = [free_port() for _ in range(3)]
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in route_ports)
        self.nats: list[Child] = []
        for i in range(3):
            directory = root / f"n{i + 1}"
            directory.mkdir(parents=True)
            config = directory / "server.conf"
            config.write_text(
                f"server_name: n{i + 1}\nlisten: 127.0.0.1:{client_ports[i]}\n"
                f'jetstream {{ store_dir: "{directory / "store"}" }}\n'
                f"cluster {{\n  name: steer\n  listen: 127.0.0.1:{route_ports[i]}\n  routes: [{routes}]\n}}\n"
            )
            self.nats.append(
                Child(f"nats n{i + 1}", [nats, "-c", str(config)], client_ports[i], directory / "log")
            )
        self.follow = ",".join(f"nats://127.0.0.1:{p}" for p in client_ports)
        self.replicas: list[list[Child]] = []
        for shard in range(shards):
            row = []
            for r in range(2):
                port = free_port()
                data = root / f"shard{shard}-r{r}"
                command = [
                    binary, "serve", "--port", str(port), "--data", str(data), "--log-level", "warning",
                    "--dimension", str(dimension), "--admin-token", TOKEN, "--public-reads", "true",
                    "--follow", self.follow, "--cluster", CLUSTER, "--shard", str(shard),
                    "--stream-replicas", "3", *replica_arguments,
                ]  # fmt: skip
                row.append(
                    Child(f"shard {shard} replica {r}", command, port, root / f"shard{shard}-r{r}.log")
                )
            self.replicas.append(row)
        shard_flags: list[str] = []
        for row in self.replicas:
            shard_flags += ["--shard", ",".join(f"127.0.0.1:{c.port}" for c in row)]
        self.routers = []
        for i in range(2):
            port = free_port()
            command = [
                binary, "route", "--port", str(port), "--log-level", "warning", "--admin-token", TOKEN,
                "--follow", self.follow, "--cluster", CLUSTER, "--health-interval-ms", "200", *shard_flags,
            ]  # fmt: skip
            self.routers.append(Child(f"router {i}", command, port, root / f"router{i}.log"))

    def start(self) -> None:
        for node in self.nats:
            node.start()
        for row in self.replicas:
            for replica in row:
                start_with_retries(replica)
        for router in self.routers:
            router.start()

    def stop(self) -> None:
        for child in [*self.routers, *(r for row in self.replicas for r in row), *self.nats]:
            child.stop()


def start_with_retries(child: Child, seconds: float = 60.0) -> None:
    """Starts a replica; a NATS cluster electing its leaders refuses stream calls for a while (the
    replica then exits 2), so retry until `seconds` pass."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            child.start()
            return
        except HarnessError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def call(port: int, request: dict[str, Any], timeout: float = 90.0) -> dict[str, Any]:
    connection = Connection(port, timeout=timeout)
    try:
        answer = connection.call(request)
    finally:
        connection.close()
    if answer.get("ok") is not True:
        raise HarnessError(f"{request.get('op')} on {port} failed: {answer}")
    return answer


def shard_of(item: int, shards: int = SHARDS) -> int:
    """SteerCore's `Sharding` for an integer id: FNV-1a-64 of its key bytes (0x01, then the id with its
    sign bit flipped, big-endian) mod the shard count."""
    key = b"\x01" + struct.pack(">Q", (item % (1 << 64)) ^ (1 << 63))
    value = 0xCBF29CE484222325
    for byte in key:
        value ^= byte
        value = (value * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value % shards


def run(binary: str, rounds: int, seed: int, writers: int = 4, round_seconds: float = 4.0) -> dict[str, Any]:
    rng = random.Random(seed)
    root = Path(tempfile.mkdtemp(prefix="steer-convergence-"))
    cluster = Cluster(binary, root)
    started = time.monotonic()
    result: dict[str, Any] = {
        "rounds": rounds,
        "seed": seed,
        "writers": writers,
        "round_seconds": round_seconds,
    }
    # The machine is shared (other jobs compile): record its load around the run.
    result["load_average_start"] = os.getloadavg()
    try:
        cluster.start()
        ledger = Ledger()
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=writer, args=(i, [r.port for r in cluster.routers], ledger, stop, seed), daemon=True
            )
            for i in range(writers)
        ]
        for thread in threads:
            thread.start()
        kills: list[dict[str, Any]] = []
        for number in range(rounds):
            time.sleep(round_seconds / 2)
            victims = [rng.choice(row) for row in cluster.replicas]
            node = rng.choice(cluster.nats)
            for victim in [*victims, node]:
                victim.kill()
            kills.append({"round": number + 1, "killed": [v.name for v in [*victims, node]]})
            time.sleep(round_seconds / 2)
            node.start()
            for victim in victims:
                start_with_retries(victim)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        result["kills"] = kills
        result["acknowledged_writes"] = ledger.acked_count
        result["failed_writes"] = ledger.failed_count
        result["failed_by_code"] = ledger.errors
        result["failure_messages"] = sorted(ledger.samples.values())[:12]
        result["checks"] = check(cluster, ledger)
        result["ok"] = all(c["ok"] for c in result["checks"].values())
    finally:
        cluster.stop()
        result["seconds"] = round(time.monotonic() - started, 1)
        result["load_average_end"] = os.getloadavg()
        if result.get("ok"):
            shutil.rmtree(root, ignore_errors=True)
        else:
            result["kept_directory"] = str(root)
    return result


def verify_ids(items: dict[int, dict[str, Any]], ids: list[int], ledger: Ledger) -> list[str]:
    """What is wrong with the final `items` (by id, as `get` answered) given what the writers did: an id
    must hold its last acknowledged write (by shard sequence) or a write whose answer was lost. Writes
    acknowledged with the same sequence were appended in one batch message (a router's group commit,
    docs/scaling.md): their order is that of the message's lines, which the answers do not carry, so
    any of them may be the last."""
    problems: list[str] = []
    for item in ids:
        history = sorted(ledger.acked.get(item, []), key=lambda entry: entry[0])
        present = items.get(item)
        unknown = ledger.unknown_titles.get(item, set())
        if not history:
            if present is not None and present["title"] not in unknown:
                problems.append(f"id {item}: holds {present['title']} that no writer sent")
            continue
        last_sequence = history[-1][0]
        last_writes = [title for seq, title in history if seq == last_sequence]
        acked_titles = {title: seq for seq, title in history if title is not None}
        if present is None:
            if None not in last_writes and item not in ledger.unknown_deletes:
                problems.append(
                    f"id {item}: missing, but its last acknowledged write ({last_sequence}) is an upsert"
                )
            continue
        title = present["title"]
        if title in acked_titles:
            if acked_titles[title] < last_sequence:
                problems.append(
                    f"id {item}: holds {title} (sequence {acked_titles[title]}), "
                    f"lost the acknowledged sequence {last_sequence}"
                )
            elif not same_vector(present.get("vector", []), vector_for(title)):
                problems.append(f"id {item}: vector of {title} differs from what was written")
        elif title not in unknown:
            problems.append(f"id {item}: holds {title}, which no writer sent for it")
    return problems


def check(cluster: Cluster, ledger: Ledger) -> dict[str, dict[str, Any]]:
    owners: dict[int, list[int]] = {shard: [] for shard in range(SHARDS)}
    for item in range(ID_SPACE):
        owners[shard_of(item)].append(item)
    # Quiescence: one more write per shard through a router; every replica must apply through it.
    markers: dict[int, int] = {}
    marker_ids: dict[int, int] = {}
    for shard in range(SHARDS):
        candidate = ID_SPACE + 1000
        while shard_of(candidate) != shard:
            candidate += 1
        marker_ids[shard] = candidate
        marker = {"id": candidate, "vector": vector_for("marker"), "title": "marker"}
        request = {"op": "upsert", "token": TOKEN, "timeout_ms": 30000, "items": [marker]}
        # Right after the last round a restarted NATS node may still be electing the stream's leader:
        # the router then answers `unavailable` ("no JetStream stream takes ..."), as it does for any
        # write while a stream has no leader. Retry for a while; a marker written twice is harmless
        # (same id and vector, and the wait below covers the later sequence).
        deadline = time.monotonic() + MARKER_RETRY_SECONDS
        while True:
            try:
                answer = call(cluster.routers[0].port, request)
                break
            except HarnessError as error:
                if "'unavailable'" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        markers[shard] = answer["sequences"][shard]
    # Replicas restarted in the last round may still be catching up: wait (bounded) and record how long.
    waited = time.monotonic()
    lagging = ""
    while time.monotonic() - waited < QUIESCENCE_TIMEOUT_SECONDS:
        behind = []
        for shard, row in enumerate(cluster.replicas):
            for replica in row:
                sequence = call(replica.port, {"op": "stats", "token": TOKEN})["applied_sequence"]
                if sequence < markers[shard]:
                    behind.append(f"{replica.name} at {sequence} < {markers[shard]}")
        if not behind:
            lagging = ""
            break
        lagging = "; ".join(behind)
        time.sleep(0.5)
    checks: dict[str, dict[str, Any]] = {}
    checks["quiescence"] = {
        "ok": not lagging,
        "seconds_until_every_replica_applied_the_markers": round(time.monotonic() - waited, 1),
        "still_behind": lagging,
    }
    if lagging:
        return checks
    problems: list[str] = []
    identical: list[str] = []
    index_problems: list[str] = []
    queries = [vector_for(f"query-{q}") for q in range(16)]
    for shard, row in enumerate(cluster.replicas):
        ids = owners[shard]
        contents = []
        hits = []
        for replica in row:
            got = call(
                replica.port,
                {
                    "op": "get",
                    "token": TOKEN,
                    "ids": ids,
                    "min_sequence": markers[shard],
                    "timeout_ms": 60000,
                },
            )
            contents.append((got["items"], got["missing"]))
            search = {"op": "search", "token": TOKEN, "k": 10}
            hits.append([call(replica.port, {**search, "vector": q})["hits"] for q in queries])
            stats = call(replica.port, {"op": "stats", "token": TOKEN})
            live = {item["id"] for item in got["items"]} | {marker_ids[shard]}
            if stats["items"] != stats["indexed"] or stats["items"] != len(live):
                index_problems.append(
                    f"{replica.name}: items {stats['items']} indexed {stats['indexed']} live {len(live)}"
                )
            everything = call(
                replica.port, {"op": "search", "token": TOKEN, "vector": queries[0], "k": len(live) + 5}
            )
            found = {hit["id"] for hit in everything["hits"]}
            if found != live:
                index_problems.append(
                    f"{replica.name}: an exact search finds {len(found)} ids, the store {len(live)}"
                )
        identical.append(
            f"shard {shard}: items {'identical' if contents[0] == contents[1] else 'DIFFER'}, "
            f"search {'identical' if hits[0] == hits[1] else 'DIFFER'}"
        )
        if contents[0] != contents[1] or hits[0] != hits[1]:
            problems.append(identical[-1])
        problems += verify_ids({item["id"]: item for item in contents[0][0]}, ids, ledger)
    lost = [p for p in problems if p.startswith("id ")]
    checks["acknowledged_writes_present"] = {"ok": not lost, "problems": lost[:20]}
    checks["replicas_identical"] = {
        "ok": not [p for p in problems if p.startswith("shard ")],
        "shards": identical,
    }
    checks["index_agrees_with_store"] = {"ok": not index_problems, "problems": index_problems}
    checks["quiescence_markers"] = {"ok": True, "sequences": markers}
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--round-seconds", type=float, default=4.0)
    parser.add_argument("--binary")
    parser.add_argument(
        "--out", help="results file (default Benchmarks/reliability/convergence-results-<date>.json)"
    )
    arguments = parser.parse_args()
    binary = steer_binary(arguments.binary)
    body = run(binary, arguments.rounds, arguments.seed, arguments.writers, arguments.round_seconds)
    print(json.dumps(body, indent=2))
    out = (
        Path(arguments.out)
        if arguments.out
        else Path(__file__).parent / f"convergence-results-{time.strftime('%Y-%m-%d')}.json"
    )
    write_results(out, binary, body)
    raise SystemExit(0 if body.get("ok") else 1)


if __name__ == "__main__":
    main()
