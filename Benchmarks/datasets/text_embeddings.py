"""Real sentence embeddings for the benchmarks (docs/benchmarks.md "Real embeddings").

Builds, from Debian text available on any Debian machine, a set of unique English sentences; embeds
them with Steer's own all-MiniLM-L6-v2 (``steer_train.minilm``, the trainer's PyTorch forward pass,
L2-normalised, 384-d); holds out queries; computes the exact top-k by inner product (= cosine); adds
128-d and 64-d PCA projections (re-normalised, with their own exact ground truth); and writes each as
an ann-benchmarks HDF5 file (``train``, ``test``, ``neighbors``, ``distances``, ``distance=angular``)
that ``steer-bench run --data FILE.hdf5`` and the peers read. ``SHA256SUMS`` and ``manifest.json``
beside them record the checksums, the sources' checksums, the counts and the time each stage took.

Sources, in this order (each optional):
  * apt's package long descriptions: ``/var/lib/apt/lists/*Translation-en*`` (any compression apt uses;
    ``--apt-update`` first runs ``apt-get update -o Acquire::Languages=en``, which fetches them);
  * manual pages under ``/usr/share/man/man*`` (troff requests dropped, text kept);
  * text files under ``/usr/share/doc`` (plain or gzip, at most 1 MiB each).

    python3 Benchmarks/datasets/text_embeddings.py --out /tmp/steer-text --apt-update
    python3 Benchmarks/datasets/text_embeddings.py --out /tmp/steer-text-small --max-sentences 50000

Nothing here is committed: the output directory is outside the repository. The sentence set depends on
the archive snapshot and the installed packages, so its checksum (``sentences_sha256``) is what makes
two builds comparable.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
MAX_FILE_BYTES = 1 << 20
MIN_WORDS = 4
MAX_WORDS = 64
MIN_CHARS = 20
MAX_CHARS = 400

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_SPACES = re.compile(r"\s+")
_TROFF_ESCAPE = re.compile(
    r"\\f[BIRPV1-4]|\\f\(..|\\f\[[^\]]*\]|\\\(..|\\\[[^\]]*\]|\\[&|^%:e-]|\\s[-+]?\d+|\\\*."
)


# ---------------------------------------------------------------------------- sentences


def split_sentences(text: str) -> list[str]:
    """Sentences of a paragraph: split after . ! ? before a capital, digit or quote; whitespace collapsed;
    only those of MIN_WORDS..MAX_WORDS words and MIN_CHARS..MAX_CHARS characters, mostly letters."""
    out: list[str] = []
    for raw in _SENTENCE_END.split(_SPACES.sub(" ", text).strip()):
        sentence = raw.strip()
        words = sentence.split(" ")
        if not (MIN_WORDS <= len(words) <= MAX_WORDS and MIN_CHARS <= len(sentence) <= MAX_CHARS):
            continue
        letters = sum(c.isalpha() for c in sentence)
        if letters < 0.6 * len(sentence):
            continue
        out.append(sentence)
    return out


def read_text(path: Path) -> str:
    """A file as text: lz4/xz/… through apt-helper (apt lists), gzip by suffix; bad bytes dropped."""
    if path.suffix in {".lz4", ".xz", ".bz2", ".zst", ".lzma"}:
        done = subprocess.run(
            ["/usr/lib/apt/apt-helper", "cat-file", str(path)], capture_output=True, check=True
        )
        return done.stdout.decode("utf-8", errors="ignore")
    if path.suffix == ".gz":
        with gzip.open(path) as f:
            data = f.read(MAX_FILE_BYTES)
    else:
        data = path.read_bytes()[:MAX_FILE_BYTES]
    return data.decode("utf-8", errors="ignore")


def apt_descriptions(text: str) -> Iterator[str]:
    """Paragraphs of a Translation-en file: each short description, then each paragraph of the long one
    (lines indented by one space; a lone ' .' separates paragraphs)."""
    paragraph: list[str] = []
    for line in text.splitlines():
        if line.startswith("Description-en: "):
            if paragraph:
                yield " ".join(paragraph)
            paragraph = []
            yield line[len("Description-en: ") :]
        elif line.startswith(" "):
            body = line[1:]
            if body.strip() == ".":
                if paragraph:
                    yield " ".join(paragraph)
                paragraph = []
            else:
                paragraph.append(body.strip())
        else:
            if paragraph:
                yield " ".join(paragraph)
            paragraph = []
    if paragraph:
        yield " ".join(paragraph)


def man_text(text: str) -> Iterator[str]:
    """Paragraphs of a troff manual page: request lines (``.XX``) end a paragraph; escapes are dropped."""
    paragraph: list[str] = []
    for line in text.splitlines():
        if line.startswith((".", "'")):
            if paragraph and not line.startswith((".B", ".I", ".BR", ".IR", ".RB", ".RI")):
                yield " ".join(paragraph)
                paragraph = []
            continue
        clean = _TROFF_ESCAPE.sub("", line).replace("\\", "").strip()
        if clean:
            paragraph.append(clean)
        elif paragraph:
            yield " ".join(paragraph)
            paragraph = []
    if paragraph:
        yield " ".join(paragraph)


def plain_paragraphs(text: str) -> Iterator[str]:
    yield from re.split(r"\n\s*\n", text)


def sources(
    apt_lists: Path | None, man_root: Path | None, doc_root: Path | None
) -> list[tuple[str, Path, Callable[[str], Iterable[str]]]]:
    """(kind, file, paragraph reader) for every input file, in a fixed order."""
    found: list[tuple[str, Path, Callable[[str], Iterable[str]]]] = []
    if apt_lists is not None and apt_lists.is_dir():
        for path in sorted(apt_lists.glob("*Translation-en*")):
            found.append(("apt", path, apt_descriptions))
    if man_root is not None and man_root.is_dir():
        for path in sorted(man_root.glob("man*/*")):
            if path.is_file():
                found.append(("man", path, man_text))
    if doc_root is not None and doc_root.is_dir():
        for path in sorted(doc_root.rglob("*")):
            if path.is_file() and not path.is_symlink() and path.stat().st_size <= MAX_FILE_BYTES:
                found.append(("doc", path, plain_paragraphs))
    return found


def collect_sentences(
    inputs: list[tuple[str, Path, Callable[[str], Iterable[str]]]], limit: int | None
) -> tuple[list[str], dict[str, int], dict[str, str]]:
    """Unique sentences (case-folded duplicates dropped) in input order, the count from each kind, and
    the sha256 of every apt list read (the archive snapshot)."""
    seen: set[str] = set()
    sentences: list[str] = []
    counts: dict[str, int] = {}
    list_hashes: dict[str, str] = {}
    for kind, path, reader in inputs:
        try:
            text = read_text(path)
        except (OSError, EOFError, subprocess.CalledProcessError, gzip.BadGzipFile):
            continue
        if kind == "apt":
            list_hashes[path.name] = hashlib.sha256(text.encode()).hexdigest()
        for paragraph in reader(text):
            for sentence in split_sentences(paragraph):
                key = sentence.casefold()
                if key in seen:
                    continue
                seen.add(key)
                sentences.append(sentence)
                counts[kind] = counts.get(kind, 0) + 1
                if limit is not None and len(sentences) >= limit:
                    return sentences, counts, list_hashes
    return sentences, counts, list_hashes


# ---------------------------------------------------------------------------- vectors


def embed(sentences: list[str], minilm: str | None, batch_size: int, progress: bool) -> np.ndarray:
    """``[n, 384]`` float32, L2-normalised, with Steer's MiniLM (sentences batched by token length)."""
    try:
        from steer_train.minilm import MiniLM
    except ImportError:  # not installed: the repository's own copy
        sys.path.insert(0, str(REPO / "Tools" / "train"))
        from steer_train.minilm import MiniLM

    local = REPO / "models" / "all-MiniLM-L6-v2"
    encoder = MiniLM(
        minilm if minilm is not None else (local if (local / "model.safetensors").exists() else None)
    )
    tokens = [encoder.tokenizer.encode(s) for s in sentences]
    order = sorted(range(len(tokens)), key=lambda i: len(tokens[i]))
    out = np.zeros((len(sentences), 384), dtype=np.float32)
    started = time.monotonic()
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        # The batched forward pass without MiniLM.encode's per-text memo (it would hold every vector twice).
        out[rows] = encoder._forward([tokens[i] for i in rows]).numpy()
        if progress and (start // batch_size) % 50 == 0:
            done = start + len(rows)
            rate = done / max(1e-9, time.monotonic() - started)
            print(f"  embedded {done}/{len(order)} ({rate:.0f}/s)", file=sys.stderr, flush=True)
    return out


def normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def exact_top_k(
    base: np.ndarray, queries: np.ndarray, k: int, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k rows by inner product (ties broken by the lower row), and their cosine distances 1 - ip."""
    k = min(k, base.shape[0])
    neighbors = np.zeros((queries.shape[0], k), dtype=np.int32)
    distances = np.zeros((queries.shape[0], k), dtype=np.float32)
    for start in range(0, queries.shape[0], chunk):
        scores = queries[start : start + chunk] @ base.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        for r in range(part.shape[0]):
            cand = part[r]
            order = np.lexsort((cand, -scores[r, cand]))
            neighbors[start + r] = cand[order]
            distances[start + r] = 1.0 - scores[r, cand[order]]
    return neighbors, distances


def pca(base: np.ndarray, dims: int, sample: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, components[d, dims]) of the base rows (a seeded sample of at most ``sample`` rows)."""
    rng = np.random.default_rng(seed)
    rows = base if base.shape[0] <= sample else base[rng.choice(base.shape[0], sample, replace=False)]
    mean = rows.mean(axis=0)
    cov = np.cov((rows - mean).T.astype(np.float64))
    values, vectors = np.linalg.eigh(cov)
    top = vectors[:, np.argsort(values)[::-1][:dims]]
    # Fix each component's sign (largest-magnitude coordinate positive) so builds agree bit for bit.
    signs = np.sign(top[np.argmax(np.abs(top), axis=0), np.arange(dims)])
    return mean.astype(np.float32), (top * signs).astype(np.float32)


def write_hdf5(
    path: Path,
    train: np.ndarray,
    test: np.ndarray,
    neighbors: np.ndarray,
    distances: np.ndarray,
    attrs: dict[str, str | int],
) -> None:
    """The ann-benchmarks layout (as its datasets.py writes it)."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["type"] = "dense"
        f.attrs["distance"] = "angular"
        f.attrs["dimension"] = train.shape[1]
        f.attrs["point_type"] = "float"
        for key, value in attrs.items():
            f.attrs[key] = value
        f.create_dataset("train", data=train.astype(np.float32))
        f.create_dataset("test", data=test.astype(np.float32))
        f.create_dataset("neighbors", data=neighbors.astype(np.int32))
        f.create_dataset("distances", data=distances.astype(np.float32))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------- build


def build(args: argparse.Namespace) -> dict[str, object]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stages: dict[str, float] = {}
    uptime_start = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    t0 = time.monotonic()
    if args.apt_update:
        subprocess.run(["apt-get", "update", "-qq", "-o", "Acquire::Languages=en"], check=True)
    inputs = sources(
        Path(args.apt_lists) if args.apt_lists else None,
        Path(args.man) if args.man else None,
        Path(args.doc) if args.doc else None,
    )
    limit = None if args.max_sentences is None else args.max_sentences + args.queries
    sentences, counts, list_hashes = collect_sentences(inputs, limit)
    stages["sentences_s"] = round(time.monotonic() - t0, 2)
    if args.count_only:
        counted: dict[str, object] = {
            "command": " ".join([sys.executable, *sys.argv]),
            "unique_sentences": len(sentences),
            "sentences_by_source": counts,
            "sentences_sha256": hashlib.sha256("\n".join(sentences).encode()).hexdigest(),
            "apt_lists_sha256": list_hashes,
            "seconds": stages,
            "uptime_start": uptime_start,
            "uptime_end": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        }
        (out / "count.json").write_text(json.dumps(counted, indent=2, sort_keys=True) + "\n")
        return counted
    if len(sentences) <= args.queries:
        raise SystemExit(
            f"only {len(sentences)} unique sentences found; need more than --queries {args.queries}"
        )
    # A seeded shuffle, then the first --queries are held out (the same text, never in the base).
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(sentences))
    shuffled = [sentences[i] for i in order]
    queries_text, base_text = shuffled[: args.queries], shuffled[args.queries :]
    sentences_sha = hashlib.sha256("\n".join(shuffled).encode()).hexdigest()
    (out / "sentences.txt").write_text("\n".join(shuffled) + "\n")
    print(
        f"{len(base_text)} base + {len(queries_text)} query sentences ({counts})", file=sys.stderr, flush=True
    )

    t1 = time.monotonic()
    vectors = embed(shuffled, args.minilm, args.batch_size, progress=not args.quiet)
    stages["embed_s"] = round(time.monotonic() - t1, 2)
    stages["embed_sentences_per_s"] = round(len(shuffled) / max(1e-9, stages["embed_s"]), 1)
    queries, base = vectors[: args.queries], vectors[args.queries :]

    files: dict[str, str] = {}
    common: dict[str, str | int] = {
        "source": "debian-text",
        "model": "all-MiniLM-L6-v2 (steer_train.minilm)",
        "seed": args.seed,
        "sentences_sha256": sentences_sha,
    }
    for dims in args.dimensions:
        t2 = time.monotonic()
        if dims == base.shape[1]:
            train, test = base, queries
        else:
            mean, components = pca(base, dims, args.pca_sample, args.seed)
            train = normalise((base - mean) @ components)
            test = normalise((queries - mean) @ components)
        neighbors, distances = exact_top_k(train, test, args.truth_k)
        name = f"{args.name}-{dims}-angular.hdf5"
        write_hdf5(
            out / name, train, test, neighbors, distances, {**common, "pca_from": 384 if dims != 384 else 0}
        )
        files[name] = sha256_file(out / name)
        stages[f"set_{dims}_s"] = round(time.monotonic() - t2, 2)
        print(
            f"wrote {out / name} ({train.shape[0]} × {dims}, {test.shape[0]} queries)",
            file=sys.stderr,
            flush=True,
        )

    (out / "SHA256SUMS").write_text("".join(f"{digest}  {name}\n" for name, digest in sorted(files.items())))
    manifest: dict[str, object] = {
        "command": " ".join([sys.executable, *sys.argv]),
        "base": len(base_text),
        "queries": len(queries_text),
        "truth_k": min(args.truth_k, len(base_text)),
        "dimensions": args.dimensions,
        "sentences_by_source": counts,
        "sentences_sha256": sentences_sha,
        "apt_lists_sha256": list_hashes,
        "files_sha256": files,
        "seconds": stages,
        "torch_threads": args.threads,
        "uptime_start": uptime_start,
        "uptime_end": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output directory (outside the repository)")
    p.add_argument("--name", default="debian-minilm", help="file name prefix")
    p.add_argument(
        "--apt-update", action="store_true", help="run apt-get update -o Acquire::Languages=en first"
    )
    p.add_argument("--apt-lists", default="/var/lib/apt/lists", help="apt lists folder ('' to skip)")
    p.add_argument("--man", default="/usr/share/man", help="manual pages root ('' to skip)")
    p.add_argument("--doc", default="/usr/share/doc", help="documentation root ('' to skip)")
    p.add_argument("--max-sentences", type=int, default=None, help="stop after this many base sentences")
    p.add_argument("--queries", type=int, default=10_000, help="held-out query sentences")
    p.add_argument("--truth-k", type=int, default=100, help="exact neighbours per query")
    p.add_argument("--dimensions", type=lambda s: [int(x) for x in s.split(",")], default=[384, 128, 64])
    p.add_argument("--pca-sample", type=int, default=100_000, help="base rows the PCA is fitted on")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1, help="torch threads for the embedding")
    p.add_argument(
        "--minilm", default=None, help="all-MiniLM-L6-v2 folder (default: $STEER_MINILM_DIR or the wheel's)"
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--count-only", action="store_true", help="only collect the sentences; write count.json")
    args = p.parse_args(argv)
    if args.queries <= 0 or args.truth_k <= 0 or args.batch_size <= 0 or args.threads <= 0:
        p.error("--queries, --truth-k, --batch-size and --threads must be positive")
    if any(d <= 0 or d > 384 for d in args.dimensions):
        p.error("--dimensions must be in 1..384")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    manifest = build(args)
    print(json.dumps(manifest["seconds"]), file=sys.stderr)
    if args.count_only:
        print(json.dumps(manifest["sentences_by_source"]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
