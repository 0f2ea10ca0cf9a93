"""`steer export --since`: an increment holds exactly the events stored after an earlier export; an
accumulated export (`scripts/retrain.py`'s `accumulate`) brought up to date with it equals a whole export
of the store (nothing lost, nothing twice, deleted users gone); a damaged or edited earlier export is
refused before anything is written."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness import Connection, Server

TOKEN = "increment-token"
REPO = Path(__file__).resolve().parents[2]


def retrain_module() -> Any:
    spec = importlib.util.spec_from_file_location("retrain", REPO / "scripts" / "retrain.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def export(binary: str, data: str, out: Path, since: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [binary, "export", "--data", data, "--out", str(out)]
    if since is not None:
        command += ["--since", str(since)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def rows(directory: Path, name: str = "interactions.jsonl") -> list[tuple[str, str, int]]:
    """(user, item, timestamp) per line, ids as JSON text (1 and "1" differ)."""
    out = []
    for line in (directory / name).read_text().splitlines():
        o = json.loads(line)
        out.append((json.dumps(o["user"]), json.dumps(o["item"]), o["timestamp"]))
    return out


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"fnv1a64:{h:016x}"


def events(user: object, items: list[int], start: int) -> list[dict[str, Any]]:
    return [{"user": user, "item": item, "ts": start + t} for t, item in enumerate(items)]


class Store:
    """A server (per-user cap 6) with a catalog of items 0…19."""

    def __init__(self, binary: str, root: Path) -> None:
        self.data = str(root / "data")
        self.server = Server(
            binary, self.data, ["--dimension", "4", "--admin-token", TOKEN, "--history-cap", "6"]
        )
        self.connection = Connection(self.server.port)
        items = [{"id": i, "vector": [float(i), 1.0, 0.0, -1.0], "tags": ["t"]} for i in range(20)]
        self.call({"op": "upsert", "items": items})

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        answer = self.connection.call({**request, "token": TOKEN})
        assert answer.get("ok"), answer
        return answer  # type: ignore[no-any-return]

    def close(self) -> None:
        self.connection.close()
        self.server.terminate()


def test_an_increment_holds_each_later_event_once_and_accumulates_to_the_whole_export(binary: str) -> None:
    retrain = retrain_module()
    with tempfile.TemporaryDirectory() as root_dir:
        root = Path(root_dir)
        store = Store(binary, root)
        try:
            first = events("a", [1, 2, 3], 100) + events("b", [4, 5], 100) + events("c", [6, 7, 8], 100)
            first += events(7, [9, 19], 100)
            store.call({"op": "event", "events": first})
            whole = export(binary, store.data, root / "A")
            assert whole.returncode == 0, whole.stderr
            summary_a = json.loads((root / "A" / "export.json").read_text())
            assert summary_a["kind"] == "whole" and summary_a["positions"]["users"] == 4

            # After the export: more events for a (one back-dated before all of a's), a new user "7" (a
            # string id beside the integer 7), b deleted, c deleted and started again with one event,
            # d sends 8 events (the cap keeps 6), item 19 deleted from the catalog (7 viewed it).
            later = [*events("a", [10, 11], 200), {"user": "a", "item": 12, "ts": 50}]
            later += events("7", [13], 200) + events("d", [1, 2, 3, 4, 5, 6, 7, 8], 300)
            store.call({"op": "event", "events": later})
            store.call({"op": "delete_user", "user": "b"})
            store.call({"op": "delete_user", "user": "c"})
            store.call({"op": "event", "events": events("c", [14], 400)})
            store.call({"op": "delete", "ids": [19]})

            increment = export(binary, store.data, root / "B", since=root / "A")
            assert increment.returncode == 0, increment.stderr
            got = Counter(rows(root / "B"))
            expected = Counter(
                [
                    ('"a"', "10", 200),
                    ('"a"', "11", 201),
                    ('"a"', "12", 50),
                    ('"7"', "13", 200),
                    ('"c"', "14", 400),
                ]
                + [('"d"', str(i), 300 + i - 1) for i in range(3, 9)]
            )
            assert got == expected, got
            removed = {
                json.dumps(json.loads(line)["user"]) for line in (root / "B" / "removed_users.jsonl").open()
            }
            assert removed == {'"b"', '"c"'}
            summary_b = json.loads((root / "B" / "export.json").read_text())
            assert summary_b["kind"] == "increment" and summary_b["removed_users"] == 2
            assert summary_b["since"]["checksum"] == summary_a["positions"]["checksum"]
            assert summary_b["capped"] == 2  # d's two oldest never reached an export

            # The accumulated export equals a whole export now: every stored event once, b's and c's old
            # events and the deleted item's event gone.
            assert export(binary, store.data, root / "C").returncode == 0
            counts = retrain.accumulate(root / "A", root / "B", root / "ACC")
            assert counts == {"kept": 4, "removed_users": 5, "items_gone": 1, "new": 11}, counts
            assert Counter(rows(root / "ACC")) == Counter(rows(root / "C"))
            assert max(Counter(rows(root / "ACC")).values()) == 1
            acc_summary = json.loads((root / "ACC" / "export.json").read_text())
            assert acc_summary["interactions"] == 15 and acc_summary["kind"] == "accumulated"

            # The accumulated export is itself a valid --since: with nothing new, an empty increment.
            store.call({"op": "event", "events": events("a", [15], 500)})
            again = export(binary, store.data, root / "B2", since=root / "ACC")
            assert again.returncode == 0, again.stderr
            assert rows(root / "B2") == [('"a"', "15", 500)]
            assert (root / "B2" / "removed_users.jsonl").read_text() == ""
            # An increment of another export is refused by the accumulation.
            with pytest.raises(retrain.StepError, match="is not an increment of"):
                retrain.accumulate(root / "A", root / "B2", root / "ACC2")
        finally:
            store.close()


Edit = Callable[[Path], None]


def _summary(**over: object) -> Edit:
    def f(d: Path) -> None:
        doc = json.loads((d / "export.json").read_text())
        doc.update(over)
        (d / "export.json").write_text(json.dumps(doc))

    return f


def _positions(edit: Callable[[list[str]], list[str]], reseal: bool) -> Edit:
    """Edits positions.jsonl; with `reseal` also its checksum and user count in export.json (an edit
    that the checksum alone cannot catch)."""

    def f(d: Path) -> None:
        lines = edit((d / "positions.jsonl").read_text().splitlines())
        data = "".join(line + "\n" for line in lines).encode()
        (d / "positions.jsonl").write_bytes(data)
        if reseal:
            _summary(positions={"users": len(lines), "checksum": fnv1a64(data)})(d)

    return f


def _bump(field: str, by: int) -> Callable[[list[str]], list[str]]:
    def f(lines: list[str]) -> list[str]:
        o = json.loads(lines[0])
        o[field] += by
        return [json.dumps(o), *lines[1:]]

    return f


TAMPERED: dict[str, tuple[Edit, str]] = {
    "positions edited": (_positions(_bump("next", -1), reseal=False), "differs from"),
    "position past the store": (_positions(_bump("next", 5), reseal=True), "past the store's"),
    "history from the future": (_positions(_bump("created", 1000), reseal=True), "past the store's"),
    "user twice": (_positions(lambda ls: [ls[0], *ls], reseal=True), "appears twice"),
    "not a position": (
        _positions(lambda ls: ['{"user": true, "created": 1, "next": 1}', *ls[1:]], reseal=True),
        'not {"user","created","next"}',
    ),
    "count differs": (_positions(lambda ls: ls[:-1], reseal=False), "differs from"),
    "count differs, resealed": (
        lambda d: (
            _positions(lambda ls: ls, reseal=True)(d)
            or _summary(positions={"users": 9, "checksum": fnv1a64((d / "positions.jsonl").read_bytes())})(d)
        ),
        "export.json records 9 users",
    ),
    "another store": (_summary(store_id="0123"), "an export of another store"),
    "sequence from the future": (_summary(store_sequence=1 << 40), "past this store's"),
    "older format": (_summary(positions=None), "no positions"),
    "summary not json": (lambda d: (d / "export.json").write_text("{"), "not a JSON object"),
}


def test_a_damaged_or_edited_earlier_export_is_refused_before_anything_is_written(binary: str) -> None:
    with tempfile.TemporaryDirectory() as root_dir:
        root = Path(root_dir)
        store = Store(binary, root)
        try:
            store.call({"op": "event", "events": events("a", [1, 2], 100) + events("b", [3], 100)})
            assert export(binary, store.data, root / "A").returncode == 0
        finally:
            store.close()
        for n, (case, (edit, message)) in enumerate(TAMPERED.items()):
            old = root / f"old-{n}"
            shutil.copytree(root / "A", old)
            edit(old)
            out = root / f"out-{n}"
            result = export(binary, store.data, out, since=old)
            assert result.returncode == 1 and message in result.stderr, (case, result.stderr)
            assert not (out / "interactions.jsonl").exists(), case
        same = export(binary, store.data, root / "A", since=root / "A")
        assert same.returncode == 1 and "the same directory" in same.stderr


def test_an_interrupted_publish_of_the_accumulated_export_is_finished_by_the_next_run() -> None:
    retrain = retrain_module()
    with tempfile.TemporaryDirectory() as root_dir:
        root = Path(root_dir)
        export_dir, acc = root / "export", root / "acc"
        export_dir.mkdir()
        (export_dir / "export.json").write_text('{"n": 2}')
        assert not retrain.recover_accumulated(acc)  # nothing yet: a whole export comes first
        retrain.publish_accumulated(export_dir, acc)
        assert (acc / "export.json").read_text() == '{"n": 2}'
        # Interrupted between the two renames: acc moved aside, the complete copy beside it.
        (export_dir / "export.json").write_text('{"n": 3}')
        shutil.copytree(export_dir, root / "acc.tmp")
        acc.rename(root / "acc.old")
        assert retrain.recover_accumulated(acc)
        assert (acc / "export.json").read_text() == '{"n": 3}'
        assert not (root / "acc.old").exists() and not (root / "acc.tmp").exists()
        # Interrupted after both renames: only the old copy is left to remove.
        shutil.copytree(acc, root / "acc.old")
        assert retrain.recover_accumulated(acc) and not (root / "acc.old").exists()
