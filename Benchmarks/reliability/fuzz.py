#!/usr/bin/env python3
"""Protocol fuzzer for `steer serve` (docs/reliability.md).

First loads a catalog of 10,000 items (`--catalog`) with 64-d vectors, titles, attributes and tags from
common to unique. Then, for a fixed budget (seconds and/or cases), sends one generated case at a time to
the built server: byte-level mutations of valid requests, value-level mutations (huge numbers, long
strings, lone surrogates, wrong types, unknown and duplicate keys), random bytes, deep nesting, invalid
UTF-8, lines over the limit, partial lines (completed late or abandoned), byte-at-a-time clients,
pipelined floods that never read, many connections opened and abandoned, and heavy requests: large k and
batches at and over the cost cap, filters of many tags, arrays at and over `max_batch`, objects at and
over the 1024-field cap, `timeout_ms` values. The heavy cases expect a specific answer (the error of the
limit crossed, else `ok`/`deadline_exceeded`) and check the content of long successful answers (hit
lists against k and the filter, `get` items). After every case:

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
import itertools
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
from typing import Any, TypeGuard

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

DIMENSION = 64
CATALOG_ITEMS = 10_000  # loaded before fuzzing: ids c0 … c9999, tags catalog_tags(n)
CATALOG_BATCH = 500  # items per upsert while loading (a line of ~350 KB)
MIN_HIT_BYTES = 60  # a catalog item's hit as written (id, score, title, tags): at least …
MAX_HIT_BYTES = 250  # … and at most (items written by other cases are few)
LARGE_ANSWER_BYTES = 100_000  # answers at least this long are counted (response size is exercised)
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
    "deadline_exceeded",
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
    catalog: int = 0  # items c0 … c(catalog - 1) with catalog_tags(n) are stored (0: none known)
    limits: dict[str, int] = field(default_factory=dict)  # stats.server.limits of the server under fuzz
    writes_allowed: bool = True  # False: the server has another admin token (--read-only)
    exact: bool = True  # the index is Flat: a tags_any search returns min(k, matching items) hits
    largest_answer: int = 0  # bytes of the longest answer line read
    large_answers: int = 0  # answer lines of at least LARGE_ANSWER_BYTES

    def limit(self, name: str) -> int:
        """A server limit from `stats` (the protocol's default when the server does not report it)."""
        return int(self.limits.get(name, DEFAULT_LIMITS[name]))


DEFAULT_LIMITS = {
    "max_k": 1000,
    "max_batch": 1024,
    "max_ef_search": 4096,
    "max_nprobe": 4096,
    "max_query_cost": 262_144,
    "max_filter_terms": 64,
    "max_history": 1000,
    "max_timeout_ms": 60_000,
    "max_response_bytes": 16 << 20,
}
MAX_OBJECT_FIELDS = 1024  # fields per JSON object (JSONParser.maxObjectFields)


ONES = b"[" + b",".join([b"1"] * DIMENSION) + b"]"  # a valid vector literal


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
        {
            "id": 12,
            "op": "event",
            "token": DEFAULT_TOKEN,
            "user": "u1",
            "item": ids[0],
            "kind": "view",
            "ts": 5,
        },
        {"id": 13, "op": "event", "token": DEFAULT_TOKEN, "events": [{"user": 7, "item": ids[1]}]},
        {"id": 14, "op": "get_user", "token": DEFAULT_TOKEN, "user": "u1", "limit": 3},
        {
            "id": 15,
            "op": "recommend",
            "user": "u1",
            "max_history": 2,
            "positive": ids[:1],
            "strategy": "best_score",
        },
        {"id": 16, "op": "delete_user", "token": DEFAULT_TOKEN, "user": 7},
        {
            "id": 17,
            "op": "ingest_vectors",
            "token": DEFAULT_TOKEN,
            "version": "fuzz-v2",
            "dimension": DIMENSION,
            "items": [{"id": ids[0], "vector_b64": b64}],
        },
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
            [
                "ping",
                "upsert",
                "search",
                "get",
                "delete",
                "stats",
                "swap",
                "recommend",
                "encode",
                "event",
                "get_user",
                "delete_user",
                "ingest_vectors",
            ]
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
    context.largest_answer = max(context.largest_answer, len(line))
    if len(line) > context.limit("max_response_bytes"):
        raise CaseFailure("answer_too_long", f"{len(line)} bytes, over max_response_bytes: {line[:200]!r}")
    if len(line) >= LARGE_ANSWER_BYTES:
        context.large_answers += 1
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
            b'{"op":"search","vector":[' + b"1," * (DIMENSION - 1) + b'%s],"k":3}',
            b'{"op":"search","vector":' + ONES + b',"k":%s}',
            b'{"id":%s,"op":"ping"}',
            b'{"op":"get","ids":[%s]}',
            b'{"op":"search","vector":' + ONES + b',"k":2,"nprobe":%s}',
            b'{"op":"search","vector":' + ONES + b',"k":2,"timeout_ms":%s}',
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
                "items": [{"id": "L", "vector": [1] * DIMENSION, "title": text}],
            },
            {
                "op": "upsert",
                "token": DEFAULT_TOKEN,
                "items": [{"id": "L", "vector": [1] * DIMENSION, "tags": [text]}],
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
            b'{"op":"search","vector":' + ONES + b',"k":3,"filter":{"tags_any":["%s"]}}',
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
    line = encode({"op": "search", "vector": [1] * DIMENSION, "k": 10}) + b"\n"
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


# -- the catalog and the heavy cases ------------------------------------------------------------------
#
# The server under fuzz holds CATALOG_ITEMS items with 64-d vectors, titles, attributes and tags of every
# frequency, so that large k, long batches and many-tag filters cost real work and produce long answers.
# These cases know which answer each request must get (a specific error code when a limit is crossed) and
# check the content of successful answers (hit counts, order, filters, `get` items).


def catalog_tags(n: int) -> list[str]:
    """Tags of catalog item `c<n>`: one on every item, one on 10 %, one on 1 %, one on 0.1 %, one unique."""
    return ["all", f"g{n % 10}", f"h{n % 100}", f"m{n % 1000}", f"r{n}"]


def catalog_item(n: int, rng: random.Random) -> dict[str, Any]:
    return {
        "id": f"c{n}",
        "vector": [round(rng.gauss(0.0, 1.0), 4) for _ in range(DIMENSION)],
        "tags": catalog_tags(n),
        "title": f"catalog item {n} " + "~" * (n % 97),
        "attributes": {"n": n, "year": 1950 + n % 70, "genre": f"genre {n % 23}", "score": n / 7},
    }


def load_catalog(port: int, token: str, count: int, rng: random.Random) -> None:
    """Upserts the catalog in batches of CATALOG_BATCH items; raises HarnessError on a refusal."""
    with Connection(port, timeout=300.0) as connection:
        for start in range(0, count, CATALOG_BATCH):
            items = [catalog_item(n, rng) for n in range(start, min(count, start + CATALOG_BATCH))]
            response = connection.call({"op": "upsert", "token": token, "items": items})
            if response.get("ok") is not True:
                raise HarnessError(f"loading the catalog failed: {json.dumps(response)[:300]}")


def catalog_id(context: Context) -> str:
    """An id of the catalog, or of nothing when there is no catalog."""
    return f"c{context.rng.randrange(max(1, context.catalog))}"


def query_vectors(context: Context, count: int) -> list[Any]:
    """`count` query vectors, each a float array or a base64 float32 string."""
    as_b64 = context.rng.random() < 0.5
    result: list[Any] = []
    for _ in range(count):
        values = vector(context.rng)
        result.append(base64.b64encode(struct.pack(f"<{DIMENSION}f", *values)).decode() if as_b64 else values)
    return result


def scaled(context: Context, full: int) -> int:
    """`full` shrunk by the context's scale (at least 1)."""
    return max(1, int(full * context.scale))


def exchange(
    context: Context,
    request: dict[str, Any] | bytes,
    expected: set[str],
    validate: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Sends one request on a new connection and reads its answer: the answer must be `ok` or carry an
    error code in `expected` (`ok` must itself be in `expected` to be accepted); `validate` checks a
    successful answer. Then the connection must answer a ping."""
    payload = request if isinstance(request, bytes) else encode(request)
    if len(payload) > context.max_line_bytes:
        expected = {"too_large"}  # a line over max_line_bytes is skipped unread
    context.sample = payload
    with Connection(context.port, timeout=context.hang_timeout) as connection:
        try:
            connection.send(payload + b"\n")
            response = check_line(context, connection.read_line())
        except TimeoutError:
            raise CaseFailure("hang", f"no answer within {context.hang_timeout} s") from None
        except ConnectionBroken as error:
            raise CaseFailure("connection_closed", str(error)) from None
        code = "ok" if response["ok"] else str(response["error"]["code"])
        if code not in expected:
            raise CaseFailure(
                "unexpected_answer",
                f"{code} where {sorted(expected)} was expected: {json.dumps(response)[:400]}",
            )
        if response["ok"] and validate is not None:
            validate(response)
        ping_after(context, connection, "exchange")
    return response


def filter_passes(search_filter: dict[str, Any], tags: set[str]) -> bool:
    any_of = search_filter.get("tags_any")
    if any_of and not tags.intersection(any_of):
        return False
    if tags.intersection(search_filter.get("tags_none", [])):
        return False
    return all(tags.intersection(group) for group in search_filter.get("tag_groups", []))


def check_hits(context: Context, hits: Any, k: int, search_filter: dict[str, Any] | None, where: str) -> None:
    """One hit list: at most k hits, distinct ids, scores not increasing (metric ip), every hit passing
    the filter; with a Flat index and only `tags_any`, at least min(k, matching catalog items) hits."""
    if not isinstance(hits, list) or len(hits) > k:
        raise CaseFailure("bad_hits", f"{where}: {str(hits)[:300]} for k {k}")
    ids = [hit.get("id") for hit in hits]
    if len(set(map(str, ids))) != len(ids):
        raise CaseFailure("duplicate_hits", f"{where}: {ids[:50]}")
    scores = [hit.get("score") for hit in hits]
    if any(not isinstance(score, (int, float)) for score in scores) or any(
        later > earlier for earlier, later in itertools.pairwise(scores)
    ):
        raise CaseFailure("hit_order", f"{where}: scores {scores[:50]}")
    if search_filter:
        for hit in hits:
            if not filter_passes(search_filter, set(hit.get("tags", []))):
                raise CaseFailure(
                    "filter_violated", f"{where}: {hit} passed {json.dumps(search_filter)[:300]}"
                )
        any_of = search_filter.get("tags_any")
        if context.exact and context.catalog and any_of and set(search_filter) == {"tags_any"}:
            # Items other cases wrote can only add matches: at least min(k, matching catalog items).
            wanted = set(any_of)
            matching = sum(1 for n in range(context.catalog) if wanted.intersection(catalog_tags(n)))
            if len(hits) < min(k, matching):
                raise CaseFailure(
                    "filter_hit_count",
                    f"{where}: {len(hits)} hits, at least {min(k, matching)} expected "
                    f"(k {k}, {matching} catalog items match {sorted(wanted)[:20]})",
                )


def check_search_answer(
    context: Context, response: dict[str, Any], queries: int, batch: bool, k: int, search_filter: Any
) -> None:
    lists = response.get("results") if batch else [response.get("hits")]
    if not isinstance(lists, list) or len(lists) != queries:
        raise CaseFailure("bad_results", f"{queries} queries, answer {json.dumps(response)[:300]}")
    for index, hits in enumerate(lists):
        check_hits(
            context, hits, k, search_filter if isinstance(search_filter, dict) else None, f"query {index}"
        )


def is_int64(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def search_codes(
    context: Context, queries: int, k: int, ef_search: Any, nprobe: Any, timeout_ms: Any
) -> set[str]:
    """The answers a search may get: the error a crossed limit must give, or else `ok`,
    `deadline_exceeded` and (when the answer may be long) `too_large`."""
    invalid = False
    over = False
    for value, name in ((ef_search, "max_ef_search"), (nprobe, "max_nprobe"), (timeout_ms, "max_timeout_ms")):
        if value is None:
            continue
        if not is_int64(value) or value < 1:
            invalid = True  # not an integer of the wire's 64-bit range, or not positive
        elif value > context.limit(name):
            over = True
    if k > context.limit("max_k") or queries > context.limit("max_batch"):
        over = True
    knobs = [v for v in (k, ef_search, nprobe) if isinstance(v, int) and not isinstance(v, bool)]
    if queries * max(knobs) > context.limit("max_query_cost"):
        over = True
    if invalid or over:
        return ({"invalid_request"} if invalid else set()) | ({"too_large"} if over else set())
    # A catalog hit is written in MIN_HIT_BYTES … MAX_HIT_BYTES: an answer that must be longer than
    # max_response_bytes must be too_large, one that may be longer may be.
    hits = queries * min(k, context.catalog or k)
    if hits * MIN_HIT_BYTES > context.limit("max_response_bytes"):
        return {"too_large", "deadline_exceeded"}
    if hits * MAX_HIT_BYTES > context.limit("max_response_bytes"):
        return {"ok", "too_large", "deadline_exceeded"}
    return {"ok", "deadline_exceeded"}


def search_case(
    context: Context,
    queries: int,
    k: int,
    search_filter: Any = None,
    ef_search: Any = None,
    nprobe: Any = None,
    timeout_ms: Any = None,
    filter_codes: set[str] | None = None,
) -> dict[str, Any]:
    batch = queries != 1 or context.rng.random() < 0.3
    vectors = query_vectors(context, queries)
    request: dict[str, Any] = {"id": "heavy", "op": "search", "k": k}
    if batch:
        request["vectors"] = vectors
    elif isinstance(vectors[0], str):
        request["vector_b64"] = vectors[0]
    else:
        request["vector"] = vectors[0]
    for name, value in (
        ("filter", search_filter),
        ("ef_search", ef_search),
        ("nprobe", nprobe),
        ("timeout_ms", timeout_ms),
    ):
        if value is not None:
            request[name] = value
    codes = search_codes(context, queries, k, ef_search, nprobe, timeout_ms)
    if filter_codes:  # the filter must be refused; so must the rest if it crosses a limit
        codes = filter_codes | (set() if "ok" in codes else codes)
    return exchange(
        context,
        request,
        codes,
        lambda response: check_search_answer(context, response, queries, batch, k, search_filter),
    )


def case_large_k(context: Context) -> None:
    """k up to and over max_k on batches whose cost reaches and crosses max_query_cost (and whose answers
    reach max_response_bytes), with ef_search and nprobe at, over and far over their caps."""
    rng = context.rng
    max_k = context.limit("max_k")
    k = rng.choice([max_k, max_k, max_k - 1, max_k // 2, 100, max_k + 1, 2**31])
    cap = context.limit("max_query_cost")
    knob = rng.choice([None, None, None, 1, k, 4096, 4097, 2**20, 0, -1])
    unit = max(k, knob if isinstance(knob, int) and knob > 0 else 0)
    queries = rng.choice(
        [1, rng.randint(1, max(1, scaled(context, cap) // unit)), cap // unit + 1]
        + ([cap // unit] if context.scale >= 1 else [])
    )
    queries = max(1, min(queries, context.limit("max_batch") + 1))
    name = rng.choice(["ef_search", "nprobe"])
    search_case(
        context,
        queries,
        k,
        ef_search=knob if name == "ef_search" else None,
        nprobe=knob if name == "nprobe" else None,
    )


def tag_pool(context: Context, kind: str, count: int) -> list[str]:
    rng = context.rng
    if kind == "common":
        return [rng.choice(["all", *(f"g{n}" for n in range(10))]) for _ in range(count)]
    if kind == "medium":
        return [f"h{rng.randrange(100)}" for _ in range(count)]
    if kind == "rare":
        return [f"r{rng.randrange(max(1, context.catalog))}" for _ in range(count)]
    if kind == "mixed":
        return [
            tag_pool(context, rng.choice(["common", "medium", "rare", "unknown"]), 1)[0] for _ in range(count)
        ]
    return [f"zz{rng.randrange(10**6)}" for _ in range(count)]  # unknown


def case_heavy_filter(context: Context) -> None:
    """Filters of many tags (common, medium, rare, unknown; up to and over max_filter_terms distinct, or
    one tag repeated up to max_batch times) over `tags_any`, `tags_none` and `tag_groups`, with k up to
    max_k: filter cost and long answers; every hit must pass the filter."""
    rng = context.rng
    terms = context.limit("max_filter_terms")
    max_batch = context.limit("max_batch")
    search_filter: dict[str, Any] = {}
    for name in rng.sample(["tags_any", "tags_none", "tag_groups"], rng.randint(1, 3)):
        shape = rng.random()
        if shape < 0.15:
            tags = [tag_pool(context, "mixed", 1)[0]] * rng.choice([2, 64, max_batch, 5000])
        else:
            count = rng.choice([1, 2, 8, terms // 3, terms - 1, terms, terms + 1, 1000])
            tags = tag_pool(context, rng.choice(["common", "medium", "rare", "mixed", "unknown"]), count)
        if name == "tag_groups":
            size = rng.randint(1, 8)
            groups = [tags[start : start + size] for start in range(0, len(tags), size)]
            if rng.random() < 0.1:
                groups = [groups[0]] * rng.choice([max_batch, max_batch + 1])
            search_filter[name] = groups
        else:
            search_filter[name] = tags
    if rng.random() < 0.05:
        search_filter[rng.choice(["tags_any", "tags_none"])] = [""]  # an empty tag
    distinct = set()
    for name in ("tags_any", "tags_none"):
        distinct.update(search_filter.get(name, []))
    for group in search_filter.get("tag_groups", []):
        distinct.update(group)
    filter_codes: set[str] = set()
    if "" in distinct:
        filter_codes.add("invalid_request")
    if len(distinct) > terms or len(search_filter.get("tag_groups", [])) > max_batch:
        filter_codes.add("too_large")
    if any(len(tags) > max_batch for name, tags in search_filter.items() if name != "tag_groups"):
        filter_codes.add("too_large")
    k = rng.choice([1, 10, 100, context.limit("max_k")])
    queries = rng.choice([1, 1, rng.randint(2, scaled(context, 64))])
    search_case(context, queries, k, search_filter=search_filter, filter_codes=filter_codes or None)


def check_get_answer(context: Context, response: dict[str, Any], ids: list[Any]) -> None:
    """`items` are the distinct existing ids in request order, `missing` the rest; catalog items carry
    their title, tags and a vector of the dimension."""
    distinct = list(dict.fromkeys(ids))
    items = response.get("items")
    missing = response.get("missing", [])
    if not isinstance(items, list) or not isinstance(missing, list):
        raise CaseFailure("bad_get", json.dumps(response)[:300])
    found = [item.get("id") for item in items]
    if sorted(map(str, found + missing)) != sorted(map(str, distinct)) or found != [
        ident for ident in distinct if ident in set(found)
    ]:
        raise CaseFailure("bad_get", f"asked {distinct[:20]}…, found {found[:20]}…, missing {missing[:20]}…")
    for item in items:
        ident = item.get("id")
        vector_value = item.get("vector")
        if not isinstance(vector_value, list) or len(vector_value) != DIMENSION:
            raise CaseFailure("bad_get", f"item {ident} has vector {str(vector_value)[:100]}")
        if isinstance(ident, str) and ident.startswith("c") and ident[1:].isdigit():
            n = int(ident[1:])
            if n < context.catalog and sorted(item.get("tags", [])) != sorted(catalog_tags(n)):
                raise CaseFailure("bad_get", f"catalog item {ident} has tags {item.get('tags')}")
    lost = [
        ident
        for ident in distinct
        if isinstance(ident, str)
        and ident[:1] == "c"
        and ident[1:].isdigit()
        and int(ident[1:]) < context.catalog
    ]
    lost = [ident for ident in lost if ident not in set(found)]
    if lost:
        raise CaseFailure("catalog_item_missing", f"get did not find catalog items {lost[:20]}")


def scratch_item(context: Context, n: int) -> dict[str, Any]:
    """An item outside the catalog (ids w0 … w2047, tags w*): fuzz writes never touch the catalog."""
    return {
        "id": f"w{n}",
        "vector": vector(context.rng),
        "tags": ["w", f"w{n % 10}"],
        "title": f"scratch {n}",
    }


def admin_codes(context: Context, refusals: set[str]) -> set[str]:
    """The answers an admin op may get: `refusals` (the errors its content must cause) or `ok`; with
    another admin token (read-only), `unauthorized` in every case."""
    unauthorized = set() if context.writes_allowed else {"unauthorized"}
    return (refusals | unauthorized) or {"ok"}


def case_long_array(context: Context) -> None:
    """Arrays at and over max_batch: `get` of catalog ids with repeats (long answers), batch searches,
    `delete` and `upsert` of scratch items, a history at and over max_history, a vector of the wrong
    length."""
    rng = context.rng
    max_batch = context.limit("max_batch")
    length = rng.choice(
        [max_batch, max_batch, max_batch - 1, max_batch + 1, scaled(context, max_batch), 5000]
    )
    over = {"too_large"} if length > max_batch else set()
    shape = rng.random()
    if shape < 0.35:
        repeat = rng.random()
        if repeat < 0.2:
            ids: list[Any] = [catalog_id(context)] * length
        else:
            ids = [
                catalog_id(context) if rng.random() < 0.9 else f"x{rng.randrange(10**6)}"
                for _ in range(length)
            ]
            if repeat < 0.6:
                ids = ids[: length // 2] + ids[: length - length // 2]  # every id twice
        exchange(
            context,
            {"op": "get", "ids": ids},
            over or {"ok", "deadline_exceeded"},
            lambda response: check_get_answer(context, response, ids),
        )
    elif shape < 0.55:
        search_case(
            context, min(length, scaled(context, max_batch) if not over else length), rng.choice([1, 5, 20])
        )
    elif shape < 0.7:
        ids = [f"w{rng.randrange(2048)}" for _ in range(length)]
        exchange(context, {"op": "delete", "token": DEFAULT_TOKEN, "ids": ids}, admin_codes(context, over))
    elif shape < 0.85:
        count = min(length, scaled(context, max_batch)) if not over else length
        start = rng.randrange(2048)
        items = [scratch_item(context, (start + n) % 2048) for n in range(count)]
        codes = admin_codes(context, over)
        if rng.random() < 0.2 and len(items) > 1:
            items[-1] = dict(items[-1], id=items[0]["id"])  # a duplicate id
            codes = {"invalid_request"} | codes - {"ok"}
        exchange(context, {"op": "upsert", "token": DEFAULT_TOKEN, "items": items}, codes)
    elif shape < 0.95:
        history_limit = context.limit("max_history")
        size = rng.choice([history_limit, history_limit + 1, length])
        history = [catalog_id(context) for _ in range(size)]
        op = rng.choice(["recommend", "encode"])
        # Without a DPR model the history is averaged (ok); over the limit the answer is too_large.
        exchange(
            context,
            {"op": op, "history": history, "k": rng.choice([10, context.limit("max_k")])},
            {"too_large"} if size > history_limit else {"ok", "deadline_exceeded", "not_found"},
        )
    else:
        values = [0.5] * rng.choice([DIMENSION - 1, DIMENSION + 1, 5000, 100_000])
        exchange(context, {"op": "search", "vector": values, "k": 3}, {"dimension_mismatch", "too_large"})


def wide_object(context: Context, fields: int, value: Callable[[int], Any]) -> dict[str, Any]:
    return {f"f{n}": value(n) for n in range(fields)}


def case_wide_object(context: Context) -> None:
    """Objects with many fields, at and over the parser's 1024-field cap: request objects, `attributes`
    (stored and read back), filters, nested wide objects, a duplicate key among thousands."""
    rng = context.rng
    fields = rng.choice(
        [1, 100, MAX_OBJECT_FIELDS - 1, MAX_OBJECT_FIELDS, MAX_OBJECT_FIELDS + 1, 5000, 60_000]
    )
    over = fields > MAX_OBJECT_FIELDS
    shape = rng.random()
    if shape < 0.25:
        request = {
            "op": rng.choice(["ping", "stats", "get"]),
            **wide_object(context, fields - 1, lambda n: n),
        }
        exchange(
            context,
            request,
            {"parse_error"} if over else {"invalid_request"} | ({"ok"} if fields == 1 else set()),
        )
    elif shape < 0.6:
        ident = rng.randrange(2048)
        attributes = wide_object(context, fields, lambda n: rng.choice([n, f"v{n}", None, [n], {"x": n}]))
        item = dict(scratch_item(context, ident), attributes=attributes)
        # Over the attributes' 64 KiB store limit the answer is too_large; else it is stored as sent.
        refusals = {"parse_error"} if over else ({"too_large"} if len(encode(attributes)) > 65536 else set())
        stored = exchange(
            context, {"op": "upsert", "token": DEFAULT_TOKEN, "items": [item]}, admin_codes(context, refusals)
        )

        def same_attributes(response: dict[str, Any]) -> None:
            items = response.get("items", [])
            if not items or items[0].get("attributes") != attributes:
                raise CaseFailure("attributes_changed", f"w{ident}: {json.dumps(items)[:300]}")

        if stored["ok"]:
            exchange(context, {"op": "get", "ids": [f"w{ident}"]}, {"ok"}, same_attributes)
    elif shape < 0.75:
        search_filter = {"tags_any": ["all"], **wide_object(context, fields - 1, lambda n: [f"t{n}"])}
        exchange(
            context,
            {"op": "search", "vector": vector(rng), "k": 3, "filter": search_filter},
            {"parse_error"} if over else ({"invalid_request"} if fields > 1 else {"ok"}),
        )
    elif shape < 0.9:
        inner = min(fields, MAX_OBJECT_FIELDS)
        nested = {f"o{n}": wide_object(context, inner, lambda m: m) for n in range(rng.choice([2, 8, 40]))}
        payload = encode({"id": "nested", "op": "ping", "n": nested})
        exchange(context, payload[: context.max_line_bytes], {"parse_error", "invalid_request", "too_large"})
    else:
        body = b",".join(b'"k%d":%d' % (n, n) for n in range(min(fields, MAX_OBJECT_FIELDS) - 1))
        duplicate = b'"k%d":0' % rng.randrange(max(1, min(fields, MAX_OBJECT_FIELDS) - 1))
        exchange(context, b'{"op":"ping",' + body + b"," + duplicate + b"}", {"parse_error"})


def case_timeouts(context: Context) -> None:
    """`timeout_ms` tiny, at and over its cap, zero, negative, fractional, a string, 2^63, on heavy searches
    (deadline_exceeded) and on cheap ops."""
    rng = context.rng
    timeout = rng.choice([1, 1, 2, 5, 50, 1000, 60_000, 60_001, 0, -5, 1.5, "9", None, 2**63, 10**30])
    if rng.random() < 0.7:
        k = rng.choice([10, 100, context.limit("max_k")])
        queries = rng.choice(
            [1, min(context.limit("max_batch"), scaled(context, context.limit("max_query_cost")) // k)]
        )
        search_case(context, max(1, queries), k, timeout_ms=timeout)
        return
    request: dict[str, Any] = rng.choice(
        [{"op": "ping"}, {"op": "stats"}, {"op": "get", "ids": [catalog_id(context) for _ in range(50)]}]
    )
    request = dict(request, timeout_ms=timeout)
    if timeout is None:
        codes = {"ok", "deadline_exceeded"}  # null is an absent optional field
    elif not is_int64(timeout) or timeout < 1:
        codes = {"invalid_request"}
    elif timeout > context.limit("max_timeout_ms"):
        codes = {"too_large"}
    else:
        codes = {"ok", "deadline_exceeded"}
    exchange(context, request, codes)


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
    "large_k": (3, case_large_k),
    "heavy_filter": (4, case_heavy_filter),
    "long_array": (4, case_long_array),
    "wide_object": (4, case_wide_object),
    "timeouts": (3, case_timeouts),
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
    catalog: int = CATALOG_ITEMS,
    index_spec: str = "Flat",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Fuzzes until `seconds` have passed or `cases` cases ran (whichever first); returns the record.
    `read_only` gives the server another admin token than the cases use, so every write is refused and
    resident memory growth cannot come from stored data (RocksDB's memtable) beyond the catalog, which is
    loaded with the server's token before fuzzing."""
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
        "--index-spec",
        index_spec,
        # Server deadlines end before the client's hang timeout, so a slow heavy request is
        # deadline_exceeded rather than a hang.
        "--request-timeout-ms",
        str(int(hang_timeout * 500)),
    ]
    names = list(CASES)
    weights = [CASES[name][0] for name in names]
    per_kind: Counter[str] = Counter()
    answers_by_kind: dict[str, Counter[str]] = {}  # answers read in each kind of case, by code
    violations: list[dict[str, Any]] = []
    crashes = 0
    rss_samples: list[tuple[int, int]] = []
    started = time.monotonic()
    done = 0
    server = Server(binary, data, arguments)
    try:
        loading = time.monotonic()
        load_catalog(server.port, token, catalog, random.Random(seed))
        catalog_seconds = time.monotonic() - loading
        log(f"catalog: {catalog} items of dimension {DIMENSION} in {catalog_seconds:.1f} s")
        with Connection(server.port) as connection:
            stats = connection.call({"op": "stats"})
        limits = {
            name: int(value) for name, value in stats["server"]["limits"].items() if isinstance(value, int)
        }
        max_line_bytes = limits.get("max_line_bytes", 1_048_576)
        max_connections = limits.get("max_connections", 1024)
        context = Context(
            server.port,
            rng,
            max_line_bytes,
            hang_timeout,
            scale,
            max_connections,
            catalog=catalog,
            limits=limits,
            writes_allowed=not read_only,
            exact=index_spec == "Flat",
        )
        started = time.monotonic()
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
            for code, count in context.responses.items():
                if count != before.get(code, 0):
                    answers_by_kind.setdefault(name, Counter())[code] += count - before.get(code, 0)
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
        "catalog": {
            "items": catalog,
            "dimension": DIMENSION,
            "index_spec": index_spec,
            "load_seconds": round(catalog_seconds, 1),
        },
        "cases_by_kind": dict(per_kind),
        "answers_by_kind": {name: dict(counts) for name, counts in answers_by_kind.items()},
        "largest_answer_bytes": context.largest_answer,
        "answers_over_100kb": context.large_answers,
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
        "--catalog", type=int, default=CATALOG_ITEMS, help="catalog items loaded before fuzzing"
    )
    parser.add_argument("--index-spec", default="Flat", help="the server's index spec (default Flat)")
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
        catalog=options.catalog,
        index_spec=options.index_spec,
    )
    path = results_path("fuzz", options.results)
    write_results(path, binary, result)
    rss = result["rss"]
    print(
        f"{result['cases']} cases in {result['seconds']} s: {result['crashes']} crashes, "
        f"{result['hangs']} hangs, "
        f"{result['violation_count']} violations; largest answer {result['largest_answer_bytes']} bytes, "
        f"{result['answers_over_100kb']} answers over 100 kB; VmRSS first {rss['first_kib']} KiB, "
        f"after warm-up "
        f"{rss['after_warmup_kib']} KiB, last {rss['last_kib']} KiB, max {rss['max_kib']} KiB; answers "
        f"{result['answers']}"
    )
    print(f"results: {path}")
    return 1 if result["violation_count"] else 0


if __name__ == "__main__":
    sys.exit(main())
