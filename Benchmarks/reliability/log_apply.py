"""Apply rate of one following replica, in isolation (docs/scaling.md, "Following a stream").

One `nats-server -js` (R=1), one `steer serve --follow` replica (64-d, Flat). The replica starts once
(creating the stream and its consumer) and stops; then `--messages` messages of `--lines-per-message`
upsert lines of `--items-per-message` items each are published straight to the shard's subject over
the NATS core protocol (`--format binary`: the binary bodies a router writes; `--format json`: JSON
lines `{"op":"upsert","items":[{"id":…,"vector_b64":…}]}`, the bodies routers wrote before),
flushed with PING/PONG; then the replica starts again on its data directory and the tool measures the time
from its start to listening and from listening until `stats.applied_sequence` reaches the last
message (the catch-up of a replica that was down while those messages were written, without writes
going on), and the replica's CPU seconds over that time (per item: independent of how many other jobs
share the core, unlike items/s).

Usage: python3 Benchmarks/reliability/log_apply.py [--messages 20000] [--items-per-message 1]
Standard library only; needs `nats-server`. The machine is shared: the results record its load.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import random
import shutil
import socket
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

from convergence import TOKEN, Child, call, free_port, nats_binary
from harness import steer_binary, write_results

DIMENSION = 64
CLUSTER = "apply"


def line(first_id: int, count: int, rng: random.Random) -> bytes:
    items = []
    for n in range(count):
        vector = struct.pack(f"<{DIMENSION}f", *[rng.uniform(-1, 1) for _ in range(DIMENSION)])
        items.append({"id": first_id + n, "vector_b64": base64.b64encode(vector).decode()})
    return json.dumps({"op": "upsert", "items": items}, separators=(",", ":")).encode()


def binary_part(first_id: int, count: int, rng: random.Random) -> bytes:
    """One upsert part of the binary layout (Sources/SteerProtocol/WriteLogBinary.swift): int ids, raw
    little-endian float32 vectors, no tags, title or attributes, the default collection."""
    content = [struct.pack("<BHI", 1, 0, count)]
    for n in range(count):
        vector = struct.pack(f"<{DIMENSION}f", *[rng.uniform(-1, 1) for _ in range(DIMENSION)])
        content.append(struct.pack("<BqI", 1, first_id + n, DIMENSION) + vector + struct.pack("<IB", 0, 0))
    joined = b"".join(content)
    return struct.pack("<I", len(joined)) + joined


def body(first_id: int, lines: int, items: int, rng: random.Random, binary: bool) -> bytes:
    """A message of `lines` upsert parts of `items` items each (a batch message when lines > 1): JSON
    lines joined by newlines, or one binary message (what routers write)."""
    if binary:
        parts = [binary_part(first_id + n * items, items, rng) for n in range(lines)]
        return b"\0SWL\x01" + struct.pack("<I", lines) + b"".join(parts)
    return b"\n".join(line(first_id + n * items, items, rng) for n in range(lines))


def publish_all(port: int, subject: str, bodies: list[bytes]) -> None:
    """Core-protocol PUBs (no reply: JetStream stores them without a PubAck), then PING/PONG."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        reader = sock.makefile("rb")
        if not reader.readline().startswith(b"INFO"):
            raise RuntimeError("no INFO from nats-server")
        sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\n')
        chunk: list[bytes] = []
        for payload in bodies:
            chunk.append(b"PUB %s %d\r\n%s\r\n" % (subject.encode(), len(payload), payload))
            if len(chunk) == 512:
                sock.sendall(b"".join(chunk))
                chunk.clear()
        sock.sendall(b"".join(chunk) + b"PING\r\n")
        while True:
            line = reader.readline()
            if line.startswith(b"PONG"):
                return
            if line.startswith(b"-ERR"):
                raise RuntimeError(line.decode())


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process `pid` used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def applied(port: int) -> int:
    return int(call(port, {"op": "stats", "token": TOKEN}, timeout=30)["applied_sequence"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--items-per-message", type=int, default=1, help="items per line")
    parser.add_argument(
        "--lines-per-message", type=int, default=1, help="writes per message (a router's batch message)"
    )
    parser.add_argument("--sync-writes", default="true", choices=["true", "false"])
    parser.add_argument(
        "--format",
        default="binary",
        choices=["binary", "json"],
        help="message bodies: binary (as routers write) or JSON lines",
    )
    parser.add_argument("--binary")
    parser.add_argument("--out")
    parser.add_argument("--label", default="loaded")
    arguments = parser.parse_args()
    binary = steer_binary(arguments.binary)
    root = Path(tempfile.mkdtemp(prefix="steer-log-apply-"))
    nats_port = free_port()
    nats = Child(
        "nats", [nats_binary(), "-js", "-a", "127.0.0.1", "-p", str(nats_port), "-sd", str(root / "js")],
        nats_port, root / "nats.log",
    )  # fmt: skip
    port = free_port()
    replica = Child(
        "replica",
        [
            binary, "serve", "--port", str(port), "--data", str(root / "data"), "--log-level", "warning",
            "--dimension", str(DIMENSION), "--admin-token", TOKEN, "--public-reads", "true",
            "--follow", f"nats://127.0.0.1:{nats_port}", "--cluster", CLUSTER, "--shard", "0",
            "--sync-writes", arguments.sync_writes,
        ],
        port, root / "replica.log",
    )  # fmt: skip
    result: dict[str, Any] = {
        "label": arguments.label,
        "load_average_start": os.getloadavg(),
        "dimension": DIMENSION,
        "messages": arguments.messages,
        "items_per_line": arguments.items_per_message,
        "lines_per_message": arguments.lines_per_message,
        "replica_sync_writes": arguments.sync_writes,
        "message_format": arguments.format,
        "stream_replicas": 1,
    }
    try:
        nats.start()
        replica.start()
        replica.stop()
        rng = random.Random(7)
        per_message = arguments.items_per_message * arguments.lines_per_message
        bodies = [
            body(
                m * per_message,
                arguments.lines_per_message,
                arguments.items_per_message,
                rng,
                arguments.format == "binary",
            )
            for m in range(arguments.messages)
        ]
        published = time.monotonic()
        publish_all(nats_port, f"steer.{CLUSTER}.shard.0", bodies)
        result["publish_seconds"] = round(time.monotonic() - published, 2)
        started = time.monotonic()
        replica.start(timeout=120)
        listening = time.monotonic()
        assert replica.process is not None
        cpu_listening = cpu_seconds(replica.process.pid)
        while applied(port) < arguments.messages:
            time.sleep(0.02)
        done = time.monotonic()
        cpu_applied = cpu_seconds(replica.process.pid) - cpu_listening
        apply_seconds = done - listening
        result["seconds_start_to_listening"] = round(listening - started, 2)
        result["seconds_listening_to_applied"] = round(apply_seconds, 2)
        result["seconds_start_to_applied"] = round(done - started, 2)
        result["messages_per_second_after_listening"] = round(arguments.messages / apply_seconds)
        result["items_per_second_after_listening"] = round(arguments.messages * per_message / apply_seconds)
        # CPU time does not depend on how many other jobs share the core; items/s does.
        result["replica_cpu_seconds_after_listening"] = round(cpu_applied, 2)
        result["replica_cpu_microseconds_per_item"] = round(
            cpu_applied * 1e6 / (arguments.messages * per_message), 2
        )
        stats = call(port, {"op": "stats", "token": TOKEN}, timeout=30)
        result["items_stored"] = stats.get("items")
        print(json.dumps(result), flush=True)
    finally:
        replica.stop()
        nats.stop()
        result["load_average_end"] = os.getloadavg()
        with contextlib.suppress(OSError):
            shutil.rmtree(root)
    if arguments.out:
        write_results(Path(arguments.out), binary, result)


if __name__ == "__main__":
    main()
