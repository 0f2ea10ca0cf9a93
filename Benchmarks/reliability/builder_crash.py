#!/usr/bin/env python3
"""Crash harness for the index builder (`steer-index build`, docs/index-builder.md "Atomicity").

Fills a data directory through `steer serve` (`--items` random vectors), stops it, times one
uninterrupted build, then per round starts `steer-index build --out GENS/gen-<round>` with a random
spec and shard count, SIGKILLs it after a random fraction (0–120 %) of that time and checks that no
corrupt generation can go live:

- `GENS/gen-<round>` either does not exist or is complete: `steer-index verify GENDIR --data DIR/store`
  exits 0 (manifest, checksums, every item on its shard, recall);
- whatever the kill left is only `*.partial-*` directories, which the server's generation scan skips;
- every complete generation built so far still verifies at the end.

    python3 Benchmarks/reliability/builder_crash.py .build/debug/steer .build/debug/steer-index --rounds 40

Writes Benchmarks/reliability/builder-crash-results-<date>.json (or `--results`); exits 1 on a violation.
"""

from __future__ import annotations

import argparse
import base64
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    DEFAULT_TOKEN,
    HarnessError,
    fill_store,
    results_path,
    steer_binary,
    write_results,
)

SPECS = ["Flat", "HNSW32", "IVF16,Flat", "IVF16,SQ8"]


def fill(binary: str, data: str, items: int, dimension: int, rng: random.Random) -> None:
    def item(ident: int) -> dict[str, Any]:
        vector = struct.pack(f"<{dimension}f", *(rng.gauss(0, 1) for _ in range(dimension)))
        return {"id": ident if ident % 2 else f"s{ident}", "vector_b64": base64.b64encode(vector).decode()}

    fill_store(
        binary,
        data,
        ["--dimension", str(dimension), "--admin-token", DEFAULT_TOKEN, "--public-reads", "true"],
        items,
        item,
    )


def build_command(index_binary: str, data: str, out: str, spec: str, shards: int) -> list[str]:
    return [
        index_binary,
        "build",
        "--data",
        data,
        "--version",
        "v1",
        "--spec",
        spec,
        "--shards",
        str(shards),
        "--out",
        out,
        "--quiet",
        "--jobs",
        "2",
    ]


def verify(index_binary: str, data: str, generation: str) -> tuple[bool, str]:
    result = subprocess.run(
        [index_binary, "verify", generation, "--data", data, "--sample", "50"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result.returncode == 0, (result.stdout + result.stderr)[-1500:]


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
    workdir = Path(tempfile.mkdtemp(prefix="steer-builder-crash-"))
    data = str(workdir / "data")
    store = data + "/store"  # steer-index takes the store directory
    generations = workdir / "generations"
    generations.mkdir()
    violations: list[dict[str, Any]] = []
    completed: list[str] = []
    corrupt: list[str] = []
    killed = partial_left = 0
    try:
        fill(binary, data, items, dimension, rng)
        started = time.monotonic()
        subprocess.run(
            build_command(index_binary, store, str(generations / "gen-0"), "IVF16,Flat", 4),
            check=True,
            capture_output=True,
            timeout=600,
        )
        full_seconds = time.monotonic() - started
        completed.append(str(generations / "gen-0"))
        log(f"an uninterrupted build takes {full_seconds:.2f} s")
        for round_number in range(1, rounds + 1):
            out = generations / f"gen-{round_number}"
            spec = rng.choice(SPECS)
            shards = rng.randint(1, 4)
            process = subprocess.Popen(
                build_command(index_binary, store, str(out), spec, shards),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            time.sleep(rng.uniform(0.0, 1.2) * full_seconds)
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                killed += 1
            _, stderr = process.communicate(timeout=120)
            if process.returncode not in (0, -signal.SIGKILL):
                violations.append(
                    {
                        "kind": "build_failed",
                        "round": round_number,
                        "spec": spec,
                        "status": process.returncode,
                        "stderr": stderr.decode(errors="replace")[-800:],
                    }
                )
            if out.exists():
                ok, output = verify(index_binary, store, str(out))
                if ok:
                    completed.append(str(out))
                else:
                    corrupt.append(str(out))
                    violations.append(
                        {
                            "kind": "corrupt_generation",
                            "round": round_number,
                            "spec": spec,
                            "shards": shards,
                            "verify": output,
                        }
                    )
            elif process.returncode == 0:
                violations.append({"kind": "missing_generation", "round": round_number, "spec": spec})
            for entry in generations.iterdir():
                if entry.name.startswith("gen-") and ".partial" in entry.name:
                    partial_left += 1
                    shutil.rmtree(entry)
                elif entry.name.startswith("gen-") and str(entry) not in completed + corrupt:
                    violations.append({"kind": "unexpected_entry", "round": round_number, "name": entry.name})
            if round_number % 10 == 0:
                log(
                    f"round {round_number}/{rounds}: {killed} killed, {len(completed)} complete generations, "
                    f"{len(violations)} violations"
                )
        for generation in completed:
            ok, output = verify(index_binary, store, generation)
            if not ok:
                violations.append(
                    {"kind": "generation_broke_later", "generation": Path(generation).name, "verify": output}
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "rounds": rounds,
        "items": items,
        "dimension": dimension,
        "seed": seed,
        "specs": SPECS,
        "uninterrupted_build_seconds": round(full_seconds, 3),
        "killed": killed,
        "complete_generations": len(completed),
        "partial_directories_left": partial_left,
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
    parser.add_argument("--results", help="results file (default builder-crash-results-<date>.json)")
    options = parser.parse_args()
    try:
        binary = steer_binary(options.binary)
        index_binary = options.index_binary or str(Path(binary).with_name("steer-index"))
        steer_binary(index_binary)
    except HarnessError as error:
        print(error, file=sys.stderr)
        return 2
    result = run(
        binary,
        index_binary,
        rounds=options.rounds,
        items=options.items,
        dimension=options.dimension,
        seed=options.seed,
    )
    path = results_path("builder-crash", options.results)
    write_results(path, binary, result)
    print(
        f"{result['rounds']} builds, {result['killed']} killed (an uninterrupted build: "
        f"{result['uninterrupted_build_seconds']} s); {result['complete_generations']} complete generations "
        f"verified; {result['partial_directories_left']} partial directories left; "
        f"violations: {result['violation_count']}"
    )
    print(f"results: {path}")
    return 1 if result["violation_count"] else 0


if __name__ == "__main__":
    sys.exit(main())
