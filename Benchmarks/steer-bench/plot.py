#!/usr/bin/env python3
"""Plots of issue 7's results (matplotlib): recall against QPS with the peers, latency CDFs, and latency
against offered load. Reads Benchmarks/steer-bench/results/<set>-{hnsw,ivf,load,mix}.json and
Benchmarks/peers/results/<set>.json; writes PNGs to Benchmarks/steer-bench/plots/.

    python plot.py SET [SET ...]      # e.g. 200k64 200k384 (run with the peers venv's python)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
PEERS = ROOT.parent / "peers" / "results"
PLOTS = ROOT / "plots"


def load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def context(report: dict[str, Any]) -> str:
    m = report["machine"]
    load_avg = m.get("load_average_start", [])
    return (
        f"{m['cores']} cores, {m['cpu']}, load avg {load_avg[0] if load_avg else '?'}"
    )


def recall_qps(name: str) -> Path | None:
    fig, ax = plt.subplots(figsize=(8, 5.5))
    ctx = ""
    for kind, marker in (("hnsw", "o"), ("ivf", "s")):
        report = load(RESULTS / f"{name}-{kind}.json")
        if not report:
            continue
        ctx = context(report)
        spec = (
            report["server"].get("requested_spec")
            or report["server"].get("index_spec")
            or kind
        )
        for conc, style in ((1, "-"), (4, "--")):
            levels = sorted(
                (lv for lv in report["levels"] if lv["concurrency"] == conc),
                key=lambda lv: lv["value"] or 0,
            )
            if levels:
                ax.plot(
                    [lv["recall_at_k"] for lv in levels],
                    [lv["qps"] for lv in levels],
                    style,
                    marker=marker,
                    linewidth=2,
                    label=f"Steer {spec}, end to end, {conc} conn",
                )
    peers = load(PEERS / f"{name}.json")
    if peers:
        curves: dict[str, list[dict[str, Any]]] = {}
        for row in peers["rows"]:
            curves.setdefault(f"{row['engine']} {row['index']}", []).append(row)
        for label, rows in curves.items():
            rows.sort(key=lambda r: r["value"])
            ax.plot(
                [r["recall_at_k"] for r in rows],
                [r["qps"] for r in rows],
                ":",
                marker=".",
                label=f"{label} (in-process, 1 thread)"
                if "chroma" not in label
                else f"{label} (its HTTP client)",
            )
    if not ax.lines:
        plt.close(fig)
        return None
    for target in (0.90, 0.95, 0.99):
        ax.axvline(target, color="grey", linewidth=0.5)
    ax.set_yscale("log")
    ax.set_xlabel("recall@10")
    ax.set_ylabel("queries per second (log)")
    ax.set_title(f"{name}: recall against QPS ({ctx})", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    path = PLOTS / f"{name}-recall-qps.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def tail_points(cdf: list[list[float]]) -> tuple[list[float], list[float]]:
    """CDF points as fractions strictly inside (0, 1), for a logit axis."""
    points = [(x, min(max(p / 100, 0.001), 0.99999)) for x, p in cdf]
    return [x for x, _ in points], [y for _, y in points]


def cdfs(name: str) -> Path | None:
    fig, ax = plt.subplots(figsize=(8, 5))
    ctx = ""
    hnsw = load(RESULTS / f"{name}-hnsw.json")
    if hnsw:
        ctx = context(hnsw)
        values = sorted({lv["value"] for lv in hnsw["levels"]})
        picked = [
            v
            for v in values
            if any(
                lv["value"] == v and lv["recall_at_k"] >= 0.95 for lv in hnsw["levels"]
            )
        ][:1] or values[-1:]
        for lv in hnsw["levels"]:
            if lv["value"] in picked:
                xs, ys = tail_points(lv["cdf"])
                ax.plot(
                    xs,
                    ys,
                    label=f"closed loop, ef {lv['value']}, {lv['concurrency']} conn ({lv['qps']:.0f} QPS)",
                )
    load_report = load(RESULTS / f"{name}-load.json")
    if load_report:
        for lv in load_report["levels"]:
            xs, ys = tail_points(lv["cdf"])
            ax.plot(
                xs,
                ys,
                "--",
                linewidth=1,
                label=f"open loop, {lv['offered_rate']:.0f}/s offered",
            )
    if not ax.lines:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_yscale("logit")
    ax.set_xlabel("latency µs (log)")
    ax.set_ylabel(
        "fraction of requests at or below (logit scale: the tail is stretched)"
    )
    ax.set_title(f"{name}: search latency CDF through steer serve ({ctx})", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    path = PLOTS / f"{name}-latency-cdf.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency_load(name: str) -> Path | None:
    report = load(RESULTS / f"{name}-load.json")
    if not report:
        return None
    levels = sorted(report["levels"], key=lambda lv: lv["offered_rate"])
    rates = [lv["offered_rate"] for lv in levels]
    fig, ax = plt.subplots(figsize=(8, 5))
    for key, label in (
        ("p50", "p50"),
        ("p99", "p99"),
        ("p999", "p99.9"),
        ("max", "max"),
    ):
        ax.plot(
            rates,
            [lv["latency_us"][key] / 1000 for lv in levels],
            marker="o",
            label=label,
        )
    ax.set_yscale("log")
    ax.set_xlabel(
        "offered load, requests/s (open loop, latency from the scheduled send time)"
    )
    ax.set_ylabel("latency ms (log)")
    ef = levels[0]["value"]
    ax.set_title(
        f"{name}: latency against offered load, HNSW ef {ef} ({context(report)})",
        fontsize=9,
    )
    ax2 = ax.twinx()
    ax2.plot(
        rates, [lv["qps"] for lv in levels], "k:", marker="x", label="achieved QPS"
    )
    ax2.set_ylabel("achieved QPS")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="upper left")
    ax.grid(True, which="both", alpha=0.3)
    path = PLOTS / f"{name}-latency-load.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def matched_table(name: str) -> Path | None:
    """Markdown: at each target recall, the cheapest setting of every curve that reaches it."""
    rows: list[
        tuple[float, str, str, float, float, float, float]
    ] = []  # target, engine, setting, recall, qps, p50, p99
    for kind in ("hnsw", "ivf"):
        report = load(RESULTS / f"{name}-{kind}.json")
        if not report:
            continue
        spec = (
            report["server"].get("requested_spec")
            or report["server"].get("index_spec")
            or kind
        )
        for conc in (1, 4):
            levels = sorted(
                (lv for lv in report["levels"] if lv["concurrency"] == conc),
                key=lambda lv: lv["value"] or 0,
            )
            for target in (0.90, 0.95, 0.99):
                hit = next((lv for lv in levels if lv["recall_at_k"] >= target), None)
                if hit:
                    rows.append(
                        (
                            target,
                            f"Steer end to end, {conc} conn",
                            f"{spec} {hit['param']} {hit['value']}",
                            hit["recall_at_k"],
                            hit["qps"],
                            hit["latency_us"]["p50"],
                            hit["latency_us"]["p99"],
                        )
                    )
    peers = load(PEERS / f"{name}.json")
    if peers:
        for m in peers["matched_recall"]:
            rows.append(
                (
                    m["target"],
                    m["engine"],
                    f"{m['index']} {m['param']} {m['value']}",
                    m["recall_at_k"],
                    m["qps"],
                    m["p50_us"],
                    m["p99_us"],
                )
            )
    if not rows:
        return None
    lines = [
        "| target | engine | setting | recall@10 | QPS | p50 µs | p99 µs |",
        "|---|---|---|---|---|---|---|",
    ]
    for target, engine, setting, recall, qps, p50, p99 in sorted(
        rows, key=lambda r: (r[0], -r[4])
    ):
        lines.append(
            f"| {target:.2f} | {engine} | {setting} | {recall:.3f} | {qps:,.0f} | {p50:,.0f} | {p99:,.0f} |"
        )
    path = PLOTS / f"{name}-matched.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    PLOTS.mkdir(exist_ok=True)
    for name in sys.argv[1:] or ["200k64"]:
        for make in (recall_qps, cdfs, latency_load, matched_table):
            path = make(name)
            if path:
                print(f"wrote {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
