#!/usr/bin/env python3
"""Run the index benchmark's peers (FAISS from Python) on the data set written by steer-index-bench.

Usage: peers.py --data DIR --label NAME --spec HNSW32 [--ef 16,32,64] [--nprobe 1,4,16] [--efc 100] [--repeats 3]

Reads DIR/base.f32, DIR/queries.f32, DIR/truth.i64 and DIR/meta.json, builds the index with whichever
`faiss` module this interpreter imports (Debian's python3-faiss or pip faiss-cpu), and prints one JSON
object per (spec, parameter) with build seconds, peak RSS, recall@10 and single-query QPS: the same
measurements, in the same order, as the Swift side.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any

import faiss  # type: ignore[import-untyped]
import numpy as np


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load(data: Path) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray]:
    meta = json.loads((data / "meta.json").read_text())
    d = int(meta["dimension"])
    base = np.fromfile(data / "base.f32", dtype="<f4").reshape(-1, d)
    queries = np.fromfile(data / "queries.f32", dtype="<f4").reshape(-1, d)
    truth = np.fromfile(data / "truth.i64", dtype="<i8").reshape(len(queries), -1)
    return meta, base, queries, truth


def recall_at(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    hits = 0
    for f, t in zip(found, truth):
        hits += len(set(f[:k].tolist()) & set(t[:k].tolist()))
    return hits / (k * len(truth))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--label", required=True)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--ef", default="")
    ap.add_argument("--nprobe", default="")
    ap.add_argument("--efc", type=int, default=100)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="single-query passes; the fastest is reported",
    )
    args = ap.parse_args()

    meta, base, queries, truth = load(args.data)
    d = base.shape[1]
    metric = faiss.METRIC_INNER_PRODUCT
    spec = args.spec
    t0 = time.perf_counter()
    if spec.startswith("HNSW"):
        index = faiss.IndexHNSWFlat(d, int(spec[4:]), metric)
        index.hnsw.efConstruction = args.efc
        index.add(base)
    else:
        index = faiss.index_factory(d, spec, metric)
        if not index.is_trained:
            rng = np.random.default_rng(1)
            sample = base[
                rng.choice(len(base), size=min(len(base), 256 * 1024), replace=False)
            ]
            index.train(sample)
        # IVF: ids 0..n-1, the same labels the Swift side uses.
        index.add_with_ids(
            base, np.arange(len(base), dtype=np.int64)
        ) if spec.startswith("IVF") else index.add(base)
    build_s = time.perf_counter() - t0

    settings: list[tuple[str, int | None]] = []
    if spec.startswith("HNSW"):
        settings = [("ef_search", int(v)) for v in args.ef.split(",") if v]
    elif spec.startswith("IVF"):
        settings = [("nprobe", int(v)) for v in args.nprobe.split(",") if v]
    if not settings:
        settings = [("none", None)]

    faiss.omp_set_num_threads(1)
    for name, value in settings:
        if name == "ef_search":
            index.hnsw.efSearch = value
        elif name == "nprobe":
            index.nprobe = value
        # Batched search for recall, then one query per call for latency, like a server does.
        _, found = index.search(queries, args.k)
        rec = recall_at(found, truth, args.k)
        n = len(queries)
        secs = float("inf")
        for _ in range(max(1, args.repeats)):
            t1 = time.perf_counter()
            for i in range(n):
                index.search(queries[i : i + 1], args.k)
            secs = min(secs, time.perf_counter() - t1)
        print(
            json.dumps(
                {
                    "engine": args.label,
                    "faiss_version": faiss.__version__,
                    "spec": spec,
                    "param": name,
                    "value": value,
                    "build_s": round(build_s, 3),
                    "peak_rss_mb": round(peak_rss_mb(), 1),
                    "recall_at_10": round(rec, 4),
                    "qps_single": round(n / secs, 1),
                    "n": int(meta["count"]),
                    "d": d,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
