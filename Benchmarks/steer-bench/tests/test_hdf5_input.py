"""`steer-bench run --data FILE.hdf5` on files written the way ann-benchmarks writes them (h5py: a
variable-length `distance` string attribute, float32 train/test, int32 neighbors), against a started
`steer serve` (STEER_BIN, default the repository's .build/debug/steer; steer-bench beside it)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]


def binaries() -> tuple[str, str]:
    steer = os.environ.get("STEER_BIN") or str(REPO / ".build" / "debug" / "steer")
    bench = str(Path(steer).parent / "steer-bench")
    for path in (steer, bench):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is not built (swift build --build-tests)", pytrace=False)
    return steer, bench


def write_set(
    path: Path, distance: str, seed: int = 3, n: int = 600, d: int = 8, q: int = 25, k: int = 10
) -> None:
    rng = np.random.default_rng(seed)
    train = rng.standard_normal((n, d)).astype(np.float32)
    test = rng.standard_normal((q, d)).astype(np.float32)
    if distance == "angular":
        a = train / np.linalg.norm(train, axis=1, keepdims=True)
        b = test / np.linalg.norm(test, axis=1, keepdims=True)
        dist = 1 - b @ a.T
    elif distance == "ip":
        # Norms that vary by a factor of 4, so inner-product order differs from cosine order.
        train *= rng.uniform(0.5, 2.0, size=(n, 1)).astype(np.float32)
        dist = -(test @ train.T)
    else:
        dist = ((test[:, None, :] - train[None, :, :]) ** 2).sum(-1)
    neighbors = np.argsort(dist, axis=1, kind="stable")[:, :k].astype(np.int32)
    with h5py.File(path, "w") as f:
        f.attrs["type"] = "dense"
        f.attrs["distance"] = distance
        f.create_dataset("train", data=train)
        f.create_dataset("test", data=test)
        f.create_dataset("neighbors", data=neighbors)
        f.create_dataset("distances", data=np.take_along_axis(dist, neighbors, 1).astype(np.float32))


def run_bench(data: Path, out: Path, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    steer, bench = binaries()
    args = [bench, "run", "--data", str(data), "--steer", steer, "--spec", "Flat", "--concurrency", "1"]
    args += ["--warmup", "0.2", "--duration", "0.5", "--out", str(out), *extra]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("distance", "metric"), [("euclidean", "l2"), ("angular", "ip"), ("ip", "ip")])
def test_an_ann_benchmarks_file_is_served_and_scored_against_its_neighbors(
    tmp_path: Path, distance: str, metric: str
) -> None:
    data = tmp_path / f"tiny-{distance}.hdf5"
    write_set(data, distance)
    done = run_bench(data, tmp_path / "r.json")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    meta = report["data"]["meta"]
    assert (meta["source"], meta["distance"], meta["metric"]) == ("hdf5", distance, metric)
    assert (meta["count"], meta["dimension"], meta["queries"], meta["truth_k"]) == (600, 8, 25, 10)
    assert report["server"]["items"] == 600
    # A Flat index searched with the file's metric finds exactly the file's neighbors.
    level = report["levels"][0]
    assert level["errors"] == 0 and level["requests"] > 0
    assert level["recall_at_k"] == 1.0


def test_a_wrong_neighbors_file_scores_below_one(tmp_path: Path) -> None:
    """The recall comes from the file's neighbors: shuffled neighbors must lower it (the test above
    could not pass by ignoring them)."""
    data = tmp_path / "shuffled.hdf5"
    write_set(data, "euclidean")
    with h5py.File(data, "r+") as f:
        f["neighbors"][...] = np.roll(f["neighbors"][:], 1, axis=0)
    done = run_bench(data, tmp_path / "r.json")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "r.json").read_text())["levels"][0]["recall_at_k"] < 0.5


def test_malformed_files_fail_with_a_clear_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.hdf5"
    garbage.write_bytes(bytes(range(256)) * 8)
    done = run_bench(garbage, tmp_path / "r.json")
    assert done.returncode != 0 and "not an HDF5 file" in done.stderr, done.stderr

    bad = tmp_path / "range.hdf5"
    write_set(bad, "euclidean")
    with h5py.File(bad, "r+") as f:
        f["neighbors"][0, 0] = 600
    done = run_bench(bad, tmp_path / "r.json")
    assert done.returncode != 0 and "neighbors[0][0] = 600" in done.stderr, done.stderr

    hamming = tmp_path / "hamming.hdf5"
    write_set(hamming, "euclidean")
    with h5py.File(hamming, "r+") as f:
        f.attrs["distance"] = "hamming"
    done = run_bench(hamming, tmp_path / "r.json")
    assert done.returncode != 0 and "hamming" in done.stderr, done.stderr
    assert "Fatal error" not in done.stderr and done.returncode > 0
