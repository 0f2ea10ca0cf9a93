"""Writes a synthetic checkpoint export (items.jsonl + model.safetensors with item_embeddings [N, D])
and the same vectors as vectors.npy, for Benchmarks/builder/run.sh. Clustered, L2-normalised, seeded."""

import json
import struct
import sys

import numpy as np


def main() -> None:
    out, n, d, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    rng = np.random.default_rng(seed)
    clusters = 1000
    centres = rng.standard_normal((clusters, d), dtype=np.float32)
    assign = rng.integers(0, clusters, n)
    x = centres[assign] + 0.8 * rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x = np.ascontiguousarray(x, dtype="<f4")
    np.save(f"{out}/vectors.npy", x)
    header = json.dumps(
        {
            "item_embeddings": {
                "dtype": "F32",
                "shape": [n, d],
                "data_offsets": [0, x.nbytes],
            }
        }
    ).encode()
    with open(f"{out}/model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        f.write(x.tobytes())
    with open(f"{out}/items.jsonl", "w") as f:
        for i in range(n):
            f.write(
                f'{{"id": {i}, "title": "item {i}", "tags": ["c{assign[i] % 20}"]}}\n'
            )


if __name__ == "__main__":
    main()
