"""`steer export` beside a live server: the catalog and the stored histories in the trainer's generic
format, read back with the trainer's own loader (Tools/train/steer_train/data.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import Connection, Server

TOKEN = "export-token"
TRAIN = Path(__file__).resolve().parents[2] / "Tools" / "train"


def test_export_writes_the_generic_format_beside_a_live_server(binary: str) -> None:
    with tempfile.TemporaryDirectory() as root:
        data = str(Path(root) / "data")
        out = Path(root) / "export"
        server = Server(binary, data, ["--dimension", "4", "--admin-token", TOKEN])
        try:
            with Connection(server.port) as connection:
                items = [
                    {
                        "id": i,
                        "vector": [float(i), 1.0, 0.0, -1.0],
                        "title": f'Item "{i}"',
                        "tags": ["even" if i % 2 == 0 else "odd"],
                    }
                    for i in range(6)
                ] + [{"id": "s1", "vector": [0.5, 0.5, 0.5, 0.5], "tags": []}]
                assert connection.call({"op": "upsert", "token": TOKEN, "items": items})["ok"]
                events = [
                    {"user": "alice", "item": 3, "ts": 20},
                    {"user": "alice", "item": 1, "ts": 10},
                    {"user": "alice", "item": 99, "ts": 15},
                    {"user": 7, "item": "s1", "ts": 5},
                    {"user": 7, "item": 2, "ts": 5},
                    {"user": "bob", "item": 4, "ts": 1},
                ]
                answer = connection.call({"op": "event", "token": TOKEN, "events": events})
                assert answer["ok"] and answer["recorded"] == 6 and answer["unknown_items"] == [99]
                # The server keeps serving (and holding the store) while the export reads it.
                result = subprocess.run(
                    [binary, "export", "--data", data, "--out", str(out)],
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
                assert result.returncode == 0, result.stderr
                assert connection.call({"op": "get_user", "token": TOKEN, "user": "bob"})["ok"]
        finally:
            server.terminate()

        catalog = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
        assert [item["id"] for item in catalog] == [0, 1, 2, 3, 4, 5, "s1"]
        assert catalog[3] == {"id": 3, "title": 'Item "3"', "tags": ["odd"]}
        assert catalog[6] == {"id": "s1", "tags": []}
        interactions = [json.loads(line) for line in (out / "interactions.jsonl").read_text().splitlines()]
        by_user: dict[str, list[tuple[object, int]]] = {}
        for row in interactions:
            by_user.setdefault(str(row["user"]), []).append((row["item"], row["timestamp"]))
        # Oldest first, the unknown item 99 left out, ties in arrival order.
        assert by_user == {"alice": [(1, 10), (3, 20)], "7": [("s1", 5), (2, 5)], "bob": [(4, 1)]}
        summary = json.loads((out / "export.json").read_text())
        assert summary["items"] == 7 and summary["interactions"] == 5 and summary["users"] == 3
        assert summary["skipped_unknown_items"] == 1 and summary["store_sequence"] > 0

        # The trainer's loader accepts the export as it is.
        check = (
            "import sys; from steer_train.data import load_generic; "
            "ds = load_generic(sys.argv[1] + '/interactions.jsonl', sys.argv[1] + '/items.jsonl'); "
            "print(len(ds.sequences), ds.n_items)"
        )
        loaded = subprocess.run(
            [sys.executable, "-c", check, str(out)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={"PYTHONPATH": str(TRAIN), "PATH": "/usr/bin:/bin"},
        )
        assert loaded.returncode == 0, loaded.stderr
        assert loaded.stdout.split() == ["3", "7"]
