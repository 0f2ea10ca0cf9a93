"""HDF5 → steer-bench directory: the same rows, normalised only for angular sets, bad files refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import to_dir


def write(path: Path, distance: str, neighbors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    train = rng.standard_normal((50, 6)).astype(np.float32) * 3
    test = rng.standard_normal((4, 6)).astype(np.float32) * 3
    with h5py.File(path, "w") as f:
        f.attrs["distance"] = distance
        f.create_dataset("train", data=train)
        f.create_dataset("test", data=test)
        f.create_dataset(
            "neighbors", data=neighbors if neighbors is not None else np.tile(np.arange(5), (4, 1))
        )
    return train, test


@pytest.mark.parametrize(
    ("distance", "metric", "normalized"),
    [("angular", "ip", True), ("ip", "ip", False), ("euclidean", "l2", False)],
)
def test_rows_and_meta(tmp_path: Path, distance: str, metric: str, normalized: bool) -> None:
    train, test = write(tmp_path / "s.hdf5", distance)
    to_dir.main([str(tmp_path / "s.hdf5"), str(tmp_path / "d")])
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    assert (meta["count"], meta["dimension"], meta["queries"], meta["truth_k"]) == (50, 6, 4, 5)
    assert (meta["metric"], meta["normalized"]) == (metric, normalized)
    base = np.fromfile(tmp_path / "d" / "base.f32", dtype="<f4").reshape(50, 6)
    queries = np.fromfile(tmp_path / "d" / "queries.f32", dtype="<f4").reshape(4, 6)
    if normalized:
        train = train / np.linalg.norm(train, axis=1, keepdims=True)
        test = test / np.linalg.norm(test, axis=1, keepdims=True)
    assert np.allclose(base, train, atol=1e-6) and np.allclose(queries, test, atol=1e-6)
    truth = np.fromfile(tmp_path / "d" / "truth.i64", dtype="<i8").reshape(4, 5)
    assert truth.tolist() == [list(range(5))] * 4


def test_bad_files_are_refused(tmp_path: Path) -> None:
    write(tmp_path / "h.hdf5", "hamming")
    with pytest.raises(SystemExit, match="not supported"):
        to_dir.convert(tmp_path / "h.hdf5", tmp_path / "o")
    write(tmp_path / "n.hdf5", "angular", neighbors=np.full((4, 5), 50))
    with pytest.raises(SystemExit, match="do not index"):
        to_dir.convert(tmp_path / "n.hdf5", tmp_path / "o")
