#!/usr/bin/env python3
"""The demo's retraining step (scripts/demo.sh, step 6), over Steer's TCP protocol (stdlib only):

1. the demo users' histories (the checkpoint's training data) are sent as `event`s, as a deployed
   server would have them;
2. for `--seconds`, simulated users send live events: a trend, eight items few users had watched,
   watched in one order (each simulated user gets through 3 to 8 of them); at the end the demo user
   watches the first two;
3. the demo user's recommendations by `user` (the stored history) are taken;
4. `scripts/retrain.py --warm-start` runs the loop (export, training warm-started from the live
   checkpoint, the gate, ingest, build, verify, swap);
5. the demo user's recommendations are taken again and the change explained: where the next item of
   the trend ranks before and after.

    python3 scripts/demo_retrain.py --port P --token-file KEY --checkpoint CKPT --data DATA \\
        --root DIR --steer BIN [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from demo_queries import Connection

TREND_LENGTH = 8
#: Events per `event` call (well under the server's `max_batch`).
BATCH = 500


def histories(path: Path) -> dict[str, list[tuple[int, Any]]]:
    """Per user, (timestamp in ms, item) oldest first, from the demo data's interactions.csv."""
    out: dict[str, list[tuple[int, Any]]] = {}
    lines = path.read_text().splitlines()
    for line in lines[1:]:
        user, item, ts = line.split(",")[:3]
        out.setdefault(user, []).append((int(float(ts) * 1000), int(item) if item.isdigit() else item))
    for events in out.values():
        events.sort(key=lambda e: e[0])
    return out


def rank_of(hits: list[dict[str, Any]], item: Any) -> int | None:
    return next((n for n, hit in enumerate(hits, 1) if hit["id"] == item), None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--token-file", required=True)
    ap.add_argument("--checkpoint", required=True, help="the live checkpoint (its data/ holds the demo data)")
    ap.add_argument("--data", required=True, help="the server's data directory")
    ap.add_argument(
        "--root", required=True, help="the server's checkpoint root (retrained checkpoints go here)"
    )
    ap.add_argument("--steer", required=True, help="the steer binary (steer-index beside it)")
    ap.add_argument("--steer-train", default=f"{shlex.quote(sys.executable)} -m steer_train.cli")
    ap.add_argument("--seconds", type=float, default=60.0, help="how long simulated users send events")
    ap.add_argument("--simulated", type=int, default=300, help="simulated users following the trend")
    ap.add_argument("--user", default="u1", help="the demo user")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--train-args",
        default="--epochs1 10 --eval-every 5 --patience 1 --epochs2 2 --epochs3 2",
        help="steer-train run options (warm-started from the live checkpoint)",
    )
    a = ap.parse_args()
    token = Path(a.token_file).read_text().strip()
    ckpt = Path(a.checkpoint)
    rng = random.Random(0)
    conn = Connection(a.host, a.port)

    def admin(request: dict[str, Any]) -> dict[str, Any]:
        return conn.call({**request, "token": token})

    # 1. The stored histories a deployed server would have.
    users = histories(ckpt / "data" / "interactions.csv")
    if a.user not in users:
        sys.exit(f"user {a.user!r} is not in the demo data")
    backfill = [{"user": u, "item": item, "ts": ts} for u, events in users.items() for ts, item in events]
    t0 = time.time()
    for start in range(0, len(backfill), BATCH):
        admin({"op": "event", "events": backfill[start : start + BATCH]})
    print(f"stored the histories of {len(users)} users ({len(backfill)} events) in {time.time() - t0:.1f} s")

    # 2. A trend: the least watched items, watched in one order by the simulated users.
    titles = {}
    for line in (ckpt / "items.jsonl").read_text().splitlines():
        o = json.loads(line)
        titles[o["id"]] = f"{o.get('title', o['id'])} [{', '.join(o.get('tags', []))}]"
    popularity = {item: 0 for item in titles}
    for events in users.values():
        for _, item in events:
            popularity[item] = popularity.get(item, 0) + 1
    seen = {item for _, item in users[a.user]}
    trend = sorted((i for i in titles if i not in seen), key=lambda i: (popularity[i], str(i)))[:TREND_LENGTH]
    followers = rng.sample(sorted(u for u in users if u != a.user), min(a.simulated, len(users) - 1))
    steps = [(k, u) for u in followers for k in range(rng.randint(3, TREND_LENGTH))]
    steps.sort(key=lambda s: (s[0], rng.random()))  # everyone watches the first, then the second, …
    print(f"\nfor {a.seconds:.0f} s, {len(followers)} simulated users watch a trend, in this order:")
    for n, item in enumerate(trend, 1):
        print(f"  {n}. {titles[item]}   (watched by {popularity[item]} users before)")
    ticks = max(1, int(a.seconds * 2))
    sent = 0
    t0 = time.time()
    for tick in range(ticks):
        chunk = steps[len(steps) * tick // ticks : len(steps) * (tick + 1) // ticks]
        now = int(time.time() * 1000)
        batch = [{"user": u, "item": trend[k], "ts": now + k} for k, u in chunk]
        if tick == ticks - 1:  # the demo user starts the trend
            batch += [
                {"user": a.user, "item": trend[0], "ts": now},
                {"user": a.user, "item": trend[1], "ts": now + 1},
            ]
        if batch:
            admin({"op": "event", "events": batch})
            sent += len(batch)
        time.sleep(max(0.0, t0 + (tick + 1) * a.seconds / ticks - time.time()))
    print(f"sent {sent} live events in {time.time() - t0:.0f} s; {a.user} just watched the first two")

    # 3. Before.
    nxt = trend[2]
    before = conn.call({"op": "recommend", "user": a.user, "k": 50})
    # 4. The loop.
    root = Path(a.root)
    command = [
        sys.executable, str(Path(__file__).with_name("retrain.py")), "--server", f"{a.host}:{a.port}",
        "--token-file", a.token_file, "--data", a.data, "--live-checkpoint", str(ckpt),
        "--checkpoint-root", str(root), "--work", str(root / "retrain-work"), "--warm-start",
        "--margin", "0.05", "--threads", str(a.threads), "--steer", a.steer, "--steer-train", a.steer_train,
        "--train-args", a.train_args,
    ]  # fmt: skip
    print(f"\n$ {shlex.join(command)}", flush=True)
    t0 = time.time()
    result = subprocess.run(command, check=False)
    print(f"retrain exited {result.returncode} after {time.time() - t0:.0f} s")
    if result.returncode == 3:
        print("the gate refused the new model: the old generation keeps serving (docs/operations.md)")
        return 0
    if result.returncode != 0:
        return 1
    # 5. After, and what changed.
    after = conn.call({"op": "recommend", "user": a.user, "k": 50})
    state = json.loads((root / "retrain-work" / "state.json").read_text())
    (root / "serving-checkpoint").write_text(state["outputs"]["checkpoint"] + "\n")
    print(
        f"\n{a.user}'s top 10 by `user` (the stored history), generation {before['generation']} → {after['generation']}:"
    )
    for n in range(10):
        left, right = before["hits"][n]["id"], after["hits"][n]["id"]
        print(
            f"  {n + 1:2}. {'*' if left in trend else ' '}{titles[left]:<44} {'*' if right in trend else ' '}{titles[right]}"
        )
    rb, ra = rank_of(before["hits"], nxt), rank_of(after["hits"], nxt)

    def show(rank: int | None) -> str:
        return f"at rank {rank}" if rank else "not in the top 50"

    print(
        f"\n(* = a trend item.) {a.user} had just watched the trend's first two items. The live model had"
        f"\nnever seen the trend: its third item, {titles[nxt]}, was {show(rb)}."
        + (
            f"\nThe retrained model learned from the last minute's events that it follows the second: it is"
            f"\nnow {show(ra)}."
            if ra is not None and (rb is None or ra < rb)
            else f"\nThe retrained model did not move it up: it is {show(ra)}."
        )
        + "\nThe gate compared both models on each user's most recent event first"
        f"\n({state['outputs']['metric']['name']}: live {state['outputs']['metric']['live']:.4f},"
        f" new {state['outputs']['metric']['new']:.4f})."
    )
    moved = len({h["id"] for h in after["hits"][:10]} - {h["id"] for h in before["hits"][:10]})
    print(f"{moved} of the top 10 changed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
