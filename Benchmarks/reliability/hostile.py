"""The hostile-client suite: attacks on a live `steer serve` and on a live `steer route` over two shards,
each with a well-behaved client running beside it (docs/security.md).

Every case asserts that the attacker gets a specific error code or a closed connection within a bounded
time; the suite records, per case, the well-behaved client's latencies (its pings, searches and upserts
must all be answered), the resident memory of every process, and at the end checks that every upsert
the well-behaved client saw acknowledged is stored.

    python3 Benchmarks/reliability/hostile.py [--binary PATH] [--targets server,router] [--results FILE]

Standard library only. `Tests/reliability/test_hostile.py` runs the same cases under pytest.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    Connection,
    ConnectionBroken,
    Router,
    Server,
    results_path,
    steer_binary,
    write_results,
)

TOKEN = "hostile-admin-token-0123456789"
#: A read-only key: the well-behaved client's reads and most attacks use it (a hostile client with a
#: valid read key is the interesting attacker; one without a key is refused before anything else).
READ_KEY = "hostile-read-key-0123456789"
#: The key the router presents to the shards.
SHARD_KEY = "hostile-shard-key-0123456789"
DIMENSION = 64
ITEMS = 10_000
TAGS = [f"tag{n}" for n in range(20)]
#: Limits the targets run with: short clocks so that time-based cases finish quickly.
LINE_TIMEOUT_S = 2
WRITE_TIMEOUT_S = 3
IDLE_TIMEOUT_S = 4
MAX_CONNECTIONS = 48
MAX_RESPONSE_BYTES = 4 << 20
MAX_CONNECTION_OUTPUT_BYTES = 1 << 20
#: No process may grow past this while attacked (KiB); a debug build with 10k items uses ~200 MiB.
RSS_BOUND_KIB = 1_500_000
#: The well-behaved client's latency target (ms, p99), recorded per case; every request must be answered.
GOOD_P99_TARGET_MS = 20.0
GOOD_MAX_MS = 3000.0


def vector(seed: int) -> list[float]:
    rng = random.Random(seed)
    values = [rng.gauss(0.0, 1.0) for _ in range(DIMENSION)]
    norm = sum(v * v for v in values) ** 0.5
    return [round(v / norm, 6) for v in values]


def catalog_item(n: int) -> dict[str, Any]:
    return {
        "id": n,
        "vector": vector(n),
        "title": f"item {n}",
        "tags": [TAGS[n % len(TAGS)], TAGS[(n * 7) % len(TAGS)]],
        "attributes": {"n": n, "even": n % 2 == 0},
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# MARK: - Targets


@dataclass
class Target:
    """A running server or router with everything a case may need."""

    kind: str
    port: int
    processes: list[Server]
    metrics_port: int | None
    workdir: str
    generations_dir: str | None

    def rss_kib(self) -> dict[str, int | None]:
        return {f"{p.__class__.__name__.lower()}-{p.pid}": p.rss_kib() for p in self.processes}

    def alive(self) -> bool:
        return all(p.alive() for p in self.processes)

    def stop(self) -> None:
        for process in self.processes:
            with contextlib.suppress(Exception):
                process.kill()


def limit_flags() -> list[str]:
    return [
        "--request-line-timeout",
        str(LINE_TIMEOUT_S),
        "--write-timeout",
        str(WRITE_TIMEOUT_S),
        "--idle-timeout",
        str(IDLE_TIMEOUT_S),
        "--max-connections",
        str(MAX_CONNECTIONS),
        "--max-response-bytes",
        str(MAX_RESPONSE_BYTES),
        "--max-connection-output-bytes",
        str(MAX_CONNECTION_OUTPUT_BYTES),
    ]


def keys_file(path: Path, keys: list[tuple[str, str, str]]) -> str:
    path.write_text(json.dumps({"keys": [{"name": n, "scope": sc, "key": k} for n, sc, k in keys]}))
    return str(path)


def start_target(binary: str, kind: str) -> Target:
    workdir = tempfile.mkdtemp(prefix=f"steer-hostile-{kind}-")
    client_keys = keys_file(
        Path(workdir) / "keys.json", [("admin", "admin", TOKEN), ("reader", "read", READ_KEY)]
    )
    shard_keys = keys_file(Path(workdir) / "shard-keys.json", [("router", "admin", SHARD_KEY)])
    (Path(workdir) / "shard-key").write_text(SHARD_KEY)
    common = ["--dimension", str(DIMENSION), "--index-spec", "HNSW32"]
    processes: list[Server] = []
    try:
        if kind == "server":
            metrics = free_port()
            server = Server(
                binary,
                str(Path(workdir) / "data"),
                [*common, "--keys-file", client_keys, *limit_flags(), "--metrics-port", str(metrics)],
            )
            processes.append(server)
            target = Target(
                kind, server.port, processes, metrics, workdir, str(Path(workdir) / "data" / "generations")
            )
        else:
            shards = []
            for index in range(2):
                shard = Server(
                    binary, str(Path(workdir) / f"shard{index}"), [*common, "--keys-file", shard_keys]
                )
                processes.append(shard)
                shards += ["--shard", f"127.0.0.1:{shard.port}"]
            router = Router(
                binary,
                str(Path(workdir) / "router.log"),
                [
                    *shards,
                    "--keys-file",
                    client_keys,
                    "--shard-key-file",
                    str(Path(workdir) / "shard-key"),
                    *limit_flags(),
                ],
            )
            processes.append(router)
            target = Target(kind, router.port, processes, None, workdir, None)
        with Connection(target.port, timeout=120.0) as connection:
            for start in range(0, ITEMS, 500):
                batch = [catalog_item(n) for n in range(start, min(ITEMS, start + 500))]
                answer = connection.call({"op": "upsert", "token": TOKEN, "items": batch})
                if answer.get("ok") is not True:
                    raise RuntimeError(f"filling the {kind} failed: {answer}")
        return target
    except BaseException:
        for process in processes:
            with contextlib.suppress(Exception):
                process.kill()
        shutil.rmtree(workdir, ignore_errors=True)
        raise


# MARK: - The well-behaved client


@dataclass
class GoodClient:
    """Pings, searches and upserts in a loop on its own connection, every `period` seconds; records each
    request's latency, failures, and the ids of acknowledged upserts."""

    port: int
    period: float = 0.01
    samples: list[tuple[float, float, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        connection = Connection(self.port, timeout=GOOD_MAX_MS / 1000 * 2)
        step = 0
        try:
            while not self._stop.is_set():
                step += 1
                if step % 10 == 0:
                    ident = f"ack-{step}"
                    request = {
                        "op": "upsert",
                        "token": TOKEN,
                        "items": [{"id": ident, "vector": vector(step)}],
                    }
                    op = "upsert"
                elif step % 2 == 0:
                    request = {"op": "search", "token": READ_KEY, "vector": vector(step), "k": 10}
                    op = "search"
                else:
                    request = {"op": "ping"}
                    op = "ping"
                started = time.monotonic()
                try:
                    answer = connection.call(request)
                except (OSError, ConnectionBroken) as error:
                    with self._lock:
                        self.failures.append(f"{op}: {error}")
                    connection.close()
                    connection = Connection(self.port, timeout=GOOD_MAX_MS / 1000 * 2)
                    continue
                elapsed = (time.monotonic() - started) * 1000
                with self._lock:
                    self.samples.append((started, elapsed, op))
                    if answer.get("ok") is not True:
                        self.failures.append(f"{op}: {answer}")
                    elif op == "upsert":
                        self.acknowledged.append(ident)
                self._stop.wait(self.period)
        finally:
            connection.close()

    def window(self, start: float, end: float) -> dict[str, Any]:
        with self._lock:
            latencies = sorted(ms for at, ms, _ in self.samples if start <= at <= end)
            failures = list(self.failures)
        if not latencies:
            return {"requests": 0, "failures": len(failures)}

        def quantile(q: float) -> float:
            return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 3)

        return {
            "requests": len(latencies),
            "p50_ms": quantile(0.5),
            "p99_ms": quantile(0.99),
            "max_ms": round(latencies[-1], 3),
            "failures": len(failures),
        }


# MARK: - Attack helpers


class Attack:
    """One attacker connection with raw access."""

    def __init__(self, port: int, timeout: float = 15.0) -> None:
        self.connection = Connection(port, timeout=timeout)
        self.sock = self.connection.sock

    def __enter__(self) -> Attack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.connection.close()

    def send(self, payload: bytes) -> None:
        self.connection.send(payload)

    def line(self, request: dict[str, Any]) -> None:
        self.send(json.dumps(with_key(request), separators=(",", ":")).encode() + b"\n")

    def read(self) -> dict[str, Any]:
        return self.connection.read()

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        """Sends `request` with the read key unless it names a token (use `"token": None` for none)."""
        return self.connection.call(with_key(request))

    def peer_closed_within(self, seconds: float) -> bool:
        """Waits, reading nothing, until the server has closed its side (the kernel's TCP state is
        CLOSE_WAIT or later); True if that happened within `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                state = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
            except OSError:
                return True
            if state != 1:  # TCP_ESTABLISHED
                return True
            time.sleep(0.1)
        return False

    def closed_within(self, seconds: float) -> bool:
        """Reads (and drops) whatever comes until the server closes; True if it closed within `seconds`."""
        deadline = time.monotonic() + seconds
        self.sock.settimeout(0.25)
        while time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError:
                return True
            if not chunk:
                return True
        return False


def with_key(request: dict[str, Any]) -> dict[str, Any]:
    if "token" not in request:
        return {**request, "token": READ_KEY}
    if request["token"] is None:
        return {k: v for k, v in request.items() if k != "token"}
    return request


def code(answer: dict[str, Any]) -> str:
    return "ok" if answer.get("ok") is True else str(answer.get("error", {}).get("code"))


@dataclass
class Outcome:
    expected: str
    got: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.got in self.expected.split("|")


def expect(answer: dict[str, Any], expected: str) -> Outcome:
    return Outcome(expected, code(answer), str(answer.get("error", {}).get("message", ""))[:160])


# MARK: - The cases


def wide_object_40k_keys(t: Target) -> Outcome:
    line = b'{"op":"ping",' + b",".join(b'"k%d":1' % n for n in range(40_000)) + b"}\n"
    with Attack(t.port) as a:
        a.send(line)
        return expect(a.read(), "parse_error")


def many_wide_objects(t: Target) -> Outcome:
    body = b"{" + b",".join(b'"f%d":1' % n for n in range(1000)) + b"}"
    line = b'{"op":"ping","x":[' + b",".join([body] * 80) + b"]}\n"
    with Attack(t.port) as a:
        a.send(line)
        return expect(a.read(), "invalid_request")


def deep_nesting(t: Target) -> Outcome:
    with Attack(t.port) as a:
        a.send(b'{"op":"ping","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}\n")
        return expect(a.read(), "parse_error")


def line_over_limit(t: Target) -> Outcome:
    with Attack(t.port) as a:
        a.send(b'{"op":"ping","x":"' + b"a" * (2 << 20) + b'"}\n{"id":2,"op":"ping"}\n')
        first = a.read()
        second = a.read()
        return Outcome("too_large", code(first) if code(second) == "ok" else "second request lost")


def endless_line_without_newline(t: Target) -> Outcome:
    with Attack(t.port) as a:
        a.send(b"x" * (4 << 20))
        first = a.read()
        a.send(b'\n{"id":2,"op":"ping"}\n')
        return Outcome("too_large", code(first) if code(a.read()) == "ok" else "connection unusable")


def dribble(a: Attack, byte: bytes, seconds: float) -> Outcome:
    """Sends `byte` about every 0.3 s until the server closes the connection or `seconds` pass."""
    started = time.monotonic()
    a.sock.settimeout(0.2)
    while time.monotonic() - started < seconds:
        try:
            a.sock.sendall(byte)
            if a.sock.recv(1 << 16) == b"":
                return Outcome("closed", "closed", f"after {time.monotonic() - started:.1f} s")
        except TimeoutError:
            continue
        except OSError:
            return Outcome("closed", "closed", f"after {time.monotonic() - started:.1f} s")
        time.sleep(0.3)
    return Outcome("closed", "still open")


def slowloris_partial_line(t: Target) -> Outcome:
    with Attack(t.port) as a:
        a.send(b'{"op":"pi')
        return dribble(a, b" ", LINE_TIMEOUT_S + 6)


def blank_line_keepalive(t: Target) -> Outcome:
    with Attack(t.port) as a:
        return dribble(a, b"\n", IDLE_TIMEOUT_S + 6)


def unread_get_flood(t: Target) -> Outcome:
    """Pipelines `get` of many distinct items (with their vectors) and never reads."""
    request = (
        json.dumps(with_key({"op": "get", "ids": list(range(1000)), "timeout_ms": 30_000})).encode() + b"\n"
    )
    with Attack(t.port) as a:
        a.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        a.sock.settimeout(0.5)
        sent = 0
        with contextlib.suppress(OSError):
            for _ in range(2000):
                a.sock.sendall(request)
                sent += 1
        closed = a.peer_closed_within(WRITE_TIMEOUT_S + 25)
        return Outcome("closed", "closed" if closed else "still open", f"{sent} requests sent")


def unread_search_flood(t: Target) -> Outcome:
    request = (
        json.dumps(
            with_key(
                {"op": "search", "vectors": [vector(n) for n in range(64)], "k": 100, "timeout_ms": 30_000}
            )
        ).encode()
        + b"\n"
    )
    with Attack(t.port) as a:
        a.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        a.sock.settimeout(0.5)
        sent = 0
        with contextlib.suppress(OSError):
            for _ in range(300):
                a.sock.sendall(request)
                sent += 1
        closed = a.peer_closed_within(WRITE_TIMEOUT_S + 25)
        return Outcome("closed", "closed" if closed else "still open", f"{sent} requests sent")


def get_repeated_id(t: Target) -> Outcome:
    with Attack(t.port) as a:
        answer = a.call({"op": "get", "ids": [7] * 1024})
        items = len(answer.get("items", []))
        return Outcome("ok", code(answer) if items == 1 else f"{items} items for one id")


def search_cost_over_limit(t: Target) -> Outcome:
    with Attack(t.port) as a:
        return expect(
            a.call({"op": "search", "vectors": [vector(n) for n in range(1024)], "k": 1000}), "too_large"
        )


def huge_ef_search(t: Target) -> Outcome:
    with Attack(t.port) as a:
        return expect(
            a.call({"op": "search", "vector": vector(1), "k": 10, "ef_search": 1 << 20}), "too_large"
        )


def huge_nprobe(t: Target) -> Outcome:
    with Attack(t.port) as a:
        return expect(a.call({"op": "search", "vector": vector(1), "k": 10, "nprobe": 1 << 20}), "too_large")


def k_over_limit(t: Target) -> Outcome:
    with Attack(t.port) as a:
        return expect(a.call({"op": "search", "vector": vector(1), "k": 100_000}), "too_large")


def filter_same_tag_1024_times(t: Target) -> Outcome:
    with Attack(t.port) as a:
        answer = a.call(
            {"op": "search", "vector": vector(1), "k": 10, "filter": {"tags_any": ["tag1"] * 1024}}
        )
        hits = answer.get("hits", [])
        good = all("tag1" in hit.get("tags", []) for hit in hits) and len(hits) == 10
        return Outcome("ok", code(answer) if good else f"wrong hits {hits[:2]}")


def filter_many_distinct_tags(t: Target) -> Outcome:
    with Attack(t.port) as a:
        tags = [f"t{n}" for n in range(1024)]
        return expect(
            a.call({"op": "search", "vector": vector(1), "k": 10, "filter": {"tags_none": tags}}), "too_large"
        )


def prompt_too_long(t: Target) -> Outcome:
    with Attack(t.port) as a:
        return expect(
            a.call({"op": "recommend", "history": [1, 2], "prompt": "comedy " * 20_000, "k": 5}), "too_large"
        )


def prompt_many_clauses(t: Target) -> Outcome:
    with Attack(t.port) as a:
        answer = a.call({"op": "recommend", "history": [1, 2], "prompt": "a, " * 1300, "k": 5})
        return expect(answer, "ok")


def history_too_long(t: Target) -> Outcome:
    with Attack(t.port) as a:
        return expect(a.call({"op": "recommend", "history": list(range(5000)), "k": 5}), "too_large")


def batch_too_many_vectors(t: Target) -> Outcome:
    with Attack(t.port) as a:
        answer = a.call({"op": "search", "vectors": [vector(1)] * 2000, "k": 1})
        return expect(answer, "too_large")


def tiny_deadline(t: Target) -> Outcome:
    with Attack(t.port) as a:
        request = {"op": "search", "vectors": [vector(n) for n in range(256)], "k": 1000, "timeout_ms": 1}
        return expect(a.call(request), "deadline_exceeded")


def timeout_over_limit(t: Target) -> Outcome:
    with Attack(t.port) as a:
        return expect(a.call({"op": "ping", "timeout_ms": 10**9}), "too_large")


def pipelined_heavy_queries(t: Target) -> Outcome:
    """16 pipelined heavy searches (32 queries, k 1000, ef_search 2048 each): each is answered or fails
    on its deadline, while the well-behaved client keeps its turn on the workers."""
    request = {
        "op": "search",
        "vectors": [vector(n) for n in range(32)],
        "k": 1000,
        "ef_search": 2048,
        "timeout_ms": 4000,
    }
    payload = (json.dumps(with_key(request)) + "\n").encode() * 16
    with Attack(t.port, timeout=120.0) as a:
        a.send(payload)
        codes = [code(a.read()) for _ in range(16)]
    wrong = [c for c in codes if c not in ("ok", "deadline_exceeded", "too_large")]
    return Outcome(
        "ok",
        "ok" if not wrong else ",".join(sorted(set(wrong))),
        f"{codes.count('ok')} ok, "
        f"{codes.count('deadline_exceeded')} deadline_exceeded, {codes.count('too_large')} too_large",
    )


def answer_over_response_limit(t: Target) -> Outcome:
    """80 items with 60 kB attributes: `get` of all of them is over the 4 MiB answer limit."""
    blob = {"text": "x" * 60_000}
    with Attack(t.port) as a:
        for start in range(0, 80, 12):
            items = [
                {"id": f"big-{n}", "vector": vector(n), "attributes": blob}
                for n in range(start, min(80, start + 12))
            ]
            answer = a.call({"op": "upsert", "token": TOKEN, "items": items})
            if code(answer) != "ok":
                return Outcome("too_large", f"setup upsert {code(answer)}")
        small = a.call({"op": "get", "ids": [f"big-{n}" for n in range(10)]})
        if code(small) != "ok":
            return Outcome("too_large", f"get of 10 gave {code(small)}")
        return expect(a.call({"op": "get", "ids": [f"big-{n}" for n in range(80)]}), "too_large")


def admin_token_with_junk_suffix(t: Target) -> Outcome:
    with Attack(t.port) as a:
        request = {"op": "delete", "token": TOKEN + "\u0001" * 256, "ids": [1]}
        return expect(a.call(request), "unauthorized")


def admin_without_token(t: Target) -> Outcome:
    with Attack(t.port) as a:
        return expect(a.call({"op": "delete", "token": None, "ids": [1]}), "unauthorized")


def read_key_cannot_write(t: Target) -> Outcome:
    with Attack(t.port) as a:
        first = code(a.call({"op": "upsert", "items": [{"id": "x-read", "vector": vector(1)}]}))
        second = code(a.call({"op": "swap", "generation": "g1"}))
    return Outcome(
        "unauthorized", first if second == "unauthorized" else f"swap with a read key gave {second}"
    )


def read_without_key(t: Target) -> Outcome:
    with Attack(t.port) as a:
        return expect(a.call({"op": "search", "token": None, "vector": vector(1), "k": 3}), "unauthorized")


def admin_token_prefix(t: Target) -> Outcome:
    with Attack(t.port) as a:
        return expect(a.call({"op": "delete", "token": TOKEN[:-1], "ids": [1]}), "unauthorized")


def swap_path_traversal(t: Target) -> Outcome:
    with Attack(t.port) as a:
        return expect(
            a.call({"op": "swap", "token": TOKEN, "generation": "../../../../etc"}),
            "invalid_request|not_found|unauthorized",
        )


def swap_absolute_path(t: Target) -> Outcome:
    outside = tempfile.mkdtemp(prefix="steer-hostile-outside-")
    try:
        with Attack(t.port) as a:
            return expect(
                a.call({"op": "swap", "token": TOKEN, "generation": outside}),
                "invalid_request|not_found|unauthorized",
            )
    finally:
        shutil.rmtree(outside, ignore_errors=True)


def swap_checkpoint_outside_root(t: Target) -> Outcome:
    with Attack(t.port) as a:
        request = {"op": "swap", "token": TOKEN, "generation": "newest", "checkpoint": "/etc"}
        return expect(a.call(request), "invalid_request|not_found|unauthorized")


def huge_finite_values(t: Target) -> Outcome:
    with Attack(t.port) as a:
        big = [3.0e38] * DIMENSION
        answer = a.call({"op": "search", "vector": big, "k": 3})
        if code(answer) == "ok":
            scores = [hit.get("score") for hit in answer.get("hits", [])]
            return Outcome("invalid_request", "ok with scores " + str(scores[:3]))
        return expect(answer, "invalid_request")


def nan_in_vector(t: Target) -> Outcome:
    with Attack(t.port) as a:
        a.send(
            b'{"op":"search","token":"'
            + READ_KEY.encode()
            + b'","vector":[NaN'
            + b",0" * (DIMENSION - 1)
            + b'],"k":3}\n'
        )
        return expect(a.read(), "invalid_request")


def invalid_utf8(t: Target) -> Outcome:
    with Attack(t.port) as a:
        a.send(b'{"op":"get","token":"' + READ_KEY.encode() + b'","ids":["\xc3\x28"]}\n')
        return expect(a.read(), "parse_error")


def binary_garbage(t: Target) -> Outcome:
    rng = random.Random(5)
    with Attack(t.port) as a:
        for _ in range(50):
            junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))).replace(b"\n", b"")
            a.send(junk + b"\n")
        codes = {code(a.read()) for _ in range(50)}
        a.line({"id": 9, "op": "ping"})
        last = a.read()
    return Outcome(
        "parse_error",
        "parse_error" if codes <= {"parse_error", "invalid_request"} and code(last) == "ok" else str(codes),
    )


def nfc_nfd_ids(t: Target) -> Outcome:
    nfc = unicodedata.normalize("NFC", "café-hostile")
    nfd = unicodedata.normalize("NFD", "café-hostile")
    with Attack(t.port) as a:
        a.call({"op": "upsert", "token": TOKEN, "items": [{"id": nfc, "vector": vector(1), "title": "nfc"}]})
        a.call({"op": "upsert", "token": TOKEN, "items": [{"id": nfd, "vector": vector(2), "title": "nfd"}]})
        both = a.call({"op": "get", "ids": [nfc, nfd]})
        titles = sorted(item.get("title", "") for item in both.get("items", []))
        a.call({"op": "delete", "token": TOKEN, "ids": [nfc]})
        after = a.call({"op": "get", "ids": [nfd]})
        remaining = len(after.get("items", []))
    # One item everywhere: the second upsert replaced the first and deleting one form deletes it.
    # Two items everywhere: both titles stored and the NFD one survives the NFC delete.
    one = titles == ["nfd"] and remaining == 0
    two = titles == ["nfc", "nfd"] and remaining == 1
    return Outcome("consistent", "consistent" if one or two else f"titles {titles}, remaining {remaining}")


def connection_flood(t: Target) -> Outcome:
    sockets: list[socket.socket] = []
    refused = 0
    try:
        for _ in range(MAX_CONNECTIONS + 16):
            s = socket.create_connection(("127.0.0.1", t.port), timeout=5)
            sockets.append(s)
        time.sleep(0.5)
        for s in sockets:
            s.settimeout(0.05)
            with contextlib.suppress(OSError):
                data = s.recv(4096)
                if b"unavailable" in data:
                    refused += 1
        return Outcome("unavailable", "unavailable" if refused >= 16 else f"{refused} refused")
    finally:
        for s in sockets:
            s.close()
        time.sleep(0.5)


def tls_handshake_on_plain_port(t: Target) -> Outcome:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", t.port), timeout=5) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="x"):
                return Outcome("refused", "handshake succeeded")
        except (ssl.SSLError, OSError):
            return Outcome("refused", "refused")


def metrics_port_flood(t: Target) -> Outcome:
    if t.metrics_port is None:
        return Outcome("n/a", "n/a", "the router serves no metrics port")
    sockets = []
    try:
        for _ in range(40):
            sockets.append(socket.create_connection(("127.0.0.1", t.metrics_port), timeout=5))
        time.sleep(0.5)
        closed = 0
        for s in sockets:
            s.settimeout(0.05)
            try:
                if s.recv(16) == b"":
                    closed += 1
            except TimeoutError:
                pass
            except OSError:
                closed += 1
        return Outcome("closed", "closed" if closed >= 20 else f"only {closed} of 40 closed")
    finally:
        for s in sockets:
            s.close()


def half_close_with_pipeline(t: Target) -> Outcome:
    with Attack(t.port) as a:
        a.send(
            b"".join(
                json.dumps({"id": n, "op": "stats", "token": READ_KEY}).encode() + b"\n" for n in range(200)
            )
        )
        a.sock.shutdown(socket.SHUT_WR)
        ids = [a.read().get("id") for _ in range(200)]
        closed = a.closed_within(5)
    return Outcome(
        "ok",
        "ok"
        if ids == list(range(200)) and closed
        else f"ids in order {ids == list(range(200))}, closed {closed}",
    )


def write_with_tiny_deadline(t: Target) -> Outcome:
    """A write is never answered with an error once durable: ok means stored, deadline_exceeded means not."""
    with Attack(t.port) as a:
        results = []
        for n in range(20):
            ident = f"deadline-write-{n}"
            answer = a.call(
                {
                    "op": "upsert",
                    "token": TOKEN,
                    "timeout_ms": 1,
                    "items": [{"id": ident, "vector": vector(n)}],
                }
            )
            stored = len(a.call({"op": "get", "ids": [ident]}).get("items", [])) == 1
            results.append((code(answer), stored))
    wrong = [r for r in results if (r[0] == "ok") != r[1] or r[0] not in ("ok", "deadline_exceeded")]
    return Outcome("ok", "ok" if not wrong else f"inconsistent {wrong[:3]}")


def unknown_op_and_fields(t: Target) -> Outcome:
    with Attack(t.port) as a:
        first = code(a.call({"op": "drop_everything"}))
        second = code(a.call({"op": "search", "vector": vector(1), "k": 3, "sneaky": 1}))
    return Outcome("unknown_op", first if second == "invalid_request" else f"extra field gave {second}")


def dimension_mismatch(t: Target) -> Outcome:
    with Attack(t.port) as a:
        return expect(
            a.call({"op": "search", "vector": [1.0] * (DIMENSION + 1), "k": 3}), "dimension_mismatch"
        )


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[Target], Outcome]
    #: The attacker's outcome must be known within this many seconds.
    bound_s: float


CASES: list[Case] = [
    Case("wide_object_40k_keys", wide_object_40k_keys, 5),
    Case("many_wide_objects", many_wide_objects, 5),
    Case("deep_nesting", deep_nesting, 5),
    Case("line_over_limit", line_over_limit, 5),
    Case("endless_line_without_newline", endless_line_without_newline, 5),
    Case("slowloris_partial_line", slowloris_partial_line, LINE_TIMEOUT_S + 6),
    Case("blank_line_keepalive", blank_line_keepalive, IDLE_TIMEOUT_S + 6),
    Case("unread_get_flood", unread_get_flood, WRITE_TIMEOUT_S + 30),
    Case("unread_search_flood", unread_search_flood, WRITE_TIMEOUT_S + 30),
    Case("get_repeated_id", get_repeated_id, 5),
    Case("search_cost_over_limit", search_cost_over_limit, 5),
    Case("huge_ef_search", huge_ef_search, 5),
    Case("huge_nprobe", huge_nprobe, 5),
    Case("k_over_limit", k_over_limit, 5),
    Case("filter_same_tag_1024_times", filter_same_tag_1024_times, 5),
    Case("filter_many_distinct_tags", filter_many_distinct_tags, 5),
    Case("prompt_too_long", prompt_too_long, 5),
    Case("prompt_many_clauses", prompt_many_clauses, 5),
    Case("history_too_long", history_too_long, 5),
    Case("batch_too_many_vectors", batch_too_many_vectors, 5),
    Case("tiny_deadline", tiny_deadline, 5),
    Case("timeout_over_limit", timeout_over_limit, 5),
    Case("pipelined_heavy_queries", pipelined_heavy_queries, 120),
    Case("answer_over_response_limit", answer_over_response_limit, 20),
    Case("admin_token_with_junk_suffix", admin_token_with_junk_suffix, 5),
    Case("admin_without_token", admin_without_token, 5),
    Case("read_key_cannot_write", read_key_cannot_write, 5),
    Case("read_without_key", read_without_key, 5),
    Case("admin_token_prefix", admin_token_prefix, 5),
    Case("swap_path_traversal", swap_path_traversal, 10),
    Case("swap_absolute_path", swap_absolute_path, 10),
    Case("swap_checkpoint_outside_root", swap_checkpoint_outside_root, 10),
    Case("huge_finite_values", huge_finite_values, 5),
    Case("nan_in_vector", nan_in_vector, 5),
    Case("invalid_utf8", invalid_utf8, 5),
    Case("binary_garbage", binary_garbage, 10),
    Case("nfc_nfd_ids", nfc_nfd_ids, 10),
    Case("connection_flood", connection_flood, 15),
    Case("tls_handshake_on_plain_port", tls_handshake_on_plain_port, 10),
    Case("metrics_port_flood", metrics_port_flood, 10),
    Case("half_close_with_pipeline", half_close_with_pipeline, 10),
    Case("write_with_tiny_deadline", write_with_tiny_deadline, 20),
    Case("unknown_op_and_fields", unknown_op_and_fields, 5),
    Case("dimension_mismatch", dimension_mismatch, 5),
]


# MARK: - Running


@dataclass
class CaseResult:
    target: str
    case: str
    expected: str
    got: str
    detail: str
    seconds: float
    bound_s: float
    good_client: dict[str, Any]
    rss_kib: dict[str, int | None]
    alive: bool

    @property
    def problems(self) -> list[str]:
        found = []
        if not Outcome(self.expected, self.got).passed and self.expected != "n/a":
            found.append(f"attacker got {self.got!r}, expected {self.expected!r} ({self.detail})")
        if self.seconds > self.bound_s:
            found.append(f"took {self.seconds:.1f} s, bound {self.bound_s} s")
        if self.good_client.get("failures", 0):
            samples = self.good_client.get("failure_samples")
            found.append(f"well-behaved client had {self.good_client['failures']} failures: {samples}")
        if self.good_client.get("max_ms", 0) > GOOD_MAX_MS:
            found.append(f"well-behaved client waited {self.good_client['max_ms']} ms")
        if not self.alive:
            found.append("a process died")
        for name, rss in self.rss_kib.items():
            if rss is not None and rss > RSS_BOUND_KIB:
                found.append(f"{name} RSS {rss} KiB over {RSS_BOUND_KIB}")
        return found


@contextlib.contextmanager
def attacked(binary: str, kind: str) -> Iterator[tuple[Target, GoodClient]]:
    target = start_target(binary, kind)
    good = GoodClient(target.port)
    good.start()
    try:
        yield target, good
    finally:
        good.stop()
        target.stop()
        shutil.rmtree(target.workdir, ignore_errors=True)


def run_case(case: Case, target: Target, good: GoodClient) -> CaseResult:
    failures_before = len(good.failures)
    started = time.monotonic()
    try:
        outcome = case.run(target)
    except (OSError, ConnectionBroken) as error:
        outcome = Outcome("?", f"attacker error {type(error).__name__}: {error}")
    seconds = time.monotonic() - started
    time.sleep(0.2)  # let the well-behaved client finish the request in flight
    window = good.window(started, time.monotonic())
    window["failures"] = len(good.failures) - failures_before
    window["failure_samples"] = [f[:200] for f in good.failures[failures_before : failures_before + 3]]
    window["p99_target_ms"] = GOOD_P99_TARGET_MS
    return CaseResult(
        target.kind,
        case.name,
        outcome.expected,
        outcome.got,
        outcome.detail,
        round(seconds, 3),
        case.bound_s,
        window,
        target.rss_kib(),
        target.alive(),
    )


def acknowledged_writes_present(target: Target, good: GoodClient) -> tuple[int, list[str]]:
    with Connection(target.port, timeout=60) as connection:
        ids = list(good.acknowledged)
        missing: list[str] = []
        for start in range(0, len(ids), 500):
            answer = connection.call({"op": "get", "token": READ_KEY, "ids": ids[start : start + 500]})
            missing += [str(m) for m in answer.get("missing", [])]
    return len(ids), missing


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--binary")
    parser.add_argument("--targets", default="server,router")
    parser.add_argument("--results")
    parser.add_argument("--cases", help="comma-separated case names (default all)")
    args = parser.parse_args()
    binary = steer_binary(args.binary)
    chosen = [c for c in CASES if not args.cases or c.name in args.cases.split(",")]
    body: dict[str, Any] = {
        "items": ITEMS,
        "dimension": DIMENSION,
        "rss_bound_kib": RSS_BOUND_KIB,
        "good_p99_target_ms": GOOD_P99_TARGET_MS,
        "load_average_start": os.getloadavg(),
        "targets": {},
    }
    failed = 0
    for kind in args.targets.split(","):
        with attacked(binary, kind) as (target, good):
            rows = []
            for case in chosen:
                result = run_case(case, target, good)
                problems = result.problems
                failed += bool(problems)
                print(
                    f"{kind:6} {case.name:32} {result.got:20} {result.seconds:6.2f} s  good p99 "
                    f"{result.good_client.get('p99_ms')} ms  {'; '.join(problems) or 'ok'}",
                    flush=True,
                )
                rows.append({**result.__dict__, "problems": problems})
            count, missing = acknowledged_writes_present(target, good)
            failed += bool(missing)
            body["targets"][kind] = {"cases": rows, "acknowledged_writes": count, "missing_writes": missing}
    body["load_average_end"] = os.getloadavg()
    body["passed"] = failed == 0
    path = results_path("hostile", args.results)
    write_results(path, binary, body)
    print(f"{'all cases passed' if failed == 0 else f'{failed} problems'}; results in {path}")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
