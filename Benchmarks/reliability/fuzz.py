#!/usr/bin/env python3
"""Protocol fuzzer for `steer serve` (docs/reliability.md).

For a fixed budget (seconds and/or cases) sends one generated case at a time to the built server:
byte-level mutations of valid requests, value-level mutations (huge numbers, long strings, lone
surrogates, wrong types, unknown and duplicate keys), random bytes, deep nesting, invalid UTF-8, lines over
the limit, partial lines (completed late or abandoned), byte-at-a-time clients, pipelined floods that never
read, and many connections opened and abandoned. After every case:

- the case's own connection still answers a `ping` (when the case leaves it usable), and every line the
  server sent is a JSON object with `ok` and, on failure, a documented error code other than `internal`;
- a fresh connection answers `ping` within `--hang-timeout` seconds;
- the process is alive; its resident memory (VmRSS from /proc) is sampled.

A crash is recorded with the case that caused it (the server is restarted and fuzzing goes on); a hang, a
closed connection, an unreadable or `internal` answer is a violation. Resident memory must stay under
`--max-rss-mib`; its growth after warm-up is reported.

    python3 Benchmarks/reliability/fuzz.py .build/release/steer --seconds 300

Writes Benchmarks/reliability/fuzz-results-<date>.json (or `--results`); exits 1 on any violation.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import select
import shutil
import socket
import struct
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
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

if hasattr(sys, "set_int_max_str_digits"):
    sys.set_int_max_str_digits(0)  # huge integers are part of the inputs

DIMENSION = 4
ERROR_CODES = {
    "parse_error",
    "invalid_request",
    "unknown_op",
    "not_found",
    "dimension_mismatch",
    "too_large",
    "unauthorized",
    "unavailable",
    "corrupt",
    "io_error",
}
MAX_VIOLATIONS_KEPT = 200


class CaseFailure(Exception):
    """A check failed inside a case."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass
class Context:
    port: int
    rng: random.Random
    max_line_bytes: int
    hang_timeout: float
    scale: float
    max_connections: int  # 1.0 full run; smaller shrinks floods and connection counts
    responses: Counter[str] = field(default_factory=Counter)
    sample: bytes = b""  # the bytes the current case sent first (kept with a violation)


def vector(rng: random.Random) -> list[float]:
    return [round(rng.uniform(-1, 1), 4) for _ in range(DIMENSION)]


def valid_requests(rng: random.Random) -> list[dict[str, Any]]:
    """One of each valid request shape (the seeds of the mutations)."""
    ids: list[Any] = [rng.randint(0, 40), f"s{rng.randint(0, 40)}"]
    items = [
        {
            "id": ident,
            "vector": vector(rng),
            "tags": ["a", "b"][: rng.randint(0, 2)],
            "title": "t",
            "attributes": {"n": 1},
        }
        for ident in ids
    ]
    b64 = base64.b64encode(struct.pack(f"<{DIMENSION}f", *vector(rng))).decode()
    return [
        {"id": 1, "op": "ping"},
        {"id": "s", "op": "stats"},
        {"id": 2, "op": "upsert", "token": DEFAULT_TOKEN, "items": items},
        {
            "id": 3,
            "op": "upsert",
            "token": DEFAULT_TOKEN,
            "items": [{"id": "b", "vector_b64": b64, "tags": ["c"]}],
        },
        {"id": 4, "op": "delete", "token": DEFAULT_TOKEN, "ids": [ids[0]]},
        {"id": 5, "op": "get", "ids": ids},
        {"id": 6, "op": "search", "vector": vector(rng), "k": 5},
        {
            "id": 7,
            "op": "search",
            "vector_b64": b64,
            "k": 3,
            "filter": {"tags_any": ["a"], "tags_none": ["b"]},
        },
        {"id": 8, "op": "search", "vectors": [vector(rng), b64], "k": 2, "nprobe": 4, "ef_search": 16},
        {"id": 9, "op": "recommend", "history": ids, "prompt": "funny", "k": 3, "constraints": "hybrid"},
        {"id": 10, "op": "encode", "history": ids, "exclude_history": False},
        {"id": 11, "op": "swap", "token": DEFAULT_TOKEN, "generation": "g1"},
    ]


def encode(request: Any) -> bytes:
    return json.dumps(request, separators=(",", ":")).encode()


def interesting(rng: random.Random, scale: float) -> Any:
    choices: list[Callable[[], Any]] = [
        lambda: None,
        lambda: True,
        lambda: 0,
        lambda: -1,
        lambda: 2**31,
        lambda: 2**63,
        lambda: 2**64 + 1,
        lambda: -(2**63) - 1,
        lambda: 10 ** rng.randint(20, 5000),
        lambda: 1e308,
        lambda: 5e-324,
        lambda: 3.5e38,
        lambda: float("nan"),
        lambda: float("-inf"),
        lambda: "",
        lambda: "x" * rng.randint(100, int(200_000 * scale) + 101),
        lambda: '\u0000\u001f"\\',
        lambda: "\ud800",
        lambda: "\U0001f600" * 200,
        lambda: [],
        lambda: {},
        lambda: [[[[]]]],
        lambda: [1.5] * rng.randint(1, 5000),
        lambda: [f"t{n}" for n in range(rng.randint(1, 2000))],
        lambda: {"tags_any": [], "tags_none": [None]},
        lambda: rng.choice(
            ["ping", "upsert", "search", "get", "delete", "stats", "swap", "recommend", "encode"]
        ),
    ]
    return rng.choice(choices)()


def mutate_value(value: Any, rng: random.Random, scale: float) -> Any:
    """Replaces, removes or adds one node somewhere in a JSON tree."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(list(value))
        action = rng.random()
        copy = dict(value)
        if action < 0.15:
            del copy[key]
        elif action < 0.3:
            copy[rng.choice(["extra", "K", "op ", "\u00e9", "vector", "k", "token"])] = interesting(
                rng, scale
            )
        else:
            copy[key] = mutate_value(value[key], rng, scale)
        return copy
    if isinstance(value, list) and value and rng.random() < 0.8:
        elements = list(value)
        index = rng.randrange(len(elements))
        elements[index] = mutate_value(elements[index], rng, scale)
        return elements
    return interesting(rng, scale)


TOKENS = [
    b'"',
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\x00",
    b"\xff",
    b"\xc3",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"1e999",
    b"-",
    b".",
    b"\\u",
    b"\\ud800",
    b"null",
    b"\r",
    b"\t",
    b"\n",
    b"\xe2\x82",
]


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if not buffer:
            buffer += rng.choice(TOKENS)
            continue
        position = rng.randrange(len(buffer) + 1)
        action = rng.random()
        if action < 0.25 and position < len(buffer):
            buffer[position] ^= 1 << rng.randrange(8)
        elif action < 0.5:
            buffer[position:position] = rng.choice(TOKENS)
        elif action < 0.65:
            del buffer[position : position + rng.randint(1, 16)]
        elif action < 0.8:
            end = min(len(buffer), position + rng.randint(1, 32))
            buffer[position:position] = buffer[position:end] * rng.randint(1, 4)
        elif action < 0.9:
            buffer[position:position] = bytes([rng.randrange(256)])
        else:
            del buffer[position:]
    return bytes(buffer)


def check_line(context: Context, line: bytes) -> dict[str, Any]:
    try:
        response = json.loads(line)
    except ValueError as error:
        raise CaseFailure("unreadable_response", f"{line[:300]!r}: {error}") from error
    if not isinstance(response, dict) or not isinstance(response.get("ok"), bool):
        raise CaseFailure("malformed_response", repr(line[:300]))
    if response["ok"] is False:
        failure = response.get("error")
        code = failure.get("code") if isinstance(failure, dict) else None
        if code not in ERROR_CODES:
            raise CaseFailure(
                "internal_error" if code == "internal" else "unknown_error_code", repr(line[:500])
            )
        context.responses[str(code)] += 1
    else:
        context.responses["ok"] += 1
    return response


def ping_after(context: Context, connection: Connection, tag: str, max_lines: int = 100_000) -> int:
    """Sends a ping with a unique id, reads and checks lines up to its answer; returns the count before it."""
    ident = f"fuzz-ping-{tag}"
    connection.sock.settimeout(context.hang_timeout)
    try:
        connection.send(encode({"id": ident, "op": "ping"}) + b"\n")
        for count in range(max_lines):
            response = check_line(context, connection.read_line())
            if response.get("id") == ident:
                if response.get("ok") is not True:
                    raise CaseFailure("ping_failed", json.dumps(response)[:300])
                return count
    except TimeoutError:
        raise CaseFailure(
            "hang", f"no answer to a ping within {context.hang_timeout} s on the case's connection"
        ) from None
    except ConnectionBroken as error:
        raise CaseFailure("connection_closed", str(error)) from None
    except OSError as error:
        raise CaseFailure("connection_error", str(error)) from None
    raise CaseFailure("ping_lost", f"no ping answer among {max_lines} lines")


def fresh_ping(context: Context) -> None:
    try:
        with Connection(context.port, timeout=context.hang_timeout) as connection:
            ping_after(context, connection, "fresh")
    except CaseFailure as failure:
        raise CaseFailure("fresh_" + failure.kind, failure.detail) from None
    except OSError as error:
        raise CaseFailure("fresh_connect_failed", str(error)) from None


def send_lines(context: Context, payload: bytes) -> None:
    """Sends `payload` (newline appended) on a new connection, then checks the same connection's ping."""
    context.sample = payload
    with Connection(context.port, timeout=context.hang_timeout) as connection:
        try:
            connection.send(payload if payload.endswith(b"\n") else payload + b"\n")
        except (ConnectionBroken, OSError) as error:
            raise CaseFailure("connection_closed", f"while sending: {error}") from None
        ping_after(context, connection, str(context.rng.randrange(10**9)))


# -- cases --------------------------------------------------------------------------------------------


def case_byte_mutation(context: Context) -> None:
    seed = context.rng.choice(valid_requests(context.rng))
    send_lines(context, mutate_bytes(encode(seed), context.rng))


def case_value_mutation(context: Context) -> None:
    request = context.rng.choice(valid_requests(context.rng))
    for _ in range(context.rng.randint(1, 3)):
        request = mutate_value(request, context.rng, context.scale)
    text = json.dumps(request, separators=(",", ":"), allow_nan=True, ensure_ascii=context.rng.random() < 0.5)
    payload = text.encode("utf-8", "surrogatepass")
    if context.rng.random() < 0.2 and payload.startswith(b"{"):
        payload = b'{"op":"ping",' + payload[1:]  # a duplicate key (or an op where one is expected)
    send_lines(context, payload)


def case_random_bytes(context: Context) -> None:
    length = context.rng.choice([1, 2, 7, 64, 1000, 4096, 65536])
    send_lines(context, context.rng.randbytes(context.rng.randint(0, length)).replace(b"\n", b" "))


def case_deep_nesting(context: Context) -> None:
    depth = context.rng.choice([63, 64, 65, 1000, 100_000, context.max_line_bytes - 20])
    opener, closer = context.rng.choice(
        [(b"[", b"]"), (b'{"a":', b"}"), (b'{"op":"search","vector":[', b"]")]
    )
    payload = opener * max(1, depth // len(opener))
    if context.rng.random() < 0.5:
        payload += closer * max(1, depth // len(opener))
    send_lines(context, payload[: context.max_line_bytes])


def case_huge_numbers(context: Context) -> None:
    digits = context.rng.choice([20, 400, 5000, 100_000])
    number = context.rng.choice(
        [
            b"9" * digits,
            b"-" + b"9" * digits,
            b"1e" + b"9" * min(digits, 50),
            b"0." + b"0" * digits + b"1",
            b"1" + b"0" * digits + b".5e-" + str(digits).encode(),
            b"3.5e38",
            b"-0",
            b"1E+400",
        ]
    )
    template = context.rng.choice(
        [
            b'{"op":"search","vector":[1,2,3,%s],"k":3}',
            b'{"op":"search","vector":[1,2,3,4],"k":%s}',
            b'{"id":%s,"op":"ping"}',
            b'{"op":"get","ids":[%s]}',
            b'{"op":"search","vector":[1,2,3,4],"k":2,"nprobe":%s}',
        ]
    )
    send_lines(context, template.replace(b"%s", number))


def case_long_strings(context: Context) -> None:
    length = context.rng.choice([511, 512, 513, 4096, 4097, 100_000, context.max_line_bytes - 64])
    text = "é" * (length // 2) if context.rng.random() < 0.3 else "x" * length
    request = context.rng.choice(
        [
            {"id": text, "op": "ping"},
            {"op": "get", "ids": [text]},
            {
                "op": "upsert",
                "token": DEFAULT_TOKEN,
                "items": [{"id": "L", "vector": [1, 2, 3, 4], "title": text}],
            },
            {
                "op": "upsert",
                "token": DEFAULT_TOKEN,
                "items": [{"id": "L", "vector": [1, 2, 3, 4], "tags": [text]}],
            },
            {"op": "recommend", "history": ["a"], "prompt": text},
            {"op": text},
            {"op": "ping", "token": text},
        ]
    )
    send_lines(context, encode(request)[: context.max_line_bytes])


def case_invalid_utf8(context: Context) -> None:
    bad = context.rng.choice(
        [
            b"\xff",
            b"\xc0\xaf",
            b"\xe0\x80\xaf",
            b"\xed\xa0\x80",
            b"\xf8\x88\x80\x80\x80",
            b"\xc3",
            b"\xf4\x90\x80\x80",
            b"\x80\x80",
        ]
    )
    template = context.rng.choice(
        [
            b'{"op":"get","ids":["a%sb"]}',
            b'{"op":"%s"}',
            b'{"id":"%s","op":"ping"}',
            b'%s{"op":"ping"}',
            b'{"op":"ping"}%s',
            b'{"op":"search","vector":[1,2,3,4],"k":3,"filter":{"tags_any":["%s"]}}',
            b'{"op":"ping","%s":1}',
        ]
    )
    send_lines(context, template.replace(b"%s", bad))


def case_over_limit(context: Context) -> None:
    extra = context.rng.choice([1, 2, 1000, context.max_line_bytes * 3])
    filler = b'{"op":"get","ids":["' + b"y" * (context.max_line_bytes + extra) + b'"]}'
    context.sample = filler[:200]
    too_large_before = context.responses["too_large"]
    with Connection(context.port, timeout=context.hang_timeout) as connection:
        # Split the line so the limit is crossed across reads, sometimes with \r\n.
        cut = context.rng.randrange(1, len(filler))
        connection.send(filler[:cut])
        connection.send(filler[cut:] + (b"\r\n" if context.rng.random() < 0.3 else b"\n"))
        lines = ping_after(context, connection, "over")
        if lines != 1:
            raise CaseFailure("over_limit_answers", f"{lines} answers to one over-limit line, expected 1")
        if context.responses["too_large"] != too_large_before + 1:
            raise CaseFailure("over_limit_code", "no too_large answer")


def case_partial_line(context: Context) -> None:
    request = encode(context.rng.choice(valid_requests(context.rng)))
    cut = context.rng.randrange(1, len(request))
    context.sample = request
    connection = Connection(context.port, timeout=context.hang_timeout)
    try:
        connection.send(request[:cut])
        if context.rng.random() < 0.5:
            return  # abandoned half way: closed below
        time.sleep(context.rng.uniform(0.0, 0.05))
        connection.send(request[cut:] + b"\n")
        if ping_after(context, connection, "partial") != 1:
            raise CaseFailure(
                "partial_line_answers", "a line sent in two pieces did not get exactly one answer"
            )
    finally:
        if context.rng.random() < 0.5:
            connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset
        connection.close()


def case_slow_client(context: Context) -> None:
    request = encode(context.rng.choice(valid_requests(context.rng)))[:200] + b"\n"
    context.sample = request
    with Connection(context.port, timeout=context.hang_timeout) as connection:
        half = len(request) // 2
        for index in range(len(request)):
            connection.send(request[index : index + 1])
            time.sleep(0.0005)
            if index == half:
                fresh_ping(context)  # a byte-at-a-time client holds up nobody else
        ping_after(context, connection, "slow")


def case_unread_flood(context: Context) -> None:
    """Pipelines many requests and never reads (the server stops reading: TCP backpressure), then leaves."""
    line = encode({"op": "search", "vector": [1, 2, 3, 4], "k": 10}) + b"\n"
    context.sample = line
    connection = Connection(context.port, timeout=0.5)
    try:
        payload = line * int(2000 * context.scale + 10)
        sent = 0
        deadline = time.monotonic() + 2.0
        while sent < len(payload) and time.monotonic() < deadline:
            try:
                sent += connection.sock.send(payload[sent : sent + 65536])
            except TimeoutError:
                continue
            except OSError:
                break
    finally:
        connection.close()


def case_pipelined_read(context: Context) -> None:
    """Pipelines a few hundred mixed requests, then reads every answer in order."""
    requests = [context.rng.choice(valid_requests(context.rng)) for _ in range(int(300 * context.scale) + 5)]
    payload = b"".join(encode(request) + b"\n" for request in requests)
    context.sample = payload[:200]
    with Connection(context.port, timeout=context.hang_timeout) as connection:
        connection.send(payload)
        lines = ping_after(context, connection, "pipelined")
        if lines != len(requests):
            raise CaseFailure("pipelined_answers", f"{lines} answers to {len(requests)} pipelined requests")


def wait_released(context: Context, what: str) -> int:
    """Polls `stats` on one connection until the server holds only that connection (a refused connect is
    retried); returns `connections_refused`. One polling connection, not one per poll: a closed connection
    is released after the server's drain quiet period (250 ms), so polling with fresh connections every
    100 ms would keep a few of its own closed polls in the count."""
    deadline = time.monotonic() + 10.0
    connected = -1
    poller: Connection | None = None
    try:
        while time.monotonic() < deadline:
            try:
                if poller is None:
                    poller = Connection(context.port, timeout=context.hang_timeout)
                stats = poller.call({"op": "stats"})
            except (ConnectionBroken, OSError):
                if poller is not None:
                    poller.close()
                    poller = None
                time.sleep(0.1)
                continue
            server = stats.get("server", {})
            connected = int(server.get("connections", -1)) if stats.get("ok") is True else -1
            if connected == 1:
                return int(server.get("connections_refused", -1))
            time.sleep(0.1)
    finally:
        if poller is not None:
            poller.close()
    raise CaseFailure("connections_not_released", f"{connected} connections open 10 s after {what}")


def case_many_connections(context: Context) -> None:
    """Opens many connections (more than `max_connections` at full scale), leaves them in odd states and
    closes them; every one must be released."""
    count = int(300 * context.scale) + 10
    connections: list[socket.socket] = []
    context.sample = b"%d connections" % count
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", context.port), timeout=context.hang_timeout)
            connections.append(sock)
            action = context.rng.random()
            try:
                if action < 0.3:
                    sock.sendall(b'{"op":"search","vector":[1,2')  # partial line
                elif action < 0.5:
                    sock.sendall(b'{"op":"ping"}\n{"op":"stats"}\n')  # answers never read
                elif action < 0.6:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass  # a connection over max_connections may already be closed by the server
    finally:
        for sock in connections:
            sock.close()
    wait_released(context, f"{count} were closed")


def case_connection_limit(context: Context) -> None:
    """Holds `max_connections` + 8 connections: the excess ones get one `unavailable` line and are closed,
    the others stay usable; `connections_refused` counts the refusals."""
    refused_before = wait_released(context, "the previous case")
    limit = context.max_connections
    sockets: list[socket.socket] = []
    context.sample = b"limit %d" % limit
    try:
        for _ in range(limit + 8):
            sockets.append(
                socket.create_connection(("127.0.0.1", context.port), timeout=context.hang_timeout)
            )
        refused: set[socket.socket] = set()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            waiting = [sock for sock in sockets if sock not in refused]
            ready, _, _ = select.select(waiting, [], [], max(0.0, deadline - time.monotonic()))
            for sock in ready:
                sock.settimeout(context.hang_timeout)
                received = b""
                try:
                    while chunk := sock.recv(4096):
                        received += chunk
                except ConnectionResetError:
                    pass
                except TimeoutError:
                    raise CaseFailure(
                        "refusal_not_closed", f"a refused connection stayed open: {received[:300]!r}"
                    ) from None
                if b'"unavailable"' not in received.split(b"\n", 1)[0]:
                    raise CaseFailure(
                        "refusal_without_unavailable", f"a refused connection got {received[:300]!r}"
                    )
                refused.add(sock)
        if not 8 <= len(refused) <= 9:
            raise CaseFailure(
                "connection_limit", f"{len(refused)} of {limit + 8} connections refused (limit {limit})"
            )
        held = next(sock for sock in sockets if sock not in refused)
        held.settimeout(context.hang_timeout)
        held.sendall(b'{"id":"held","op":"ping"}\n')
        if b'"ok":true' not in held.recv(4096):
            raise CaseFailure("connection_limit", "a connection under the limit did not answer ping")
    finally:
        for sock in sockets:
            sock.close()
    refused_after = wait_released(context, f"{limit + 8} were closed")
    if refused_after - refused_before < 8:
        raise CaseFailure(
            "connections_refused_count", f"connections_refused rose by {refused_after - refused_before}"
        )


CASES: dict[str, tuple[float, Callable[[Context], None]]] = {
    "byte_mutation": (30, case_byte_mutation),
    "value_mutation": (25, case_value_mutation),
    "random_bytes": (8, case_random_bytes),
    "deep_nesting": (4, case_deep_nesting),
    "huge_numbers": (5, case_huge_numbers),
    "long_strings": (4, case_long_strings),
    "invalid_utf8": (6, case_invalid_utf8),
    "over_limit": (2, case_over_limit),
    "partial_line": (6, case_partial_line),
    "slow_client": (1, case_slow_client),
    "unread_flood": (1, case_unread_flood),
    "pipelined_read": (1, case_pipelined_read),
    "many_connections": (0.3, case_many_connections),
    "connection_limit": (0.2, case_connection_limit),
}


def run(
    binary: str,
    seconds: float = 60.0,
    cases: int | None = None,
    seed: int = 1,
    hang_timeout: float = 10.0,
    max_rss_mib: float = 1024.0,
    scale: float = 1.0,
    read_only: bool = False,
    max_connections: int = 128,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Fuzzes until `seconds` have passed or `cases` cases ran (whichever first); returns the record.
    `read_only` gives the server another admin token than the cases use, so every write is refused and
    resident memory growth cannot come from stored data (RocksDB's memtable)."""
    rng = random.Random(seed)
    workdir = tempfile.mkdtemp(prefix="steer-fuzz-")
    data = str(Path(workdir) / "data")
    token = "not-" + DEFAULT_TOKEN if read_only else DEFAULT_TOKEN
    arguments = [
        "--dimension",
        str(DIMENSION),
        "--admin-token",
        token,
        "--public-reads",
        "true",
        "--max-connections",
        str(max_connections),
    ]
    names = list(CASES)
    weights = [CASES[name][0] for name in names]
    per_kind: Counter[str] = Counter()
    violations: list[dict[str, Any]] = []
    crashes = 0
    rss_samples: list[tuple[int, int]] = []
    started = time.monotonic()
    done = 0
    server = Server(binary, data, arguments)
    try:
        with Connection(server.port) as connection:
            stats = connection.call({"op": "stats"})
        max_line_bytes = int(stats["server"]["limits"].get("max_line_bytes", 1_048_576))
        max_connections = int(stats["server"]["limits"].get("max_connections", 1024))
        context = Context(server.port, rng, max_line_bytes, hang_timeout, scale, max_connections)
        # Every kind once first, then weighted random choices.
        while (cases is None or done < cases) and time.monotonic() - started < seconds:
            name = names[done] if done < len(names) else rng.choices(names, weights)[0]
            context.sample = b""
            before = dict(context.responses)
            failure: CaseFailure | None = None
            try:
                CASES[name][1](context)
                fresh_ping(context)
            except CaseFailure as caught:
                failure = caught
            except (OSError, ConnectionBroken) as error:
                failure = CaseFailure("client_error", repr(error))
            if not server.alive():
                crashes += 1
                failure = CaseFailure(
                    "crash", f"exit status {server.process.returncode}: {server.stderr_tail(1500)}"
                )
            if failure is not None:
                violations.append(
                    {
                        "case": done,
                        "kind_of_case": name,
                        "violation": failure.kind,
                        "detail": failure.detail[:1500],
                        "sample_b64": base64.b64encode(context.sample[:2048]).decode(),
                        "answers": {
                            k: v - before.get(k, 0)
                            for k, v in context.responses.items()
                            if v != before.get(k, 0)
                        },
                    }
                )
                log(f"case {done} ({name}): {failure.kind}: {failure.detail[:300]}")
                if not server.alive() or failure.kind.startswith("fresh_"):
                    server.kill()
                    server = Server(binary, data, arguments)
                    context.port = server.port
            per_kind[name] += 1
            done += 1
            rss = server.rss_kib()
            if rss is not None and (done % 10 == 0 or done < 50):
                rss_samples.append((done, rss))
            if rss is not None and rss > max_rss_mib * 1024:
                violations.append(
                    {
                        "case": done,
                        "kind_of_case": name,
                        "violation": "memory",
                        "detail": f"VmRSS {rss} KiB over {max_rss_mib} MiB",
                    }
                )
                log(f"case {done}: VmRSS {rss} KiB over the limit")
                break
            if done % 500 == 0:
                log(
                    f"{done} cases, {time.monotonic() - started:.0f} s, VmRSS {rss} KiB, "
                    f"{len(violations)} violations"
                )
        final = server.terminate()
        if final != 0:
            violations.append(
                {"violation": "exit_status", "detail": f"SIGTERM exit {final}: {server.stderr_tail(500)}"}
            )
    finally:
        if server.alive():
            server.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    warm = [rss for case, rss in rss_samples if case >= max(50, done // 10)]
    rss_report = {
        "first_kib": rss_samples[0][1] if rss_samples else None,
        "after_warmup_kib": warm[0] if warm else None,
        "last_kib": rss_samples[-1][1] if rss_samples else None,
        "max_kib": max((rss for _, rss in rss_samples), default=None),
        "growth_after_warmup_percent": round(100.0 * (warm[-1] - warm[0]) / warm[0], 1)
        if len(warm) > 1
        else None,
        "limit_mib": max_rss_mib,
        "samples": rss_samples[:: max(1, len(rss_samples) // 50)],
    }
    return {
        "seconds": round(elapsed, 1),
        "cases": done,
        "seed": seed,
        "read_only": read_only,
        "scale": scale,
        "hang_timeout_s": hang_timeout,
        "cases_by_kind": dict(per_kind),
        "answers": dict(context.responses),
        "crashes": crashes,
        "hangs": sum(1 for v in violations if "hang" in str(v.get("violation"))),
        "rss": rss_report,
        "violation_count": len(violations),
        "violations": violations[:MAX_VIOLATIONS_KEPT],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "binary", nargs="?", help="the steer binary (default: STEER_BIN or .build/debug/steer)"
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="time budget")
    parser.add_argument("--cases", type=int, help="case budget (whichever budget ends first)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--hang-timeout", type=float, default=10.0, help="seconds before a missing answer is a hang"
    )
    parser.add_argument("--max-rss-mib", type=float, default=1024.0, help="resident memory limit")
    parser.add_argument("--read-only", action="store_true", help="the server refuses every write (token)")
    parser.add_argument("--scale", type=float, default=1.0, help="shrinks floods and connection counts (<1)")
    parser.add_argument(
        "--results", help="results file (default Benchmarks/reliability/fuzz-results-<date>.json)"
    )
    options = parser.parse_args()
    try:
        binary = steer_binary(options.binary)
    except HarnessError as error:
        print(error, file=sys.stderr)
        return 2
    result = run(
        binary,
        seconds=options.seconds,
        cases=options.cases,
        seed=options.seed,
        hang_timeout=options.hang_timeout,
        max_rss_mib=options.max_rss_mib,
        read_only=options.read_only,
        scale=options.scale,
    )
    path = results_path("fuzz", options.results)
    write_results(path, binary, result)
    rss = result["rss"]
    print(
        f"{result['cases']} cases in {result['seconds']} s: {result['crashes']} crashes, "
        f"{result['hangs']} hangs, "
        f"{result['violation_count']} violations; VmRSS first {rss['first_kib']} KiB, after warm-up "
        f"{rss['after_warmup_kib']} KiB, last {rss['last_kib']} KiB, max {rss['max_kib']} KiB; answers "
        f"{result['answers']}"
    )
    print(f"results: {path}")
    return 1 if result["violation_count"] else 0


if __name__ == "__main__":
    sys.exit(main())
