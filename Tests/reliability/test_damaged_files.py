"""The saved index and its metadata are untrusted input: a damaged `index/index.bin` or `index/index.json`
must never crash `steer serve` or make it serve a wrong index — it rebuilds from the store
(docs/configuration.md "Data directory") — and a damaged `steer.json` must stop it with a clear error."""

from __future__ import annotations

import json
import random
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import Connection, HarnessError, Server

TOKEN = "files-token"
ARGUMENTS = ["--dimension", "4", "--metric", "l2", "--admin-token", TOKEN, "--public-reads", "true"]


def vector(n: int) -> list[float]:
    return [float(n), 1.0, -2.0, 0.5 * n]


def upsert(port: int, ids: range) -> None:
    with Connection(port) as connection:
        items = [{"id": n, "vector": vector(n)} for n in ids]
        assert connection.call({"op": "upsert", "token": TOKEN, "items": items})["ok"] is True


@pytest.fixture(scope="module")
def saved(binary: str) -> Iterator[Path]:
    """A data directory with items 0..59 and its index saved at shutdown, plus `stale-index/`: the index
    files saved when only items 0..39 existed."""
    workdir = Path(tempfile.mkdtemp(prefix="steer-files-"))
    data = workdir / "data"
    server = Server(binary, str(data), ARGUMENTS)
    upsert(server.port, range(40))
    assert server.terminate() == 0
    shutil.copytree(data / "index", workdir / "stale-index")
    server = Server(binary, str(data), ARGUMENTS)
    upsert(server.port, range(40, 60))
    assert server.terminate() == 0
    yield data
    shutil.rmtree(workdir, ignore_errors=True)


def serves_every_item(binary: str, data: Path) -> None:
    server = Server(binary, str(data), ARGUMENTS)
    try:
        with Connection(server.port) as connection:
            stats = connection.call({"op": "stats"})
            assert (stats["items"], stats["indexed"]) == (60, 60), stats
            for n in range(0, 60, 7):
                hits = connection.call({"op": "search", "vector": vector(n), "k": 1})["hits"]
                assert hits[0]["id"] == n
    finally:
        assert server.terminate() == 0, server.stderr_tail()


def overwrite(offset: int, data: bytes) -> Callable[[bytes], bytes]:
    return lambda content: content[:offset] + data + content[offset + len(data) :]


INDEX_DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda content: b"",
    "truncated_half": lambda content: content[: len(content) // 2],
    "truncated_header": lambda content: content[:40],
    "random_same_size": lambda content: random.Random(1).randbytes(len(content)),
    "dimension_huge": overwrite(16, struct.pack("<q", 2**40)),
    "count_huge": overwrite(32, struct.pack("<q", 2**40)),
    "header_negative": overwrite(16, struct.pack("<q", -1) * 3),
    "spec_length_huge": overwrite(56, struct.pack("<q", 2**50)),
    "body_flipped": lambda content: content[:200] + bytes(b ^ 0xFF for b in content[200:400]) + content[400:],
    "garbage_appended": lambda content: content + b"\x00" * 1000,
}


@pytest.mark.parametrize("damage", list(INDEX_DAMAGE))
def test_damaged_index_file_is_rebuilt(binary: str, saved: Path, damage: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(saved, data)
    path = data / "index" / "index.bin"
    path.write_bytes(INDEX_DAMAGE[damage](path.read_bytes()))
    serves_every_item(binary, data)


JSON_DAMAGE: dict[str, Callable[[dict], object]] = {
    "not_json": lambda meta: "{{{",
    "sequence_zero": lambda meta: {**meta, "sequence": 0},
    "sequence_huge": lambda meta: {**meta, "sequence": 2**62},
    "sequence_negative": lambda meta: {**meta, "sequence": -5},
    "sequence_string": lambda meta: {**meta, "sequence": "160"},
    "other_spec": lambda meta: {**meta, "index_spec": "HNSW32"},
    "other_version": lambda meta: {**meta, "embedding_version": "v0"},
    "missing_fields": lambda meta: {"format": 1},
}


@pytest.mark.parametrize("damage", list(JSON_DAMAGE))
def test_damaged_index_metadata_is_not_trusted(binary: str, saved: Path, damage: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(saved, data)
    path = data / "index" / "index.json"
    changed = JSON_DAMAGE[damage](json.loads(path.read_text()))
    path.write_text(changed if isinstance(changed, str) else json.dumps(changed))
    serves_every_item(binary, data)


def test_stale_index_with_newer_store_is_caught_up(binary: str, saved: Path, tmp_path: Path) -> None:
    """index/ restored from an older backup (a consistent index.bin + index.json pair at 40 items) next to
    a store with 60: the start must not serve the 40-item index as if it were current."""
    data = tmp_path / "data"
    shutil.copytree(saved, data)
    shutil.rmtree(data / "index")
    shutil.copytree(saved.parent / "stale-index", data / "index")
    serves_every_item(binary, data)


def test_stale_index_claiming_a_future_sequence_is_rebuilt(binary: str, saved: Path, tmp_path: Path) -> None:
    """The 40-item index restored next to a 60-item store, its `index.json` claiming a sequence the store
    never reached: replaying "nothing after it" would serve 40 items; the start must rebuild instead
    (docs/operations.md "Recovery and trust in metadata")."""
    data = tmp_path / "data"
    shutil.copytree(saved, data)
    shutil.rmtree(data / "index")
    shutil.copytree(saved.parent / "stale-index", data / "index")
    meta_path = data / "index" / "index.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "sequence": 2**40}))
    serves_every_item(binary, data)


def test_saved_index_of_another_store_is_rebuilt(binary: str, saved: Path, tmp_path: Path) -> None:
    """`index/` copied from another data directory (same ids and sequence numbers, other vectors):
    its `store_id` is not this store's, so it is not served."""
    other = tmp_path / "other"
    server = Server(binary, str(other), ARGUMENTS)
    with Connection(server.port) as connection:
        for start in (0, 40):
            items = [
                {"id": n, "vector": [-v for v in vector(n)]}
                for n in range(start, start + (40 if start == 0 else 20))
            ]
            assert connection.call({"op": "upsert", "token": TOKEN, "items": items})["ok"] is True
    assert server.terminate() == 0
    data = tmp_path / "data"
    shutil.copytree(saved, data)
    shutil.rmtree(data / "index")
    shutil.copytree(other / "index", data / "index")
    serves_every_item(binary, data)


@pytest.mark.parametrize("reference", ["../outside", "/etc", "link", "g/../../outside", ""])
def test_swap_refuses_paths_outside_the_generations_directory(
    binary: str, saved: Path, reference: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(saved, data)
    (data / "generations" / "g").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (data / "generations" / "link").symlink_to(tmp_path / "outside")
    server = Server(binary, str(data), ARGUMENTS)
    try:
        with Connection(server.port) as connection:
            answer = connection.call({"op": "swap", "token": TOKEN, "generation": reference})
            assert answer["ok"] is False and answer["error"]["code"] == "invalid_request", answer
            assert "generation" in answer["error"]["message"], answer
            answer = connection.call({"op": "swap", "token": TOKEN, "generation": "g", "checkpoint": "/tmp"})
            assert answer["error"]["code"] == "invalid_request", answer
            assert "checkpoint" in answer["error"]["message"], answer
    finally:
        assert server.terminate() == 0, server.stderr_tail()


@pytest.mark.parametrize("content", ["", "{", "[]", '{"dimension":"four"}', '{"dimension":-4,"format":1}'])
def test_damaged_steer_json_stops_with_an_error(
    binary: str, saved: Path, content: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(saved, data)
    (data / "steer.json").write_text(content)
    with pytest.raises(HarnessError) as caught:
        Server(binary, str(data), ARGUMENTS, start_timeout=30).kill()
    message = str(caught.value)
    assert "exited (" in message and "exited (-" not in message, message  # an exit status, not a signal
    assert "steer.json" in message, message


def test_missing_index_directory_is_rebuilt(binary: str, saved: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(saved, data)
    shutil.rmtree(data / "index")
    serves_every_item(binary, data)
    assert (data / "index" / "index.bin").is_file()  # saved again at shutdown
