"""An ann-benchmarks HDF5 file as a steer-bench data directory (docs/benchmarks.md "Like for like").

steer-bench and the peers read HDF5 files themselves; steer-index-bench (in-process SteerIndex) reads only
the directory layout ``steer-bench generate`` writes: ``base.f32``, ``queries.f32`` (little-endian float32
rows), ``truth.i64`` (exact top-k row indices) and ``meta.json``. Converting once gives every system the
same bytes: ``angular`` sets are L2-normalised here (and searched by inner product), ``ip`` sets are kept
as they are, ``euclidean`` sets get ``metric: l2``.

    python3 Benchmarks/datasets/to_dir.py FILE.hdf5 OUT_DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def convert(source: Path, out: Path) -> dict[str, object]:
    import h5py

    with h5py.File(source, "r") as f:
        raw = f.attrs["distance"]
        distance = raw.decode() if isinstance(raw, bytes) else str(raw)
        base = np.ascontiguousarray(f["train"][:], dtype=np.float32)
        queries = np.ascontiguousarray(f["test"][:], dtype=np.float32)
        truth = np.ascontiguousarray(f["neighbors"][:], dtype=np.int64)
    if distance not in ("angular", "euclidean", "ip", "dot"):
        raise SystemExit(f"{source}: distance {distance!r} is not supported (angular, euclidean, ip)")
    if base.ndim != 2 or queries.ndim != 2 or base.shape[1] != queries.shape[1]:
        raise SystemExit(f"{source}: train {base.shape} and test {queries.shape} do not match")
    if truth.shape[0] != queries.shape[0] or truth.min() < 0 or truth.max() >= base.shape[0]:
        raise SystemExit(f"{source}: neighbors {truth.shape} do not index train's {base.shape[0]} rows")
    normalized = distance == "angular"
    if normalized:
        base /= np.maximum(np.linalg.norm(base, axis=1, keepdims=True), 1e-12)
        queries /= np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    out.mkdir(parents=True, exist_ok=True)
    base.astype("<f4").tofile(out / "base.f32")
    queries.astype("<f4").tofile(out / "queries.f32")
    truth.astype("<i8").tofile(out / "truth.i64")
    meta: dict[str, object] = {
        "count": int(base.shape[0]),
        "dimension": int(base.shape[1]),
        "queries": int(queries.shape[0]),
        "truth_k": int(truth.shape[1]),
        "metric": "l2" if distance == "euclidean" else "ip",
        "normalized": normalized,
        "source": "hdf5",
        "file": str(source),
        "distance": distance,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", type=Path)
    p.add_argument("out", type=Path)
    args = p.parse_args(argv)
    print(json.dumps(convert(args.source, args.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
