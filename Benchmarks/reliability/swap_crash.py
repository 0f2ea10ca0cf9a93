#!/usr/bin/env python3
"""Crash harness for `swap` (docs/protocol.md "swap"): a swap killed half-way never puts a corrupt or
half-loaded generation live, and loses no acknowledged write.

Fills a data directory through `steer serve` (`--items` random vectors, metric l2), builds three
generations with `steer-index build` (Flat ×1 shard, IVF16,Flat ×2, HNSW32 ×3) and one damaged copy
(a byte of one shard file flipped), times one uninterrupted swap, then per round:

1. starts the server and notes the generation it serves;
2. starts a writer that upserts new items one by one, recording which were acknowledged;
3. sends `swap` to another generation (one round in five: the damaged copy) and SIGKILLs the server after
   0–300 % of the uninterrupted swap time (a swap under write load takes longer); the swap's answer,
   if it came, is recorded;
4. restarts the server and checks: it starts; it serves the old or the target generation, never the
   damaged one and never a rebuild from the store (a fallback means the recorded generation could not
   be opened); an acknowledged swap is the one served; every acknowledged write is in the store (`get`)
   and found by a search for its own vector (k 10 with exhaustive `nprobe`/`ef_search`); the index holds
   as many live vectors as the store (`stats` `indexed` = `items`); each served generation's directory
   still verifies with `steer-index verify` at the end.

    python3 Benchmarks/reliability/swap_crash.py .build/debug/steer --rounds 40

Writes Benchmarks/reliability/swap-crash-results-<date>.json (or `--results`); exits 1 on a violation.
"""

from __future__ import annotations

import argparse
import base64
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    DEFAULT_TOKEN,
    Connection,
    ConnectionBroken,
    HarnessError,
    Server,
    fill_store,
    results_path,
    steer_binary,
    write_results,
)

GENERATIONS = [("gen-flat", "Flat", 1), ("gen-ivf", "IVF16,Flat", 2), ("gen-hnsw", "HNSW32", 3)]
DAMAGED = "gen-damaged"


def vector_b64(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def random_vector(rng: random.Random, dimension: int) -> list[float]:
    # Rounded through float32 so a search for the stored vector finds it at distance 0.
    packed = struct.pack(f"<{dimension}f", *(rng.gauss(0, 1) for _ in range(dimension)))
    return list(struct.unpack(f"<{dimension}f", packed))


def server_arguments(dimension: int) -> list[str]:
    return [
        "--dimension",
        str(dimension),
        "--metric",
        "l2",
        "--admin-token",
        DEFAULT_TOKEN,
        "--public-reads",
        "true",
    ]


def fill(binary: str, data: str, items: int, dimension: int, rng: random.Random) -> None:
    def item(n: int) -> dict[str, Any]:
        return {"id": f"base{n}", "vector_b64": vector_b64(random_vector(rng, dimension))}

    fill_store(binary, data, server_arguments(dimension), items, item)


def build_generations(index_binary: str, data: str, generations: Path) -> None:
    for name, spec, shards in GENERATIONS:
        command = [
            index_binary, "build", "--data", data, "--version", "v1", "--spec", spec, "--metric", "l2",
            "--shards", str(shards), "--out", str(generations / name), "--generation-id", name,
            "--quiet", "--jobs", "2",
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise HarnessError(f"steer-index build {name} failed: {result.stderr[-1500:]}")
    damaged = generations / DAMAGED
    shutil.copytree(generations / "gen-flat", damaged)
    shard = max((path for path in damaged.iterdir() if path.is_file()), key=lambda path: path.stat().st_size)
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0x5A
    shard.write_bytes(bytes(raw))
    manifest = damaged / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"gen-flat"', f'"{DAMAGED}"'))


def verify(index_binary: str, data: str, generation: str) -> tuple[bool, str]:
    result = subprocess.run(
        [index_binary, "verify", generation, "--data", data, "--sample", "50"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result.returncode == 0, (result.stdout + result.stderr)[-1500:]


class Writer(threading.Thread):
    """Upserts new items one per request until stopped or the connection breaks; `acknowledged` holds
    the items whose upsert was answered ok."""

    def __init__(self, port: int, prefix: str, dimension: int, seed: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.prefix = prefix
        self.dimension = dimension
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.acknowledged: list[tuple[str, list[float]]] = []
        self.errors: list[str] = []

    def run(self) -> None:
        try:
            with Connection(self.port, timeout=30.0) as connection:
                n = 0
                while not self.stop.is_set():
                    ident = f"{self.prefix}-{n}"
                    vector = random_vector(self.rng, self.dimension)
                    response = connection.call(
                        {
                            "op": "upsert",
                            "token": DEFAULT_TOKEN,
                            "items": [{"id": ident, "vector_b64": vector_b64(vector)}],
                        }
                    )
                    if response.get("ok") is True:
                        self.acknowledged.append((ident, vector))
                    elif response.get("error", {}).get("code") != "unavailable":
                        self.errors.append(str(response)[:300])
                    n += 1
        except (ConnectionBroken, OSError):
            pass  # the kill


def swap_in_background(port: int, target: str, answer: list[dict[str, Any]]) -> threading.Thread:
    def send() -> None:
        try:
            with Connection(port, timeout=60.0) as connection:
                answer.append(connection.call({"op": "swap", "token": DEFAULT_TOKEN, "generation": target}))
        except (ConnectionBroken, OSError):
            pass

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def check_restart(
    binary: str,
    data: str,
    dimension: int,
    round_number: int,
    before: str,
    target: str,
    swap_answer: dict[str, Any] | None,
    written: list[tuple[str, list[float]]],
    violations: list[dict[str, Any]],
) -> tuple[str, str | None]:
    """Restarts the server and checks it (see the module doc); returns the served generation and its
    directory."""
    server = Server(binary, data, server_arguments(dimension))
    try:
        with Connection(server.port, timeout=60.0) as connection:
            stats = connection.call({"op": "stats"})
            served = str(stats.get("generation"))
            directory = stats.get("generation_directory")

            def fail(kind: str, **detail: Any) -> None:
                violations.append(
                    {"kind": kind, "round": round_number, "before": before, "target": target} | detail
                )

            if served == DAMAGED:
                fail("damaged_generation_live")
            elif served not in (before, target):
                fail("unexpected_generation", served=served, warnings=server.stderr_tail(800))
            if target == DAMAGED and swap_answer is not None and swap_answer.get("ok") is True:
                fail("damaged_swap_acknowledged", answer=swap_answer)
            if swap_answer is not None and swap_answer.get("ok") is True and served != target:
                fail("acknowledged_swap_lost", served=served)
            if stats.get("indexed") != stats.get("items"):
                fail("index_disagrees_with_store", indexed=stats.get("indexed"), items=stats.get("items"))
            # Every acknowledged write: in the store, and found by its own vector.
            for start in range(0, len(written), 100):
                chunk = written[start : start + 100]
                got = connection.call({"op": "get", "ids": [ident for ident, _ in chunk]})
                if got.get("missing"):
                    fail("acknowledged_write_lost", missing=got["missing"][:10])
            for ident, vector in written[-50:]:
                response = connection.call(
                    {
                        "op": "search",
                        "vector_b64": vector_b64(vector),
                        "k": 10,
                        "nprobe": 16,
                        "ef_search": 512,
                    }
                )
                if response.get("generation") != served:
                    fail("answer_generation_mismatch", answer=response.get("generation"), served=served)
                if ident not in [hit.get("id") for hit in response.get("hits", [])]:
                    fail("acknowledged_write_not_searchable", id=ident, answer=str(response)[:300])
                    break
        if server.terminate() != 0:
            violations.append(
                {"kind": "unclean_exit", "round": round_number, "stderr": server.stderr_tail(800)}
            )
    finally:
        if server.alive():
            server.kill()
    return served, directory if isinstance(directory, str) else None


def run(
    binary: str,
    index_binary: str,
    rounds: int = 40,
    items: int = 20_000,
    dimension: int = 32,
    seed: int = 1,
    log: Any = print,
) -> dict[str, Any]:
    rng = random.Random(seed)
    workdir = Path(tempfile.mkdtemp(prefix="steer-swap-crash-"))
    data = str(workdir / "data")
    generations = workdir / "data" / "generations"  # swap only loads generations under DATA/generations
    generations.mkdir(parents=True)
    violations: list[dict[str, Any]] = []
    written: list[tuple[str, list[float]]] = []
    served_directories: set[str] = set()
    outcomes = {
        "swap_acknowledged": 0,
        "swap_refused": 0,
        "killed_before_answer": 0,
        "switched_before_answer": 0,
        "damaged_targets": 0,
    }
    served_after: dict[str, int] = {}
    try:
        fill(binary, data, items, dimension, rng)
        build_generations(index_binary, data, generations)
        server = Server(binary, data, server_arguments(dimension))
        with Connection(server.port, timeout=60.0) as connection:
            started = time.monotonic()
            response = connection.call(
                {"op": "swap", "token": DEFAULT_TOKEN, "generation": str(generations / "gen-ivf")}
            )
            swap_seconds = time.monotonic() - started
            if response.get("ok") is not True:
                raise HarnessError(f"the timing swap failed: {response}")
        server.terminate()
        current = "gen-ivf"
        log(f"an uninterrupted swap takes {swap_seconds * 1000:.0f} ms")
        for round_number in range(1, rounds + 1):
            if rng.random() < 0.2:
                target = DAMAGED
                outcomes["damaged_targets"] += 1
            else:
                target = rng.choice([name for name, _, _ in GENERATIONS if name != current])
            server = Server(binary, data, server_arguments(dimension))
            writer = Writer(server.port, f"r{round_number}", dimension, seed * 1000 + round_number)
            writer.start()
            time.sleep(rng.uniform(0.0, 0.05))
            answer: list[dict[str, Any]] = []
            swapper = swap_in_background(server.port, str(generations / target), answer)
            time.sleep(rng.uniform(0.0, 3.0) * swap_seconds)
            server.kill()
            writer.stop.set()
            writer.join(timeout=30)
            swapper.join(timeout=30)
            written.extend(writer.acknowledged)
            if writer.errors:
                violations.append({"kind": "write_error", "round": round_number, "errors": writer.errors[:5]})
            swap_answer = answer[0] if answer else None
            if swap_answer is None:
                outcomes["killed_before_answer"] += 1
            elif swap_answer.get("ok") is True:
                outcomes["swap_acknowledged"] += 1
            else:
                outcomes["swap_refused"] += 1
                code = swap_answer.get("error", {}).get("code")
                if target != DAMAGED or code != "corrupt":
                    violations.append(
                        {
                            "kind": "swap_refused",
                            "round": round_number,
                            "target": target,
                            "answer": swap_answer,
                        }
                    )
            served, directory = check_restart(
                binary, data, dimension, round_number, current, target, swap_answer, written, violations
            )
            served_after[served] = served_after.get(served, 0) + 1
            if swap_answer is None and served == target:
                outcomes["switched_before_answer"] += 1
            if directory:
                served_directories.add(directory)
            current = served
            if round_number % 10 == 0:
                log(
                    f"round {round_number}/{rounds}: {len(written)} acknowledged writes, "
                    f"{len(violations)} violations"
                )
        for directory in sorted(served_directories):
            ok, output = verify(index_binary, data, directory)
            if not ok:
                violations.append(
                    {"kind": "served_generation_broken", "directory": Path(directory).name, "verify": output}
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "rounds": rounds,
        "items": items,
        "dimension": dimension,
        "seed": seed,
        "generations": [f"{name} ({spec}, {shards} shards)" for name, spec, shards in GENERATIONS]
        + [DAMAGED],
        "uninterrupted_swap_ms": round(swap_seconds * 1000, 1),
        "outcomes": outcomes,
        "served_after_restart": served_after,
        "acknowledged_writes_checked": len(written),
        "violation_count": len(violations),
        "violations": violations[:100],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("binary", nargs="?", help="steer (default: STEER_BIN or .build/debug/steer)")
    parser.add_argument("index_binary", nargs="?", help="steer-index (default: beside steer)")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--dimension", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--results", help="results file (default swap-crash-results-<date>.json)")
    options = parser.parse_args()
    try:
        binary = steer_binary(options.binary)
        index_binary = options.index_binary or str(Path(binary).with_name("steer-index"))
        steer_binary(index_binary)
    except HarnessError as error:
        print(error, file=sys.stderr)
        return 2
    result = run(binary, index_binary, options.rounds, options.items, options.dimension, options.seed)
    path = results_path("swap-crash", options.results)
    write_results(path, binary, result)
    print(
        f"{result['rounds']} swaps killed (an uninterrupted swap: {result['uninterrupted_swap_ms']} ms); "
        f"outcomes {result['outcomes']}; served after restart {result['served_after_restart']}; "
        f"{result['acknowledged_writes_checked']} acknowledged writes checked; "
        f"violations: {result['violation_count']}"
    )
    print(f"results: {path}")
    return 1 if result["violation_count"] else 0


if __name__ == "__main__":
    sys.exit(main())
