"""The real-embeddings builder at a tiny size: parsers, held-out queries, exact truth, PCA sets, checksums."""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from pathlib import Path

import h5py
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import text_embeddings as te

torch.set_num_threads(1)

WORDS = ["alpha", "beta", "gamma", "delta", "river", "mountain", "compiler", "kernel", "library", "server"]
WORDS += ["window", "garden"]


def sentence(i: int) -> str:
    """A distinct sentence per i (its words spell i's digits in base 12)."""
    digits = []
    n = i + 12**3
    while n:
        digits.append(WORDS[n % 12])
        n //= 12
    return "The " + " ".join(digits) + f" package number {i} does useful things."


def make_sources(root: Path, count: int) -> tuple[Path, Path, Path]:
    apt, man, doc = root / "lists", root / "man", root / "doc"
    (man / "man1").mkdir(parents=True)
    (doc / "pkg").mkdir(parents=True)
    apt.mkdir()
    third = count // 3
    entries = []
    for i in range(third):
        entries.append(
            f"Package: p{i}\nDescription-md5: 0\nDescription-en: short summary {i}\n"
            f" {sentence(i)}\n .\n {sentence(i)}\n"
        )
    (apt / "host_dists_x_main_i18n_Translation-en").write_text("\n".join(entries))
    page = "".join(f".TH FOO 1\n.SH NAME\n\\fB{sentence(i)}\\fR\n.PP\n" for i in range(third, 2 * third))
    with gzip.open(man / "man1" / "foo.1.gz", "wt") as f:
        f.write(page)
    (doc / "pkg" / "README").write_text("\n\n".join(sentence(i) for i in range(2 * third, count)))
    return apt, man, doc


def test_parsers_keep_sentences_and_drop_markup() -> None:
    text = (
        "Package: a\nDescription-en: Tool to frobnicate widgets quickly\n"
        " First line of the long text.\n It goes on here.\n .\n Second paragraph is this one.\n"
    )
    assert list(te.apt_descriptions(text)) == [
        "Tool to frobnicate widgets quickly",
        "First line of the long text. It goes on here.",
        "Second paragraph is this one.",
    ]
    man = ".TH X 1\n.SH DESCRIPTION\n\\fBfoo\\fR prints the \\fIfile\\fP named on its command line.\n"
    man += ".PP\nNext one.\n"
    assert list(te.man_text(man)) == ["foo prints the file named on its command line.", "Next one."]
    assert te.split_sentences("It works well today.   Then it stops again! too short.") == [
        "It works well today.",
        "Then it stops again! too short.",
    ]
    # Mostly digits or too few words: dropped.
    assert te.split_sentences("1 2 3 4 5 6 7 8 9 10 11 12 13 14.") == []
    assert te.split_sentences("Too short.") == []


def test_tiny_build_holds_out_queries_with_exact_truth_and_checksums(tmp_path: Path) -> None:
    apt, man, doc = make_sources(tmp_path / "src", 150)
    out = tmp_path / "out"
    argv = [
        "--out",
        str(out),
        "--apt-lists",
        str(apt),
        "--man",
        str(man),
        "--doc",
        str(doc),
        "--queries",
        "20",
        "--truth-k",
        "5",
        "--dimensions",
        "384,16,8",
        "--pca-sample",
        "1000",
        "--quiet",
    ]
    assert te.main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["sentences_by_source"]) == {"apt", "man", "doc"}
    lines = (out / "sentences.txt").read_text().splitlines()
    assert len(lines) == len(set(s.casefold() for s in lines)) == manifest["base"] + manifest["queries"]
    assert manifest["queries"] == 20
    assert manifest["sentences_sha256"] == hashlib.sha256("\n".join(lines).encode()).hexdigest()

    sums = dict(line.split("  ")[::-1] for line in (out / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == {f"debian-minilm-{d}-angular.hdf5" for d in (384, 16, 8)}
    for name, digest in sums.items():
        assert te.sha256_file(out / name) == digest
        with h5py.File(out / name, "r") as f:
            assert f.attrs["distance"] == "angular"
            train, test = f["train"][:], f["test"][:]
            neighbors, distances = f["neighbors"][:], f["distances"][:]
        dims = int(name.split("-")[2])
        assert train.shape == (manifest["base"], dims) and test.shape == (20, dims)
        assert neighbors.shape == (20, 5) and neighbors.dtype == np.int32
        np.testing.assert_allclose(np.linalg.norm(train, axis=1), 1, atol=1e-5)
        # Exact truth, recomputed by brute force here.
        scores = test @ train.T
        for q in range(20):
            best = np.sort(scores[q])[::-1][:5]
            np.testing.assert_allclose(scores[q, neighbors[q]], best, atol=1e-5)
            np.testing.assert_allclose(distances[q], 1 - best, atol=1e-5)

    # The 384-d set is the model's own embedding: a held-out query sentence re-embedded gives its row.
    with h5py.File(out / "debian-minilm-384-angular.hdf5", "r") as f:
        first_query = f["test"][0]
    again = te.embed([lines[0]], None, 8, progress=False)[0]
    np.testing.assert_allclose(again, first_query, atol=1e-5)
    # Queries are held out: none of them is a base sentence.
    assert not set(lines[:20]) & set(lines[20:])

    # The same inputs and seed give the same files.
    again_out = tmp_path / "again"
    assert te.main([*argv[:1], str(again_out), *argv[2:]]) == 0
    assert (again_out / "SHA256SUMS").read_text() == (out / "SHA256SUMS").read_text()


def test_count_only_reports_the_sources_without_embedding(tmp_path: Path) -> None:
    apt, man, doc = make_sources(tmp_path / "src", 90)
    out = tmp_path / "count"
    argv = ["--out", str(out), "--apt-lists", str(apt), "--man", str(man), "--doc", str(doc), "--count-only"]
    assert te.main(argv) == 0
    counted = json.loads((out / "count.json").read_text())
    assert counted["sentences_by_source"] == {"apt": 30, "man": 30, "doc": 30}
    assert counted["unique_sentences"] == 90
    assert not list(out.glob("*.hdf5"))
