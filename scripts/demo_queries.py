#!/usr/bin/env python3
"""The demo's queries: one user's top 10 with no prompt and with steering prompts, over Steer's TCP
protocol (stdlib only). Used by scripts/demo.sh; runnable by hand against any running server:

    python3 scripts/demo_queries.py --port 7700 --interactions demo-data/checkpoint/data/interactions.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import socket
import sys
from typing import Any

PROMPTS: list[tuple[str, str | None, str]] = [
    ("no prompt", None, "soft"),
    ("positive", "more comedy please", "soft"),
    (
        "positive in the user's own words (names no tag: the model alone steers)",
        "something to make me laugh",
        "soft",
    ),
    ("negative", "no horror", "soft"),
    ("compound", "something with sci-fi, but no romance", "soft"),
    (
        "compound, hybrid constraints (steering plus hard tag filters)",
        "something with sci-fi, but no romance",
        "hybrid",
    ),
]
SIGN = {"positive": "+", "negative": "−"}


def history_of(path: str, user: str, last: int) -> list[Any]:
    """The user's items in timestamp order (file order on ties), most recent `last` kept."""
    rows: list[tuple[float, int, Any]] = []
    with open(path, newline="") as fh:
        for n, row in enumerate(csv.DictReader(fh)):
            if row["user"] == user:
                item: Any = (
                    int(row["item"])
                    if row["item"].lstrip("-").isdigit()
                    else row["item"]
                )
                rows.append((float(row["timestamp"]), n, item))
    if not rows:
        sys.exit(f"user {user!r} has no interactions in {path}")
    rows.sort()
    return [item for _, _, item in rows][-last:]


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=30)
        self.reader = self.sock.makefile("rb")
        self.next_id = 0

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        request = {"id": self.next_id, **request}
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        line = self.reader.readline()
        if not line:
            sys.exit("server closed the connection")
        response: dict[str, Any] = json.loads(line)
        if not response.get("ok"):
            sys.exit(f"request {request['op']} failed: {response.get('error')}")
        return response


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument(
        "--interactions", required=True, help="interactions.csv of the demo data"
    )
    ap.add_argument("--user", default="u1")
    ap.add_argument(
        "--history", type=int, default=20, help="most recent items sent as the history"
    )
    ap.add_argument("--k", type=int, default=10)
    a = ap.parse_args()

    history = history_of(a.interactions, a.user, a.history)
    conn = Connection(a.host, a.port)
    items = conn.call({"op": "get", "ids": history[-5:]})["items"]
    print(f"user {a.user}: {len(history)} most recent items; the last five:")
    for item in items:
        if item:
            print(
                f"    {item.get('title', item['id'])!s:<32} [{', '.join(item.get('tags', []))}]"
            )
    for label, prompt, constraints in PROMPTS:
        request: dict[str, Any] = {
            "op": "recommend",
            "history": history,
            "k": a.k,
            "constraints": constraints,
        }
        if prompt is not None:
            request["prompt"] = prompt
        response = conn.call(request)
        heard = "; ".join(
            f"{SIGN.get(c['polarity'], c['polarity'])}{c['text']} → {', '.join(c.get('tags') or []) or 'no tag'}"
            for c in response.get("clauses", [])
        )
        title = f"{label}" + (f': "{prompt}"' if prompt else "")
        print(f"\n{title}" + (f"   (heard: {heard})" if heard else ""))
        for rank, hit in enumerate(response["hits"], 1):
            tags = ", ".join(hit.get("tags", []))
            print(
                f"  {rank:2}. {hit.get('title', hit['id'])!s:<32} {hit['score']:8.3f}  [{tags}]"
            )


if __name__ == "__main__":
    main()
