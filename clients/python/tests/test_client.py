"""Tests of steer_client against the built `steer` binary (STEER_BIN, default: the repository's
.build/debug/steer). A missing binary fails the tests; they never skip."""

from __future__ import annotations

import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from steer_client import Hits, SteerClient, SteerError, encode_vector_b64

REPO = Path(__file__).resolve().parents[3]
TOKEN = "py-token"


def steer_binary() -> str:
    path = os.environ.get("STEER_BIN") or str(REPO / ".build" / "debug" / "steer")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(
            f"steer binary not found at {path}: build it (swift build) or set STEER_BIN", pytrace=False
        )
    return path


@pytest.fixture()
def server():
    directory = tempfile.mkdtemp(prefix="steer-py-")
    process = subprocess.Popen(
        [
            steer_binary(),
            "serve",
            "--port",
            "0",
            "--data",
            os.path.join(directory, "data"),
            "--dimension",
            "3",
            "--admin-token",
            TOKEN,
            "--public-reads",
            "true",
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    line = process.stdout.readline().decode()
    if not line.startswith("listening on "):
        process.kill()
        pytest.fail(f"server did not start: {line!r} {process.stderr.read().decode()}")
    port = int(line.strip().rsplit(":", 1)[1])
    yield process, port
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    shutil.rmtree(directory, ignore_errors=True)


def dot(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_round_trip_of_every_operation(server):
    _, port = server
    rng = random.Random(1)
    items = [
        {
            "id": i if i % 2 else f"s{i}",
            "vector": [rng.uniform(-1, 1) for _ in range(3)],
            "tags": ["even"] if i % 2 == 0 else [],
            "title": f"t{i}",
        }
        for i in range(60)
    ]
    with SteerClient(port=port, token=TOKEN) as steer:
        steer.ping()
        assert steer.upsert(items) == 60
        query = [0.2, -0.5, 0.9]
        expected = sorted(items, key=lambda item: -dot(item["vector"], query))[:5]
        hits = steer.search(query, k=5)
        assert [hit["id"] for hit in hits] == [item["id"] for item in expected]
        assert (
            hits.generation == steer.stats()["generation"] and not hits.partial and hits.missing_shards == []
        )
        assert math.isclose(hits[0]["score"], dot(expected[0]["vector"], query), rel_tol=1e-5)
        assert [hit["id"] for hit in steer.search(query, k=5, b64=True)] == [item["id"] for item in expected]
        even = steer.search(query, k=5, tags_any=["even"])
        assert all("even" in hit["tags"] for hit in even)
        assert [[h["id"] for h in r] for r in steer.search_batch([query, query], k=2)] == [
            [e["id"] for e in expected[:2]]
        ] * 2
        got = steer.get(["s0", 999])
        assert got[0]["title"] == "t0" and len(got) == 1
        rec = steer.recommend(["s0", 1, "ghost"], k=3)
        assert rec["unknown_history"] == ["ghost"] and len(rec["hits"]) == 3
        assert all(hit["id"] not in ("s0", 1) for hit in rec["hits"])
        assert len(steer.encode(["s0"])) == 3
        assert steer.delete(["s0", "nope"]) == 1
        assert steer.stats()["items"] == 59


def test_errors_carry_codes_and_the_connection_survives(server):
    _, port = server
    with SteerClient(port=port) as steer:
        with pytest.raises(SteerError) as error:
            steer.upsert([{"id": 1, "vector": [1, 2, 3]}])
        assert error.value.code == "unauthorized"
        with pytest.raises(SteerError) as error:
            steer.search([1, 2], k=3)
        assert error.value.code == "dimension_mismatch"
        with pytest.raises(SteerError) as error:
            steer.request("nope")
        assert error.value.code == "unknown_op"
        assert steer.send_raw(b"{broken")["error"]["code"] == "parse_error"
        assert (
            steer.send_raw(b'{"op":"search","vector":[1,NaN,2],"k":1}')["error"]["code"] == "invalid_request"
        )
        steer.ping()


def test_pipelined_responses_keep_request_order(server):
    _, port = server
    with SteerClient(port=port, token=TOKEN) as steer:
        steer.upsert([{"id": i, "vector": [1.0, float(i), 0.0]} for i in range(10)])
        responses = steer.pipeline({"id": i, "op": "search", "vector": [0, 1, 0], "k": 1} for i in range(300))
        assert [response["id"] for response in responses] == list(range(300))
        assert all(response["hits"][0]["id"] == 9 for response in responses)


def test_sigterm_answers_what_was_sent_and_exits_zero(server):
    process, port = server
    with SteerClient(port=port, token=TOKEN) as steer:
        steer.upsert([{"id": 1, "vector": [1, 0, 0]}])
        payload = b"".join(
            SteerClient._line({"id": i, "op": "search", "vector": [1, 0, 0], "k": 1}) for i in range(200)
        )
        steer._sock.sendall(payload)
        process.send_signal(signal.SIGTERM)
        ids = [steer._read()["id"] for _ in range(200)]
        assert ids == list(range(200))
    assert process.wait(timeout=30) == 0


def test_vector_b64_is_little_endian_float32():
    assert encode_vector_b64([1.0]) == "AACAPw=="


def test_search_answers_keep_partial_and_missing_shards():
    # A router's partial answer (docs/protocol.md "Through a router"), served by a one-shot fake server:
    # search() and search_batch() must not drop what the response says about itself.
    import socket
    import threading

    answers = [
        b'{"ok":true,"hits":[{"id":1,"score":0.5}],"generation":"g2","partial":true,"missing_shards":[1,3]}\n',
        b'{"ok":true,"results":[[{"id":2,"score":0.1}],[]],"generation":"g2","partial":true,"missing_shards":[0]}\n',
    ]
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        connection, _ = listener.accept()
        reader = connection.makefile("rb")
        for answer in answers:
            reader.readline()
            connection.sendall(answer)
        connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with SteerClient(port=port) as steer:
        hits = steer.search([1.0, 0.0], k=1)
        assert isinstance(hits, Hits) and hits == [{"id": 1, "score": 0.5}]
        assert hits.partial and hits.missing_shards == [1, 3] and hits.generation == "g2"
        batch = steer.search_batch([[1.0, 0.0], [0.0, 1.0]], k=1)
        assert [list(h) for h in batch] == [[{"id": 2, "score": 0.1}], []]
        assert all(h.partial and h.missing_shards == [0] for h in batch)
    thread.join(timeout=5)
    listener.close()


def test_collections_and_aliases(server):
    _, port = server
    with SteerClient(port=port, token=TOKEN) as admin:
        created = admin.create_collection("books", 2, metric="l2")
        assert (created["name"], created["dimension"], created["metric"]) == ("books", 2, "l2")
        assert admin.alias("reading", "books") is None
        with SteerClient(port=port, token=TOKEN, collection="reading") as reading:
            assert reading.upsert([{"id": "b1", "vector": [3, 4], "title": "Dune"}]) == 1
            hits = reading.search([3, 3], k=1)
            assert [hit["id"] for hit in hits] == ["b1"]
            assert hits.collection == "books"
            assert reading.stats()["collection"] == "books"
        assert admin.search([1, 0, 0], k=1).collection == "default"
        listed = admin.list_collections()
        assert [entry["name"] for entry in listed["collections"]] == ["default", "books"]
        assert listed["aliases"] == {"reading": "books"}
        with pytest.raises(SteerError) as refused:
            admin.drop_collection("books")
        assert refused.value.code == "in_use"
        assert admin.delete_alias("reading") == "books"
        admin.drop_collection("books")
        with pytest.raises(SteerError) as gone:
            admin.describe_collection("books")
        assert gone.value.code == "not_found"


def test_filter_expressions_and_explain(server):
    """A filter expression with attributes reaches the server; results equal brute force over the matches."""
    from steer_client import Filter

    _, port = server
    rng = random.Random(2)
    items = [
        {
            "id": i,
            "vector": [rng.uniform(-1, 1) for _ in range(3)],
            "tags": ["comedy"] if i % 3 == 0 else ["drama"],
            "attributes": {"year": 1950 + i % 70, "specs": {"lang": "fr" if i % 2 else "en"}},
        }
        for i in range(300)
    ]
    expression = Filter.and_(
        Filter.attr("year", gte=1990, lt=2005),
        Filter.or_(Filter.tag("comedy"), Filter.attr("specs.lang", in_=["fr"])),
        Filter.not_(Filter.attr("year", eq=2000)),
    )

    def passes(item: dict) -> bool:
        year = item["attributes"]["year"]
        fr = item["attributes"]["specs"]["lang"] == "fr"
        return 1990 <= year < 2005 and ("comedy" in item["tags"] or fr) and year != 2000

    with SteerClient(port=port, token=TOKEN) as steer:
        assert steer.upsert(items) == 300
        query = [0.3, 0.1, -0.7]
        expected = sorted(
            (item for item in items if passes(item)), key=lambda item: -dot(item["vector"], query)
        )[:10]
        hits = steer.search(query, k=10, filter=expression, explain=True)
        assert [hit["id"] for hit in hits] == [item["id"] for item in expected]
        assert hits.explain["plan"] == "exact"
        assert hits.explain["matches"] == sum(1 for item in items if passes(item))
        assert steer.stats()["plans"]["exact"] >= 1
        assert hits.explain["scanned_records"] == 300
        # A payload index (admin op) answers the year leaves without reading records: same hits.
        assert hits.explain["cached_filter"] is False  # 300 items: below the filter cache's minimum
        declared = steer.declare_index("year", "numeric")
        assert declared["entries"] == 300 and declared["kind"] == "numeric"
        indexed = steer.search(query, k=10, filter=expression, explain=True)
        assert [hit["id"] for hit in indexed] == [item["id"] for item in expected]
        assert indexed.explain["scanned_records"] < 300
        with SteerClient(port=port) as anonymous, pytest.raises(SteerError) as refused:
            anonymous.request("declare_index", attr="specs.lang", kind="keyword")
        assert refused.value.code == "unauthorized"
        with pytest.raises(SteerError) as error:
            steer.search(query, k=10, filter=Filter.and_(Filter.attr("year", gte="1990")))
        assert error.value.code == "invalid_request"
        assert "filter.and[0].gte: expected a number" in str(error.value)
    with pytest.raises(ValueError):
        Filter.attr("year", like=1)
