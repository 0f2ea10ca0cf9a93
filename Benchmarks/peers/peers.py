#!/usr/bin/env python3
"""Issue 7's peers on a steer-bench data set: in-process FAISS (whichever `faiss` this interpreter
imports: Debian's python3-faiss or pip faiss-cpu), hnswlib, and Chroma's server driven through its own
HTTP client, and usearch. Prints one JSON object per (engine, index, parameter): build seconds, recall@k
against the data set's exact truth, one-query-per-call latency (p50/p99 µs) and QPS on one thread, and
for the in-process engines the saturation QPS of all queries searched with `--threads` threads (the
same cores a Steer server gets; recorded as `threads`).

    peers.py --data DIR --engine faiss --label "pip faiss-cpu" [--ef 16,32,64] [--nprobe 1,4,16] [--lists 2048]
    peers.py --data DIR --engine hnswlib --ef 16,32,64
    peers.py --data DIR --engine chroma --ef 16,32,64 --chroma /path/to/venv/bin/chroma
    peers.py --data FILE.hdf5 --engine usearch --ef 16,32,64 --threads 2

Reads DIR/base.f32, DIR/queries.f32, DIR/truth.i64 and DIR/meta.json (steer-bench generate), the same
files steer-bench drives the server with, or an ann-benchmarks HDF5 file (h5py; `angular` sets are
normalised and searched by inner product, `euclidean` ones by L2, as steer-bench does).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def load(data: Path) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray]:
    if data.is_file():
        import h5py  # type: ignore[import-untyped]

        with h5py.File(data, "r") as f:
            distance = f.attrs["distance"]
            distance = (
                distance.decode() if isinstance(distance, bytes) else str(distance)
            )
            base = np.ascontiguousarray(f["train"][:], dtype=np.float32)
            queries = np.ascontiguousarray(f["test"][:], dtype=np.float32)
            truth = f["neighbors"][:].astype(np.int64)
        if distance == "angular":
            base /= np.maximum(np.linalg.norm(base, axis=1, keepdims=True), 1e-12)
            queries /= np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        elif distance not in ("euclidean", "ip", "dot"):
            sys.exit(
                f"{data}: distance {distance!r} is not supported (angular, euclidean, ip)"
            )
        # angular sets are normalised above, so inner product orders them as cosine does; ip sets
        # (recommendation vectors) are searched by raw inner product, as Steer searches them.
        metric = "l2" if distance == "euclidean" else "ip"
        meta = {
            "count": len(base),
            "dimension": base.shape[1],
            "metric": metric,
            "source": "hdf5",
            "file": str(data),
        }
        return meta, base, queries, truth
    meta = json.loads((data / "meta.json").read_text())
    d = int(meta["dimension"])
    base = np.fromfile(data / "base.f32", dtype="<f4").reshape(-1, d)
    queries = np.fromfile(data / "queries.f32", dtype="<f4").reshape(-1, d)
    truth = np.fromfile(data / "truth.i64", dtype="<i8").reshape(len(queries), -1)
    if len(base) != int(meta["count"]):
        sys.exit(f"{data}/base.f32: {len(base)} rows, meta.json says {meta['count']}")
    return meta, base, queries, truth


def recall_at(found: list[list[int]], truth: np.ndarray, k: int) -> float:
    hits = sum(len(set(f[:k]) & set(t[:k].tolist())) for f, t in zip(found, truth))
    return hits / (k * len(truth))


def measure(
    search: Callable[[np.ndarray], list[int]],
    queries: np.ndarray,
    truth: np.ndarray,
    k: int,
) -> dict[str, float]:
    """One query per call on this thread: latency of each call, recall of the answers."""
    for q in queries[: min(50, len(queries))]:  # warm-up
        search(q)
    found: list[list[int]] = []
    lat = np.empty(len(queries))
    t0 = time.perf_counter()
    for i, q in enumerate(queries):
        s = time.perf_counter()
        found.append(search(q))
        lat[i] = time.perf_counter() - s
    secs = time.perf_counter() - t0
    return {
        "recall_at_k": round(recall_at(found, truth, k), 4),
        "qps": round(len(queries) / secs, 1),
        "p50_us": round(float(np.percentile(lat, 50)) * 1e6, 1),
        "p99_us": round(float(np.percentile(lat, 99)) * 1e6, 1),
    }


def saturation(
    search_all: Callable[[np.ndarray], np.ndarray],
    queries: np.ndarray,
    truth: np.ndarray,
    k: int,
    threads: int,
) -> dict[str, float]:
    """All queries in one call spread over `threads` threads by the engine itself: QPS at saturation."""
    search_all(queries[: min(50, len(queries))])  # warm-up
    t0 = time.perf_counter()
    found = search_all(queries)
    secs = time.perf_counter() - t0
    return {
        "threads": threads,
        "saturation_qps": round(len(queries) / secs, 1),
        "saturation_recall_at_k": round(
            recall_at([list(r) for r in found], truth, k), 4
        ),
    }


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def emit(row: dict[str, Any]) -> None:
    print(json.dumps(row), flush=True)


def run_faiss(
    args: argparse.Namespace,
    meta: dict[str, Any],
    base: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
) -> None:
    import faiss  # type: ignore[import-untyped]

    faiss.omp_set_num_threads(args.build_threads)
    d = base.shape[1]
    metric = (
        faiss.METRIC_L2 if meta.get("metric") == "l2" else faiss.METRIC_INNER_PRODUCT
    )
    common = {
        "engine": args.label,
        "version": faiss.__version__,
        "n": len(base),
        "d": d,
    }

    def both(index: Any) -> dict[str, float]:
        faiss.omp_set_num_threads(1)
        row = measure(
            lambda q: index.search(q[None, :], args.k)[1][0].tolist(),
            queries,
            truth,
            args.k,
        )
        faiss.omp_set_num_threads(args.threads)
        row.update(
            saturation(
                lambda qs: index.search(qs, args.k)[1],
                queries,
                truth,
                args.k,
                args.threads,
            )
        )
        faiss.omp_set_num_threads(1)
        return row

    if args.ef:
        t0 = time.perf_counter()
        index = faiss.IndexHNSWFlat(d, args.m, metric)
        index.hnsw.efConstruction = args.efc
        index.add(base)
        build = time.perf_counter() - t0
        pin(args)
        for ef in ints(args.ef):
            index.hnsw.efSearch = ef
            row = both(index)
            emit(
                {
                    **common,
                    "index": f"HNSW{args.m},efC{args.efc}",
                    "param": "ef_search",
                    "value": ef,
                    "build_s": round(build, 2),
                    **row,
                }
            )
    if args.nprobe:
        t0 = time.perf_counter()
        quantizer = (
            faiss.IndexFlatL2(d) if metric == faiss.METRIC_L2 else faiss.IndexFlatIP(d)
        )
        index = faiss.IndexIVFFlat(quantizer, d, args.lists, metric)
        rng = np.random.default_rng(42)
        sample = base[
            rng.choice(len(base), size=min(len(base), 40 * args.lists), replace=False)
        ]
        faiss.omp_set_num_threads(args.build_threads)
        index.train(sample)
        index.add(base)
        build = time.perf_counter() - t0
        pin(args)
        for nprobe in ints(args.nprobe):
            index.nprobe = nprobe
            row = both(index)
            emit(
                {
                    **common,
                    "index": f"IVF{args.lists},Flat",
                    "param": "nprobe",
                    "value": nprobe,
                    "build_s": round(build, 2),
                    **row,
                }
            )


def run_hnswlib(
    args: argparse.Namespace,
    meta: dict[str, Any],
    base: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
) -> None:
    import hnswlib  # type: ignore[import-untyped]

    d = base.shape[1]
    t0 = time.perf_counter()
    index = hnswlib.Index(space="l2" if meta.get("metric") == "l2" else "ip", dim=d)
    index.init_index(
        max_elements=len(base), M=args.m, ef_construction=args.efc, random_seed=100
    )
    index.set_num_threads(args.build_threads)
    index.add_items(base, np.arange(len(base)))
    build = time.perf_counter() - t0
    pin(args)
    index.set_num_threads(1)
    version = getattr(hnswlib, "__version__", None)
    if version is None:
        from importlib.metadata import version as package_version

        version = package_version("hnswlib")
    for ef in ints(args.ef):
        index.set_ef(max(ef, args.k))
        index.set_num_threads(1)
        row = measure(
            lambda q: index.knn_query(q[None, :], k=args.k)[0][0].tolist(),
            queries,
            truth,
            args.k,
        )
        index.set_num_threads(args.threads)
        row.update(
            saturation(
                lambda qs: index.knn_query(qs, k=args.k)[0],
                queries,
                truth,
                args.k,
                args.threads,
            )
        )
        emit(
            {
                "engine": "hnswlib",
                "version": version,
                "n": len(base),
                "d": d,
                "index": f"M{args.m},efC{args.efc}",
                "param": "ef_search",
                "value": ef,
                "build_s": round(build, 2),
                **row,
            }
        )


def run_usearch(
    args: argparse.Namespace,
    meta: dict[str, Any],
    base: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
) -> None:
    from importlib.metadata import version as package_version

    from usearch.index import Index  # type: ignore[import-untyped]

    d = base.shape[1]
    t0 = time.perf_counter()
    index = Index(
        ndim=d,
        metric="l2sq" if meta.get("metric") == "l2" else "ip",
        dtype="f32",
        connectivity=args.m,
        expansion_add=args.efc,
    )
    index.add(np.arange(len(base)), base, threads=args.build_threads)
    build = time.perf_counter() - t0
    pin(args)
    for ef in ints(args.ef):
        index.expansion_search = max(ef, args.k)
        row = measure(
            lambda q: index.search(q, args.k, threads=1).keys.tolist(),
            queries,
            truth,
            args.k,
        )
        row.update(
            saturation(
                lambda qs: index.search(qs, args.k, threads=args.threads).keys,
                queries,
                truth,
                args.k,
                args.threads,
            )
        )
        emit(
            {
                "engine": "usearch",
                "version": package_version("usearch"),
                "n": len(base),
                "d": d,
                "index": f"HNSW M{args.m},efC{args.efc}",
                "param": "ef_search",
                "value": ef,
                "build_s": round(build, 2),
                **row,
            }
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ChromaServer:
    """`chroma run` as a child process on a free port, over one persistent directory."""

    def __init__(self, binary: str, path: str, core: int | None = None) -> None:
        self.binary, self.path, self.port = binary, path, free_port()
        self.log = open(os.path.join(path + "-log.txt"), "ab")
        pinned = ["taskset", "-c", str(core)] if core is not None else []
        self.proc = subprocess.Popen(
            [
                *pinned,
                binary,
                "run",
                "--path",
                path,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        import chromadb  # type: ignore[import-untyped]

        deadline = time.time() + 60
        while True:
            try:
                self.client = chromadb.HttpClient(host="127.0.0.1", port=self.port)
                self.client.heartbeat()
                return
            except Exception:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"chroma run did not start (see {path}-log.txt)")
                time.sleep(0.5)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.log.close()


def run_chroma(
    args: argparse.Namespace,
    meta: dict[str, Any],
    base: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
) -> None:
    from importlib.metadata import version as package_version

    d = base.shape[1]
    work = tempfile.mkdtemp(prefix="steer-peers-chroma-")
    path = os.path.join(work, "db")
    efs = ints(args.ef)
    try:
        server = ChromaServer(args.chroma, path, args.pin_core)
        t0 = time.perf_counter()
        collection = server.client.create_collection(
            "bench",
            configuration={
                "hnsw": {
                    "space": "l2" if meta.get("metric") == "l2" else "ip",
                    "max_neighbors": args.m,
                    "ef_construction": args.efc,
                    "ef_search": efs[0],
                }
            },
        )
        ids = [str(i) for i in range(len(base))]
        batch = 5000
        for start in range(0, len(base), batch):
            collection.add(
                ids=ids[start : start + batch], embeddings=base[start : start + batch]
            )
        build = time.perf_counter() - t0
        for ef in efs:
            collection = server.client.get_collection("bench")
            if ef != efs[0]:
                # Chroma applies a changed search ef only after its server restarts (docs/dependencies.md).
                collection.modify(configuration={"hnsw": {"ef_search": ef}})
                server.stop()
                server = ChromaServer(args.chroma, path, args.pin_core)
                collection = server.client.get_collection("bench")

            def search(q: np.ndarray) -> list[int]:
                result = collection.query(
                    query_embeddings=q[None, :], n_results=args.k, include=[]
                )
                return [int(i) for i in result["ids"][0]]

            row = measure(search, queries, truth, args.k)
            emit(
                {
                    "engine": "chroma server",
                    "version": package_version("chromadb"),
                    "n": len(base),
                    "d": d,
                    "index": f"HNSW M{args.m},efC{args.efc}",
                    "param": "ef_search",
                    "value": ef,
                    "build_s": round(build, 2),
                    **row,
                }
            )
        server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def pin(args: argparse.Namespace) -> None:
    """After the build: every thread of this process onto ``--pin-core`` (the measured phase runs on
    that one core, as the Steer server it is compared with; builds may use more)."""
    if args.pin_core is None:
        return
    for task in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(task), {args.pin_core})
        except OSError:  # a thread that ended meanwhile
            pass


def run_steer(
    args: argparse.Namespace,
    meta: dict[str, Any],
    base: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
) -> None:
    """A running Steer server (loaded by steer-bench with the same set, ids = row numbers) through
    Steer's own Python client: the same client stack as Chroma's row, one query per call."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "clients" / "python"))
    from steer_client import SteerClient  # type: ignore[import-not-found]

    host, _, port = args.steer.rpartition(":")
    with SteerClient(host, int(port)) as client:
        stats = client.stats()
        for ef in ints(args.ef):

            def search(q: np.ndarray, ef: int = ef) -> list[int]:
                hits = client.search(q.tolist(), k=args.k, ef_search=ef, b64=True)
                return [int(h["id"]) for h in hits]

            row = measure(search, queries, truth, args.k)
            emit(
                {
                    "engine": "steer server (Python client)",
                    "n": len(base),
                    "d": base.shape[1],
                    "items": stats.get("items"),
                    "index": "the server's generation",
                    "param": "ef_search",
                    "value": ef,
                    **row,
                }
            )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument(
        "--engine",
        choices=["faiss", "hnswlib", "chroma", "usearch", "steer"],
        required=True,
    )
    ap.add_argument("--label", default="faiss")
    ap.add_argument("--ef", default="")
    ap.add_argument("--nprobe", default="")
    ap.add_argument("--lists", type=int, default=2048)
    ap.add_argument("--m", type=int, default=32)
    ap.add_argument("--efc", type=int, default=100)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--queries", type=int, default=1000, help="use the first Q queries")
    ap.add_argument("--chroma", default="chroma", help="the chroma executable")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads of the saturation measurement (give the Steer server's core count)",
    )
    ap.add_argument(
        "--build-threads",
        type=int,
        default=int(os.environ.get("OMP_NUM_THREADS", "1")),
        help="threads of the index build (default OMP_NUM_THREADS)",
    )
    ap.add_argument(
        "--pin-core",
        type=int,
        default=None,
        help="after the build, run every thread on this core (Chroma: its server, from the start)",
    )
    ap.add_argument(
        "--steer",
        default="127.0.0.1:7878",
        help="engine steer: HOST:PORT of a running server",
    )
    args = ap.parse_args()
    if args.threads <= 0 or args.build_threads <= 0:
        sys.exit("--threads and --build-threads must be positive")
    meta, base, queries, truth = load(args.data)
    queries, truth = queries[: args.queries], truth[: args.queries]
    if truth.shape[1] < args.k:
        sys.exit(f"--k {args.k} exceeds the data set's truth depth {truth.shape[1]}")
    engines = {
        "faiss": run_faiss,
        "hnswlib": run_hnswlib,
        "chroma": run_chroma,
        "usearch": run_usearch,
        "steer": run_steer,
    }
    engines[args.engine](args, meta, base, queries, truth)


if __name__ == "__main__":
    main()
