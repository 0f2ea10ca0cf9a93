"""The same builds with faiss's Python API (Debian python3-faiss 1.7.3, the library Steer links):
train once (IVF) on the same sample size, add to `shards` indexes sharing the quantizer, write them.
Prints one JSON line with the timings; peak memory comes from /usr/bin/time around this process."""

import json
import os
import sys
import time

import faiss
import numpy as np


def main() -> None:
    vectors, spec, shards, out, seed = (
        sys.argv[1],
        sys.argv[2],
        int(sys.argv[3]),
        sys.argv[4],
        int(sys.argv[5]),
    )
    t0 = time.perf_counter()
    x = np.load(vectors)
    n, d = x.shape
    t_load = time.perf_counter() - t0
    timings = {"load": t_load}
    ids = np.arange(n, dtype=np.int64)
    # Same placement rule as Steer (FNV-1a 64 over the id key bytes mod shards) would need the hash in Python;
    # the cost does not depend on which items go where, so faiss shards by id modulo.
    part = ids % shards
    t = time.perf_counter()
    if spec.startswith("IVF"):
        lists = int(spec[3:].split(",")[0])
        template = faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
        sample = min(n, 40 * lists)
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(n, sample, replace=False))
        template.train(x[rows])
        timings["train"] = time.perf_counter() - t
        blob = faiss.serialize_index(template)
        make = lambda: faiss.deserialize_index(blob)
    else:
        m = int(spec[4:].split(",")[0])
        efc = 40
        if ",efC" in spec:
            efc = int(spec.split(",efC")[1])

        def make():
            index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = efc
            return faiss.IndexIDMap2(index)

    t = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    for s in range(shards):
        index = make()
        sel = part == s
        index.add_with_ids(x[sel], ids[sel])
        faiss.write_index(index, f"{out}/shard-{s:04d}.index")
    timings["add_save"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "tool": "faiss-python",
                "spec": spec,
                "shards": shards,
                "n": int(n),
                "d": int(d),
                "timings_s": timings,
            }
        )
    )


if __name__ == "__main__":
    main()
