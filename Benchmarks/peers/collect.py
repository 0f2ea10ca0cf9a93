#!/usr/bin/env python3
"""Gather peers.py's JSON lines into one results file with the run's context and a matched-recall table.

Matched recall: for each curve (engine + index) and target recall, the cheapest setting (smallest ef or
nprobe) that reaches the target, with its QPS and latency. A curve that never reaches a target has no
entry for it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
from typing import Any

TARGETS = (0.90, 0.95, 0.99)


def matched(
    rows: list[dict[str, Any]], targets: tuple[float, ...] = TARGETS
) -> list[dict[str, Any]]:
    curves: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        curves.setdefault((row["engine"], row["index"]), []).append(row)
    table = []
    for (engine, index), curve in curves.items():
        curve = sorted(curve, key=lambda r: r["value"])
        for target in targets:
            hit = next((r for r in curve if r["recall_at_k"] >= target), None)
            if hit:
                table.append(
                    {
                        "engine": engine,
                        "index": index,
                        "target": target,
                        "param": hit["param"],
                        "value": hit["value"],
                        "recall_at_k": hit["recall_at_k"],
                        "qps": hit["qps"],
                        "p50_us": hit["p50_us"],
                        "p99_us": hit["p99_us"],
                    }
                )
    return table


def machine(load_start: str) -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in open("/proc/cpuinfo")
            if line.startswith("model name")
        ),
        "?",
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "load_average_start": [float(v) for v in load_start.split()],
        "load_average_end": [
            float(v) for v in open("/proc/loadavg").read().split()[:3]
        ],
        "uptime_end": subprocess.run(
            ["uptime"], capture_output=True, text=True
        ).stdout.strip(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--load-start", required=True)
    ap.add_argument("--command", required=True)
    args = ap.parse_args()
    rows = [json.loads(line) for line in open(args.rows) if line.startswith("{")]
    out = {
        "tool": "Benchmarks/peers",
        "command": args.command.strip(),
        "commit": subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "machine": machine(args.load_start),
        "threads": {
            k: os.environ.get(k, "unset")
            for k in (
                "OPENBLAS_CORETYPE",
                "OPENBLAS_NUM_THREADS",
                "OMP_NUM_THREADS",
                "GLIBC_TUNABLES",
            )
        },
        "transparent_huge_pages": open("/sys/kernel/mm/transparent_hugepage/enabled")
        .read()
        .strip(),
        "data": {
            "directory": args.data,
            "meta": json.load(open(os.path.join(args.data, "meta.json"))),
        }
        if os.path.isdir(args.data)
        else {"file": args.data},
        "method": "one query per call on one thread, k=10, after 50 warm-up queries; Chroma through its HTTP client "
        "(answers parsed inside the timing); in-process peers also all queries in one call on `threads` threads "
        "(saturation_qps)",
        "rows": rows,
        "matched_recall": matched(rows),
    }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {args.out} ({len(rows)} rows)")


if __name__ == "__main__":
    main()
