"""The SASRec recommendation-vector builder at a tiny size: held-out users, exact inner-product truth."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import sasrec_vectors as sv

torch.set_num_threads(1)


def write_source(path: Path, users: int, items: int, seed: int) -> list[list[int]]:
    """SASRec's plain format: ``user item`` lines, 1-based ids, each user's lines together in order.
    Users walk the catalog in small steps, so the next item is learnable."""
    rng = random.Random(seed)
    seqs = []
    lines = []
    for u in range(1, users + 1):
        start = rng.randrange(1, items + 1)
        seq = [((start + 2 * j - 1) % items) + 1 for j in range(rng.randrange(4, 9))]
        seqs.append(seq)
        lines += [f"{u} {i}" for i in seq]
    # Every item appears at least once.
    lines += [f"{users + 1} {i}" for i in range(1, items + 1)]
    path.write_text("\n".join(lines) + "\n")
    return seqs


def test_build_holds_users_out_and_computes_exact_truth(tmp_path: Path) -> None:
    source = tmp_path / "Video.txt"
    write_source(source, users=80, items=30, seed=3)
    out = tmp_path / "out"
    args = ["--out", str(out), "--source", str(source), "--held-out", "12", "--d", "8"]
    assert sv.main([*args, "--epochs", "2", "--truth-k", "5", "--quiet"]) == 0
    files = list(out.glob("*.hdf5"))
    assert [f.name for f in files] == ["amazon-video-games-sasrec-8-ip.hdf5"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["held_out_users"] == 12 and manifest["items"] == 30
    assert manifest["files_sha256"][files[0].name] == sv.sha256_file(files[0])
    assert (out / "SHA256SUMS").read_text().split() == [
        manifest["files_sha256"][files[0].name],
        files[0].name,
    ]
    with h5py.File(files[0]) as f:
        assert f.attrs["distance"] == "ip"
        train, test = f["train"][:], f["test"][:]
        neighbors, distances = f["neighbors"][:], f["distances"][:]
    assert train.shape == (30, 8) and test.shape == (12, 8) and neighbors.shape == (12, 5)
    # Exact truth recomputed by brute force: the best five inner products, best first.
    scores = test.astype(np.float64) @ train.T.astype(np.float64)
    for q in range(12):
        assert np.allclose(np.sort(scores[q])[::-1][:5], scores[q][neighbors[q]], atol=1e-5)
        assert np.allclose(distances[q], -scores[q][neighbors[q]], atol=1e-5)
    # Not all queries are the same vector (each is its user's own history's encoding).
    assert len({tuple(np.round(row, 5)) for row in test}) > 1


def test_same_seed_gives_the_same_file(tmp_path: Path) -> None:
    source = tmp_path / "Video.txt"
    write_source(source, users=40, items=20, seed=5)
    sums = []
    for run in ("a", "b"):
        args = ["--out", str(tmp_path / run), "--source", str(source), "--held-out", "6", "--d", "4"]
        sv.main([*args, "--epochs", "1", "--truth-k", "3", "--quiet"])
        sums.append(json.loads((tmp_path / run / "manifest.json").read_text())["files_sha256"])
    assert sums[0] == sums[1]


def test_too_many_held_out_users_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "Video.txt"
    write_source(source, users=10, items=20, seed=1)
    with pytest.raises(SystemExit, match="held-out"):
        sv.main(["--out", str(tmp_path / "o"), "--source", str(source), "--held-out", "50", "--quiet"])


def test_exact_top_k_breaks_ties_by_row() -> None:
    base = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.5, 0.5]], dtype=np.float32)
    neighbors, distances = sv.exact_top_k_ip(base, np.array([[1.0, 0.0]], dtype=np.float32), 3)
    assert neighbors.tolist() == [[0, 2, 3]]
    assert distances.tolist() == [[-1.0, -1.0, -0.5]]
