"""Every documented limit and the admin token, checked on the wire against `steer serve` started with
small limits (docs/protocol.md "Limits", docs/configuration.md)."""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import Connection, Server

TOKEN = "limits-token"
LIMITS = [
    "--max-line-bytes",
    "1024",
    "--max-k",
    "5",
    "--max-batch",
    "3",
    "--max-connections",
    "4",
    "--max-in-flight",
    "2",
    "--idle-timeout",
    "1",
]


@pytest.fixture()
def server(binary: str) -> Iterator[Server]:
    workdir = tempfile.mkdtemp(prefix="steer-limits-")
    process = Server(
        binary,
        str(Path(workdir) / "data"),
        ["--dimension", "2", "--admin-token", TOKEN, "--public-reads", "true", *LIMITS],
    )
    yield process
    process.kill()
    shutil.rmtree(workdir, ignore_errors=True)


def code(response: dict[str, Any]) -> str:
    return "ok" if response.get("ok") is True else str(response.get("error", {}).get("code"))


def item(ident: Any, **fields: Any) -> dict[str, Any]:
    return {"id": ident, "vector": [1.0, 0.5], **fields}


def test_size_limits(server: Server) -> None:
    with Connection(server.port) as connection:
        connection.send(b'{"op":"get","ids":["' + b"x" * 1100 + b'"]}\n{"id":2,"op":"ping"}\n')
        assert code(connection.read()) == "too_large"
        assert connection.read() == {"id": 2, "ok": True}
        upsert = {"op": "upsert", "token": TOKEN}
        assert code(connection.call({**upsert, "items": [item(n) for n in range(4)]})) == "too_large"
        assert code(connection.call({**upsert, "items": [item(n) for n in range(3)]})) == "ok"
        assert code(connection.call({"op": "get", "ids": [1, 2, 3, 4]})) == "too_large"
        assert code(connection.call({"op": "delete", "token": TOKEN, "ids": [1, 2, 3, 4]})) == "too_large"
        assert code(connection.call({"op": "search", "vectors": [[1, 0]] * 4, "k": 1})) == "too_large"
        assert code(connection.call({"op": "search", "vector": [1, 0], "k": 6})) == "too_large"
        assert code(connection.call({"op": "search", "vector": [1, 0], "k": 5})) == "ok"
        assert (
            code(
                connection.call(
                    {"op": "search", "vector": [1, 0], "k": 2, "filter": {"tags_any": ["a", "b", "c", "d"]}}
                )
            )
            == "too_large"
        )
        assert code(connection.call({**upsert, "items": [item("i" * 513)]})) == "too_large"
        assert code(connection.call({**upsert, "items": [item("i" * 512)]})) == "ok"
        assert code(connection.call({"op": "recommend", "history": [0], "prompt": "p" * 900})) == "ok"


def test_store_and_model_limits_at_default_batch(binary: str) -> None:
    workdir = tempfile.mkdtemp(prefix="steer-limits-")
    server = Server(
        binary,
        str(Path(workdir) / "data"),
        ["--dimension", "2", "--admin-token", TOKEN, "--public-reads", "true"],
    )
    try:
        with Connection(server.port) as connection:
            upsert = {"op": "upsert", "token": TOKEN}
            assert code(connection.call({**upsert, "items": [item(1, title="t" * 4097)]})) == "too_large"
            assert code(connection.call({**upsert, "items": [item(1, title="t" * 4096)]})) == "ok"
            assert (
                code(connection.call({**upsert, "items": [item(1, tags=[f"g{n}" for n in range(257)])]}))
                == "too_large"
            )
            assert code(connection.call({**upsert, "items": [item(1, tags=["g" * 129])]})) == "too_large"
            assert (
                code(connection.call({**upsert, "items": [item(1, attributes={"a": "v" * 70_000})]}))
                == "too_large"
            )
            assert (
                code(connection.call({"op": "recommend", "history": [1], "prompt": "p" * 4097}))
                == "too_large"
            )
            assert code(connection.call({"op": "recommend", "history": [1] * 1001})) == "too_large"
            assert code(connection.call({"op": "recommend", "history": [1], "k": 1})) == "ok"
    finally:
        server.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def test_admin_token_guards_every_write(server: Server) -> None:
    with Connection(server.port) as connection:
        for request in (
            {"op": "upsert", "items": [item(9)]},
            {"op": "delete", "ids": [9]},
            {"op": "swap", "generation": "g"},
        ):
            assert code(connection.call(request)) == "unauthorized"
            assert code(connection.call({**request, "token": TOKEN + "x"})) == "unauthorized"
            assert code(connection.call({**request, "token": TOKEN[:-1]})) == "unauthorized"
            assert code(connection.call({**request, "token": ""})) == "unauthorized"
        assert connection.call({"op": "get", "ids": [9]})["missing"] == [9]
        assert code(connection.call({"op": "upsert", "token": TOKEN, "items": [item(9)]})) == "ok"
        assert code(connection.call({"op": "delete", "token": TOKEN, "ids": [9]})) == "ok"


def test_connection_limit_and_in_flight_pipelining(server: Server) -> None:
    held = [Connection(server.port) for _ in range(4)]
    try:
        for connection in held:
            assert code(connection.call({"op": "ping"})) == "ok"
        extra = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        received = b""
        while chunk := extra.recv(4096):
            received += chunk
        extra.close()
        assert b'"unavailable"' in received and received.count(b"\n") == 1
        # 200 pipelined requests with at most 2 in flight: all answered, in order.
        pipelined = held[0]
        pipelined.send(b"".join(b'{"id":%d,"op":"search","vector":[1,0],"k":1}\n' % n for n in range(200)))
        assert [pipelined.read()["id"] for _ in range(200)] == list(range(200))
    finally:
        for connection in held:
            connection.close()


def test_idle_connection_is_closed(server: Server) -> None:
    with Connection(server.port) as connection:
        assert code(connection.call({"op": "ping"})) == "ok"
        started = time.monotonic()
        connection.sock.settimeout(10)
        assert connection.sock.recv(1) == b""
        assert 0.5 < time.monotonic() - started < 5


def test_closed_connections_free_their_slot_at_once(server: Server) -> None:
    """A client that closes (FIN) after its answers must not hold one of the 4 connection slots: 40
    connect-ask-close rounds in quick succession all get served, none is refused."""
    for round_number in range(40):
        with Connection(server.port) as connection:
            assert connection.call({"id": round_number, "op": "ping"}) == {"id": round_number, "ok": True}
    # Half-closed with an unanswered request: the answer still arrives, then the server closes.
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(b'{"id":"last","op":"ping"}\n')
    sock.shutdown(socket.SHUT_WR)
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    sock.close()
    assert received == b'{"id":"last","ok":true}\n'
    with Connection(server.port) as connection:
        stats = connection.call({"op": "stats"})
    assert stats["server"]["connections_refused"] == 0
