"""The markdown table of docs/results/*.json (pasted into docs/results.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.4f}"


def write_table(results_dir: Path) -> str:
    rows: list[str] = [
        "| dataset | backbone | seed | task | n | metric | backbone | filter full | filter top-100 "
        "| semantic top-100 | DPR soft | DPR hybrid | DPR hard |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in sorted(results_dir.glob("*.json")):
        doc: dict[str, Any] = json.loads(f.read_text())
        res = doc["results"]
        # standard_sampled: backbone-only runs' anchor (target vs sampled negatives, not full ranking)
        for task in ("standard", "standard_sampled", "positive", "negative", "compound"):
            if task not in res:
                continue
            methods = res[task]["methods"]
            metrics = ["ndcg@10", "recall@10"] + (
                ["violation@10"] if task in ("negative", "compound") else []
            )
            for m in metrics:
                cells = [
                    _fmt(methods.get(k, {}).get(m))
                    for k in ("backbone", "filter_full", "filter_top100", "semantic_top100",
                              "dpr_soft", "dpr_hybrid", "dpr_hard")
                ]  # fmt: skip
                rows.append(
                    f"| {doc['dataset']} | {doc['backbone']} | {doc['seed']} | {task} | "
                    f"{res[task]['n']} | {m} | " + " | ".join(cells) + " |"
                )
    return "\n".join(rows)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def targets(results_dir: Path, dataset: str = "ml-100k") -> str:
    """The issue's MovieLens-100K targets, per backbone, averaged over the seeds present."""
    by_bb: dict[str, list[dict[str, Any]]] = {}
    for f in sorted(results_dir.glob("*.json")):
        doc = json.loads(f.read_text())
        if doc["dataset"] == dataset:
            by_bb.setdefault(doc["backbone"], []).append(doc["results"])
    rows = [
        "| backbone | seeds | target | value | required | met |",
        "|---|---|---|---|---|---|",
    ]

    def m(rs: list[dict[str, Any]], task: str, method: str, metric: str) -> float:
        return _mean([r[task]["methods"][method][metric] for r in rs])

    for bb, rs in sorted(by_bb.items()):
        n = len(rs)
        std_ratio = m(rs, "standard", "dpr_soft", "ndcg@10") / m(rs, "standard", "backbone", "ndcg@10")
        p = {
            k: m(rs, "positive", k, "ndcg@10")
            for k in ("dpr_soft", "dpr_hybrid", "filter_full", "filter_top100")
        }
        ng = {k: m(rs, "negative", k, "recall@10") for k in ("dpr_soft", "dpr_hybrid", "filter_full")}
        v_soft = m(rs, "negative", "dpr_soft", "violation@10")
        v_hyb = m(rs, "negative", "dpr_hybrid", "violation@10")
        checks = [
            ("no prompt: DPR / backbone NDCG@10", f"{std_ratio:.3f}×", "≥ 0.98×", std_ratio >= 0.98),
            ("positive: soft / filter top-100", f"{p['dpr_soft'] / p['filter_top100']:.3f}×", "≥ 1.5×",
             p["dpr_soft"] >= 1.5 * p["filter_top100"]),
            ("positive: soft / filter full", f"{p['dpr_soft'] / p['filter_full']:.3f}×", "≥ 1.0×",
             p["dpr_soft"] >= p["filter_full"]),
            ("positive: hybrid / filter full", f"{p['dpr_hybrid'] / p['filter_full']:.3f}×", "≥ 1.2×",
             p["dpr_hybrid"] >= 1.2 * p["filter_full"]),
            ("negative: soft Recall@10 vs filter full", f"{ng['dpr_soft']:.4f} vs {ng['filter_full']:.4f}",
             "≥", ng["dpr_soft"] >= ng["filter_full"]),
            ("negative: soft violation rate", f"{v_soft:.4f}", "≤ 0.05", v_soft <= 0.05),
            ("negative: hybrid violations, Recall@10 vs filter full",
             f"{v_hyb:.4f}; {ng['dpr_hybrid']:.4f} vs {ng['filter_full']:.4f}", "0 and >",
             v_hyb == 0 and ng["dpr_hybrid"] > ng["filter_full"]),
        ]  # fmt: skip
        for name, val, req, ok in checks:
            rows.append(f"| {bb} | {n} | {name} | {val} | {req} | {'yes' if ok else '**no**'} |")
    return "\n".join(rows)


def significance(results_dir: Path) -> str:
    rows = [
        "| file | task | metric | DPR mode | baseline | mean diff | t | p (perm.) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in sorted(results_dir.glob("*.json")):
        doc = json.loads(f.read_text())
        for c in doc["results"].get("comparisons", []):
            rows.append(
                f"| {f.stem} | {c['task']} | {c['metric']} | {c['method']} | {c['baseline']} | "
                f"{c['diff']:+.4f} | {c['t']:.2f} | {c['p_perm']:.4f} |"
            )
    return "\n".join(rows)
