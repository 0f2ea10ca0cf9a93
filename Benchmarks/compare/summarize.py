#!/usr/bin/env python3
"""One like-for-like run's table (Benchmarks/compare/run.sh): every system at matched recall, the
benchmarks issue's targets as ratios from this one run, and plots.

    python3 Benchmarks/compare/summarize.py RESULTS_DIR [--recall 0.95]

Reads what run.sh wrote (run.json, steer.json, steer-batch.json, inproc.jsonl, peers.json, chroma.json, steer-python.json,
poisson.json, poisson-nospin.json; any may be missing) and writes summary.json and summary.md beside them,
and recall–QPS, latency-CDF and CPU-per-request plots (PNG) when matplotlib is importable.

Matched recall: for each system, the setting with the highest QPS among those whose recall@k reaches
``--recall`` (the same rule for every system; none reaching it is reported as such, never extrapolated).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

Row = dict[str, Any]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def read_jsonl(path: Path) -> list[Row]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip().startswith("{")]


def curves(results: Path) -> dict[str, list[Row]]:
    """Every system's sweep as rows of {value, recall, qps, p50_us?, p99_us?}."""
    out: dict[str, list[Row]] = {}
    for file, tag in (("steer.json", ""), ("steer-nospin.json", ", spin off")):
        steer = read_json(results / file)
        if not steer:
            continue
        for level in steer["levels"]:
            if level.get("offered_rate") is not None or level.get("param") != "ef_search":
                continue
            name = f"steer server{tag}, {level['concurrency']} connection(s), lean Swift client"
            lat = level["latency_us"]
            out.setdefault(name, []).append(
                {
                    "value": level["value"],
                    "recall": level["recall_at_k"],
                    "qps": level["qps"],
                    "p50_us": lat["p50"],
                    "p99_us": lat["p99"],
                    "server_cpu_per_request_us": (level.get("server_cpu") or {}).get("cpu_per_request_us"),
                }
            )
    batched = read_json(results / "steer-batch.json")
    if batched:
        size = batched["settings"].get("batch", 1)
        for level in batched["levels"]:
            if level.get("offered_rate") is not None or level.get("param") != "ef_search":
                continue
            name = (
                f"steer server, {size}-query batches, {level['concurrency']} connection(s), lean Swift client"
            )
            cpu = (level.get("server_cpu") or {}).get("cpu_per_request_us")
            out.setdefault(name, []).append(
                {
                    "value": level["value"],
                    "recall": level["recall_at_k"],
                    # Queries, not requests: comparable with the in-process rows.
                    "qps": level["queries_per_second"],
                    "p50_us": level["latency_us"]["p50"],
                    "p99_us": level["latency_us"]["p99"],
                    "server_cpu_per_request_us": round(cpu / size, 1) if cpu is not None else None,
                }
            )
    for row in read_jsonl(results / "inproc.jsonl"):
        out.setdefault("SteerIndex in process, 1 thread", []).append(
            {
                "value": row["value"],
                "recall": row["recall_at_10"],
                "qps": row["qps_single"],
                "p50_us": round(1e6 / row["qps_single"], 1),
                "build_s": row.get("build_s"),
            }
        )
    for file in ("peers.json", "chroma.json", "steer-python.json"):
        data = read_json(results / file)
        if not data:
            continue
        for row in data["rows"]:
            if row.get("param") != "ef_search":
                continue
            name = row["engine"]
            if "saturation_qps" in row or name in ("chroma server", "steer server (Python client)"):
                single = f"{name}, 1 thread" if "saturation_qps" in row else f"{name}, 1 connection"
                out.setdefault(single, []).append(
                    {
                        "value": row["value"],
                        "recall": row["recall_at_k"],
                        "qps": row["qps"],
                        "p50_us": row.get("p50_us"),
                        "p99_us": row.get("p99_us"),
                        "build_s": row.get("build_s"),
                    }
                )
            if "saturation_qps" in row:
                out.setdefault(f"{name}, batch on {row['threads']} thread(s)", []).append(
                    {
                        "value": row["value"],
                        "recall": row["saturation_recall_at_k"],
                        "qps": row["saturation_qps"],
                    }
                )
    for rows in out.values():
        rows.sort(key=lambda r: r["value"])
    return out


def matched(rows: list[Row], recall: float) -> Row | None:
    passing = [r for r in rows if r["recall"] is not None and r["recall"] >= recall]
    return max(passing, key=lambda r: r["qps"]) if passing else None


def find(names: dict[str, Row | None], prefix: str) -> tuple[str, Row] | None:
    for name, row in names.items():
        if name.startswith(prefix) and row is not None:
            return name, row
    return None


def poisson_levels(results: Path, file: str) -> list[Row]:
    data = read_json(results / file)
    if not data:
        return []
    rows = []
    for level in data["levels"]:
        if level.get("load_fraction") is None:
            continue
        cpu = level.get("server_cpu") or {}
        rows.append(
            {
                "load_fraction": level["load_fraction"],
                "offered_rate": level.get("offered_rate"),
                "qps": level["qps"],
                "recall": level["recall_at_k"],
                "ef_search": level["value"],
                "p50_us": level["latency_us"]["p50"],
                "p99_us": level["latency_us"]["p99"],
                "p999_us": level["latency_us"]["p999"],
                "server_cpu_per_request_us": cpu.get("cpu_per_request_us"),
                "server_cores": cpu.get("cores"),
                "errors": level["errors"],
            }
        )
    return sorted(rows, key=lambda r: r["load_fraction"])


def targets(best: dict[str, Row | None], all_curves: dict[str, list[Row]], results: Path) -> list[Row]:
    out: list[Row] = []

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    inproc = find(best, "SteerIndex in process")
    hnsw1 = find(best, "hnswlib, 1 thread")
    hnsw_sat = find(best, "hnswlib, batch")
    server1 = find(best, "steer server, 1 connection")
    server4 = find(best, "steer server, 4 connection")
    server1_off = find(best, "steer server, spin off, 1 connection")
    server4_off = find(best, "steer server, spin off, 4 connection")
    chroma = find(best, "chroma server")
    steer_py = find(best, "steer server (Python client)")
    if inproc and hnsw1:
        r = ratio(inproc[1]["qps"], hnsw1[1]["qps"])
        out.append(
            {
                "target": "in-process SteerIndex single-query QPS >= 1.0x hnswlib (1 thread)",
                "ratio": r,
                "met": r is not None and r >= 1.0,
            }
        )
    for tag, s4, s1 in (("", server4, server1), (" (spin off)", server4_off, server1_off)):
        if s4 and hnsw_sat:
            r = ratio(s4[1]["qps"], hnsw_sat[1]["qps"])
            out.append(
                {
                    "target": f"server saturation per core >= 0.8x in-process hnswlib per core{tag}",
                    "ratio": r,
                    "met": r is not None and r >= 0.8,
                }
            )
        if s1 and inproc:
            same = [r for r in all_curves.get(inproc[0], []) if r["value"] == s1[1]["value"]]
            if same:
                out.append(
                    {
                        "target": f"one connection p50 <= in-process search time + 40 us (same efSearch){tag}",
                        "ef_search": s1[1]["value"],
                        "p50_us": s1[1]["p50_us"],
                        "in_process_us": same[0]["p50_us"],
                        "overhead_us": round(s1[1]["p50_us"] - same[0]["p50_us"], 1),
                        "met": s1[1]["p50_us"] <= same[0]["p50_us"] + 40,
                    }
                )
    batch4: tuple[str, Row] | None = None
    for name, row in best.items():
        if row is not None and "-query batches, 4 connection" in name and hnsw_sat:
            batch4 = (name, row)
    if batch4 and hnsw_sat:
        r = ratio(batch4[1]["qps"], hnsw_sat[1]["qps"])
        out.append(
            {
                "target": "not an issue target: the saturation bound (0.8x) with batched requests, queries/s",
                "ratio": r,
                "met": r is not None and r >= 0.8,
            }
        )
    lean1 = server1 or server1_off
    if lean1 and chroma:
        r = ratio(lean1[1]["qps"], chroma[1]["qps"])
        out.append(
            {
                "target": "one connection QPS >= 5x Chroma's (Steer's Swift client, Chroma's Python client)",
                "ratio": r,
                "met": r is not None and r >= 5,
            }
        )
    if steer_py and chroma:
        r = ratio(steer_py[1]["qps"], chroma[1]["qps"])
        out.append(
            {
                "target": "same client stack: Steer's Python client vs Chroma's (5x)",
                "ratio": r,
                "met": r is not None and r >= 5,
            }
        )
    for file, label in (("poisson.json", "spin defaults"), ("poisson-nospin.json", "spin off")):
        levels = poisson_levels(results, file)
        half = [lv for lv in levels if abs(lv["load_fraction"] - 0.5) < 1e-9]
        if half:
            out.append(
                {
                    "target": f"Poisson at 50 % of the maximum: p99 <= 2 ms ({label})",
                    "p99_us": half[0]["p99_us"],
                    "met": half[0]["p99_us"] <= 2000,
                }
            )
        low = [lv for lv in levels if abs(lv["load_fraction"] - 0.1) < 1e-9]
        top = [lv for lv in levels if abs(lv["load_fraction"] - 1.0) < 1e-9]
        if low and top and low[0]["server_cpu_per_request_us"] and top[0]["server_cpu_per_request_us"]:
            r = ratio(low[0]["server_cpu_per_request_us"], top[0]["server_cpu_per_request_us"])
            out.append(
                {
                    "target": f"CPU per request at 10 % load <= 1.5x that at saturation ({label})",
                    "ratio": r,
                    "met": r is not None and r <= 1.5,
                }
            )
    return out


def markdown(summary: dict[str, Any]) -> str:
    run = summary["run"] or {}
    lines = [
        f"# Like for like: {run.get('set')} (recall@{run.get('k', 10)} >= {summary['recall']})",
        "",
        f"Commit {run.get('commit')}; {run.get('cpu')}, {run.get('cores')} cores; measured phases on core "
        f"{run.get('core')}, clients on core {run.get('client_core')}; builds on {run.get('build_threads')} threads; "
        f"{run.get('threads')}; THP {run.get('thp')}; {run.get('other_load')}.",
        f"Start: {run.get('uptime_start')}. End: {run.get('uptime_end')}.",
        "",
        "| system | setting | recall | QPS | p50 µs | p99 µs |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in summary["matched"].items():
        if row is None:
            best = max(summary["curves"][name], key=lambda r: r["recall"])
            lines.append(f"| {name} | none reaches it (best {best['recall']} at {best['value']}) | | | | |")
        else:
            lines.append(
                f"| {name} | ef {row['value']} | {row['recall']} | {row['qps']} | {row.get('p50_us', '')} | {row.get('p99_us', '')} |"
            )
    lines += ["", "| target | value | met |", "|---|---|---|"]
    for t in summary["targets"]:
        value = {k: v for k, v in t.items() if k not in ("target", "met")}
        lines.append(f"| {t['target']} | {json.dumps(value)} | {'yes' if t['met'] else 'no'} |")
    for key, label in (("poisson", "spin defaults"), ("poisson_nospin", "spin off")):
        if summary[key]:
            lines += [
                "",
                f"Poisson arrivals ({label}):",
                "",
                "| load | offered/s | QPS | p50 µs | p99 µs | p99.9 µs | server CPU/request µs | server cores |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for lv in summary[key]:
                lines.append(
                    f"| {lv['load_fraction']} | {lv['offered_rate']} | {lv['qps']} | {lv['p50_us']} | {lv['p99_us']} | {lv['p999_us']} | {lv['server_cpu_per_request_us']} | {lv['server_cores']} |"
                )
    return "\n".join(lines) + "\n"


def plots(results: Path, summary: dict[str, Any]) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    fig, ax = plt.subplots(figsize=(7, 5))
    for name, rows in summary["curves"].items():
        ax.plot([r["recall"] for r in rows], [r["qps"] for r in rows], marker="o", label=name)
    ax.set_xlabel(f"recall@{(summary['run'] or {}).get('k', 10)}")
    ax.set_ylabel("QPS (one core)")
    ax.set_yscale("log")
    ax.set_title(f"{(summary['run'] or {}).get('set')}: recall against QPS")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(results / "recall-qps.png", dpi=110)
    made.append("recall-qps.png")
    plt.close(fig)
    for file, tag in (("poisson.json", "spin defaults"), ("poisson-nospin.json", "spin off")):
        data = read_json(results / file)
        if not data:
            continue
        fig, ax = plt.subplots(figsize=(7, 5))
        for level in data["levels"]:
            if level.get("load_fraction") is None or not level.get("cdf"):
                continue
            ax.plot(
                [c[0] for c in level["cdf"]],
                [c[1] for c in level["cdf"]],
                label=f"{level['load_fraction']:.0%} load",
            )
        ax.set_xscale("log")
        ax.set_xlabel("latency µs (from the scheduled send time)")
        ax.set_ylabel("percentile")
        ax.set_title(f"Poisson arrivals, {tag}")
        ax.legend()
        fig.tight_layout()
        name = f"latency-cdf-{file.removesuffix('.json')}.png"
        fig.savefig(results / name, dpi=110)
        made.append(name)
        plt.close(fig)
    if summary["poisson"] or summary["poisson_nospin"]:
        fig, ax = plt.subplots(figsize=(7, 5))
        for key, tag in (("poisson", "spin defaults"), ("poisson_nospin", "spin off")):
            if summary[key]:
                ax.plot(
                    [lv["load_fraction"] for lv in summary[key]],
                    [lv["server_cpu_per_request_us"] for lv in summary[key]],
                    marker="o",
                    label=tag,
                )
        ax.set_xlabel("fraction of the maximum load")
        ax.set_ylabel("server CPU per request (µs)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(results / "cpu-per-request.png", dpi=110)
        made.append("cpu-per-request.png")
        plt.close(fig)
    return made


def summarize(results: Path, recall: float) -> dict[str, Any]:
    all_curves = curves(results)
    best = {name: matched(rows, recall) for name, rows in all_curves.items()}
    summary: dict[str, Any] = {
        "run": read_json(results / "run.json"),
        "recall": recall,
        "rule": "per system, the highest-QPS setting whose recall@k reaches the target",
        "curves": all_curves,
        "matched": best,
        "poisson": poisson_levels(results, "poisson.json"),
        "poisson_nospin": poisson_levels(results, "poisson-nospin.json"),
    }
    summary["targets"] = targets(best, all_curves, results)
    summary["plots"] = plots(results, summary)
    (results / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (results / "summary.md").write_text(markdown(summary))
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--recall", type=float, default=0.95)
    args = ap.parse_args()
    summarize(args.results, args.recall)
    print((args.results / "summary.md").read_text())


if __name__ == "__main__":
    main()
