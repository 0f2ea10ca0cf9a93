"""Share of a server's perf samples per request stage (Benchmarks/compare/overhead.sh).

Reads `perf script` output of `perf record -g` on `steer serve` and assigns every sample to the first
stage (in the order of STAGES) whose pattern matches a frame of its call stack, so a sample inside the
index search counts as search even though the worker pool and the request handler are below it.

    python3 Benchmarks/compare/perf_stages.py perf.data      # runs perf script itself
    python3 Benchmarks/compare/perf_stages.py --script perf.txt
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

# (stage, pattern over one frame's symbol); first match wins, so more specific stages come first.
STAGES: list[tuple[str, str]] = [
    ("index search (faiss/HNSW)", r"steer_index_search|steer_index::search"),
    ("records for the hits (hydrate)", r"hydrate"),
    ("request parse and decode", r"JSONParser|RequestDecoder|RequestHandlerC7prepare"),
    ("answer encode", r"JSONWriter|AnswerEncoder|ResponseEncoder"),
    ("engine, other", r"SteerEngine"),
    # Only worker threads run WorkerPool.work: parking, waking and the job wrapper around the request.
    ("worker thread: pool (parking, waking, job wrapper)", r"WorkerPoolC4work"),
    ("event loop: socket write", r"Socket[A-Za-z]*C5write|__libc_write|__GI___libc_write|writev"),
    ("event loop: socket read", r"__libc_read|__GI___libc_read|Socket[A-Za-z]*C4read|RecvBufferAllocator"),
    ("event loop: wait (epoll)", r"epoll_wait"),
    (
        "event loop: connection handling (admit, hand-off, completion)",
        r"ConnectionHandler|WorkerPool|EventLoopPromise",
    ),
    ("event loop: other", r"NIOPosix|NIOCore"),
    ("kernel only (interrupts, scheduling)", r"\[kernel\.kallsyms\]"),
]


def samples(script: str) -> Iterable[list[str]]:
    """Each sample's frames (leaf first) from `perf script` text: a header line, then one frame per line."""
    for block in script.split("\n\n"):
        lines = [line.strip() for line in block.strip().splitlines()]
        if len(lines) >= 2:
            yield lines[1:]
        elif len(lines) == 1 and lines[0]:
            yield []


_COMPILED = [(stage, re.compile(pattern)) for stage, pattern in STAGES]


def stage_of(frames: list[str]) -> str:
    for stage, regex in _COMPILED:
        if any(regex.search(frame) for frame in frames):
            return stage
    return "other"


def shares(script: str) -> tuple[Counter[str], int, int]:
    """Samples per stage, the total, and how many of them were in the kernel (leaf frame)."""
    counts: Counter[str] = Counter()
    kernel = 0
    total = 0
    for frames in samples(script):
        total += 1
        counts[stage_of(frames)] += 1
        if frames and "[kernel.kallsyms]" in frames[0]:
            kernel += 1
    return counts, total, kernel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", nargs="?", help="perf.data to read with perf script")
    parser.add_argument("--script", help="perf script output already written")
    args = parser.parse_args(argv)
    if args.script:
        text = Path(args.script).read_text(encoding="utf-8", errors="replace")
    elif args.data:
        text = subprocess.run(
            ["perf", "script", "-i", args.data], capture_output=True, text=True, errors="replace", check=True
        ).stdout
    else:
        parser.error("give perf.data or --script")
    counts, total, kernel = shares(text)
    if total == 0:
        print("no samples", file=sys.stderr)
        return 1
    print(f"samples {total}; leaf frame in the kernel: {100 * kernel / total:.1f} %")
    print("| stage | share of the server's samples |")
    print("|---|---|")
    for stage, _ in [*STAGES, ("other", "")]:
        if counts[stage]:
            print(f"| {stage} | {100 * counts[stage] / total:.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
