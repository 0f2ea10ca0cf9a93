"""Real recommendation vectors for the benchmarks (docs/benchmarks.md "Real recommendation vectors").

A SASRec backbone trained with Steer's own trainer (``steer_train``, stage 1: next-item training with
early stopping on validation NDCG@10) on Amazon Video Games (SASRec's ``Video.txt``), with a seeded set
of users held out of training entirely. The base vectors are the trained item table (the ``d``-dim
scoring table a Steer server indexes for a no-prompt query); the queries are the user vectors of the
held-out users — the DPR query without a prompt, ``h`` = the backbone's last hidden state over the
user's history (all of their interactions but the last, which is what a recommender would be asked to
predict). Vectors are not normalised: the set is searched by inner product (``distance=ip``), exactly as
Steer ranks items for ``recommend``. Exact top-k ground truth by inner product (ties: lower row first).

Writes ``amazon-video-games-sasrec-<d>-ip.hdf5`` (ann-benchmarks layout: ``train``, ``test``,
``neighbors``, ``distances`` = −inner product) that ``steer-bench run --data`` and the peers read,
``manifest.json`` (the source file's sha256, counts, the held-out users, validation NDCG@10, the seconds
of each stage, ``uptime``) and ``SHA256SUMS``.

    python3 Benchmarks/datasets/sasrec_vectors.py --out /tmp/steer-sasrec
    python3 Benchmarks/datasets/sasrec_vectors.py --out /tmp/x --source tiny.txt --held-out 20 --epochs 2

Nothing here is committed: the data set's licence forbids copying it, and the output is outside the
repository. Training is seeded and runs on ``--threads`` torch threads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from text_embeddings import sha256_file, write_hdf5  # noqa: E402


def exact_top_k_ip(
    base: np.ndarray, queries: np.ndarray, k: int, chunk: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k rows by inner product (ties: the lower row first) and −inner product as distance."""
    k = min(k, base.shape[0])
    neighbors = np.zeros((queries.shape[0], k), dtype=np.int32)
    distances = np.zeros((queries.shape[0], k), dtype=np.float32)
    rows = np.arange(base.shape[0])
    for start in range(0, queries.shape[0], chunk):
        scores = queries[start : start + chunk].astype(np.float64) @ base.T.astype(np.float64)
        for i, row in enumerate(scores):
            order = np.lexsort((rows, -row))[:k]
            neighbors[start + i] = order
            distances[start + i] = -row[order]
    return neighbors, distances


def build(args: argparse.Namespace) -> dict[str, object]:
    try:
        import steer_train  # noqa: F401
    except ImportError:  # not installed: the repository's own copy
        sys.path.insert(0, str(REPO / "Tools" / "train"))
    import torch
    from steer_train.data import EvalCase, Split, load_sasrec_txt
    from steer_train.models import DPR, ModelConfig
    from steer_train.train import TrainConfig, quick_ndcg, train_stage1, user_vectors

    torch.set_num_threads(args.threads)
    seconds: dict[str, float] = {}
    t = time.monotonic()
    source = Path(args.source)
    ds = load_sasrec_txt(source)
    users = list(range(len(ds.sequences)))
    eligible = [u for u in users if len(ds.sequences[u]) >= 3]
    if args.held_out >= len(eligible):
        raise SystemExit(f"--held-out {args.held_out}: only {len(eligible)} users have 3+ interactions")
    held = sorted(random.Random(args.seed).sample(eligible, args.held_out))
    held_set = set(held)
    # Training users: the leave-one-out split (train on seq[:-2], validate on seq[-2]) without the held-out
    # users, who contribute nothing to the model.
    train: list[list[int]] = []
    valid: list[EvalCase] = []
    for u, seq in enumerate(ds.sequences):
        if u in held_set:
            continue
        if len(seq) < 3:
            train.append(list(seq))
            continue
        train.append(seq[:-2])
        valid.append(EvalCase(u, seq[:-2], seq[-2]))
    split = Split(train=train, valid=valid, test=[])
    seconds["load_s"] = round(time.monotonic() - t, 2)

    t = time.monotonic()
    cfg = ModelConfig(backbone="sasrec", n_items=ds.n_items, d=args.d, d_ff=args.d, d_aux=0)
    model = DPR.create(cfg, seed=args.seed)
    tc = TrainConfig(
        seed=args.seed, epochs1=args.epochs, progress=not args.quiet, max_minutes1=args.max_minutes
    )
    losses = train_stage1(model, split, tc)
    seconds["train_s"] = round(time.monotonic() - t, 2)
    valid_ndcg = quick_ndcg(model, valid, ds.n_items)
    # The held-out users' own next-item NDCG@10 (their last item, never seen in training): a check that
    # the queries are real recommendation queries, not noise.
    held_cases = [EvalCase(u, ds.sequences[u][:-1], ds.sequences[u][-1]) for u in held]
    held_ndcg = quick_ndcg(model, held_cases, ds.n_items)

    t = time.monotonic()
    with torch.no_grad():
        base = model.backbone.base_table().detach().numpy().astype(np.float32)
        queries = user_vectors(model, [c.history for c in held_cases]).numpy().astype(np.float32)
    neighbors, distances = exact_top_k_ip(base, queries, args.truth_k)
    seconds["truth_s"] = round(time.monotonic() - t, 2)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"amazon-video-games-sasrec-{args.d}-ip.hdf5"
    write_hdf5(out / name, base, queries, neighbors, distances, {"distance": "ip"})
    files = {name: sha256_file(out / name)}
    (out / "SHA256SUMS").write_text("".join(f"{h}  {n}\n" for n, h in sorted(files.items())))
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    manifest: dict[str, object] = {
        "command": " ".join([sys.executable, *sys.argv]),
        "source": str(source),
        "source_sha256": sha256_file(source),
        "users": len(ds.sequences),
        "items": ds.n_items,
        "interactions": sum(len(s) for s in ds.sequences),
        "held_out_users": len(held),
        "held_out_sha256": hashlib.sha256(",".join(map(str, held)).encode()).hexdigest(),
        "seed": args.seed,
        "dimension": args.d,
        "epochs_trained": len(losses),
        "valid_ndcg10": round(valid_ndcg, 4),
        "held_out_ndcg10": round(held_ndcg, 4),
        "truth_k": int(neighbors.shape[1]),
        "torch_threads": args.threads,
        "seconds": seconds,
        "files_sha256": files,
        "uptime": uptime,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory (outside the repository)")
    p.add_argument(
        "--source",
        default=str(REPO.parent / "shared" / "data" / "amazon-video-games-sasrec" / "Video.txt"),
        help="SASRec-format interactions (user item per line)",
    )
    p.add_argument("--held-out", type=int, default=5000, help="users held out of training: the queries")
    p.add_argument("--d", type=int, default=64, help="the model's dimension (the vectors' dimension)")
    p.add_argument("--epochs", type=int, default=200, help="stage-1 epochs at most (early stopping)")
    p.add_argument("--max-minutes", type=float, default=0.0, help="stage-1 time budget (0: none)")
    p.add_argument("--truth-k", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.held_out <= 0 or args.d <= 0 or args.epochs <= 0 or args.truth_k <= 0 or args.threads <= 0:
        p.error("--held-out, --d, --epochs, --truth-k and --threads must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    manifest = build(args)
    print(
        json.dumps(
            {
                k: manifest[k]
                for k in ("items", "held_out_users", "valid_ndcg10", "held_out_ndcg10", "seconds")
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
