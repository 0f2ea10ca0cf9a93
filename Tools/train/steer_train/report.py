"""The markdown tables of docs/results/*.json (pasted into docs/results.md): metrics per task, the
per-template / per-intent / per-mapper breakdowns, the retrieval-budget curve, the issue's targets and
the paired tests (with their count and Holm-corrected p-values)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from steer_train.evaluate import holm

TASKS = ("standard", "standard_sampled", "positive", "negative", "compound", "positive_v1", "negative_v1",
         "compound_v1", "positive_phrase", "negative_phrase", "compound_phrase")  # fmt: skip
COLUMNS = (
    ("backbone", "backbone"),
    ("filter_full", "filter full"),
    ("filter_top1pct", "filter top-1%"),
    ("filter_top100", "filter top-100"),
    ("semantic_top100", "semantic top-100"),
    ("dpr_soft", "DPR soft"),
    ("dpr_hybrid", "DPR hybrid"),
    ("dpr_hard", "DPR hard (mapper filter)"),
    ("dpr_soft_exact", "DPR soft, exact tag"),
    ("filter_v1_rule", "filter + v1 rule (leak)"),
)


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.4f}"


def _docs(results_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    return [(f, json.loads(f.read_text())) for f in sorted(results_dir.glob("*.json"))]


def _metrics(task: str) -> list[str]:
    out = ["ndcg@10", "recall@10"]
    if task.startswith(("negative", "compound")):
        out.append("violation@10")
    if task.startswith(("positive", "compound")):
        out.append("on_tag@10")
    return out


def _row_cells(methods: dict[str, Any], metric: str) -> str:
    return " | ".join(_fmt(methods.get(k, {}).get(metric)) for k, _ in COLUMNS)


def write_table(results_dir: Path) -> str:
    """One row per (file, task, metric). Phrase tasks: ``filter full`` filters by the intended tag
    (an oracle the phrase may not name); ``DPR hard`` is the filter by the tags the clause mapper
    recovers (none: no filter)."""
    rows: list[str] = [
        "| dataset | backbone | seed | task | n | metric | " + " | ".join(h for _, h in COLUMNS) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(COLUMNS),
    ]
    for _, doc in _docs(results_dir):
        res = doc["results"]
        # standard_sampled: backbone-only runs' anchor (target vs sampled negatives, not full ranking)
        for task in TASKS:
            if task not in res:
                continue
            for m in _metrics(task):
                methods = res[task]["methods"]
                if not any(m in v for v in methods.values()):
                    continue
                rows.append(
                    f"| {doc['dataset']} | {doc['backbone']} | {doc['seed']} | {task} | "
                    f"{res[task]['n']} | {m} | " + _row_cells(methods, m) + " |"
                )
    return "\n".join(rows)


def breakdown_table(results_dir: Path, metric: str = "ndcg@10") -> str:
    """NDCG@10 per label value (``template``, ``intent``, ``mapper``; not per phrase) of every task."""
    keys = ("backbone", "filter_full", "dpr_soft", "dpr_hybrid", "dpr_hard", "dpr_soft_exact")
    rows = [
        f"| file | task | by | value | n | {metric}: " + " | ".join(keys) + " |",
        "|---|---|---|---|---|" + "---|" * len(keys),
    ]
    for f, doc in _docs(results_dir):
        for task in TASKS:
            for by, values in doc["results"].get(task, {}).get("by", {}).items():
                if by == "phrase":
                    continue
                for value, entry in values.items():
                    cells = " | ".join(_fmt(entry["methods"].get(k, {}).get(metric)) for k in keys)
                    rows.append(f"| {f.stem} | {task} | {by} | {value} | {entry['n']} | {cells} |")
    return "\n".join(rows)


def budget_table(results_dir: Path, metric: str = "ndcg@10") -> str:
    """Retrieve-then-filter at each K (the whole ranking last) next to DPR soft, per task."""
    rows = [f"| file | task | {metric} at K = … | DPR soft |", "|---|---|---|---|"]
    for f, doc in _docs(results_dir):
        for task in TASKS:
            entry = doc["results"].get(task, {})
            if "budget" not in entry:
                continue
            methods = entry["methods"]
            curve = ", ".join(
                f"{b['k']}: {_fmt(methods.get(b['method'], {}).get(metric))}" for b in entry["budget"]
            )
            soft = _fmt(methods.get("dpr_soft", {}).get(metric))
            rows.append(f"| {f.stem} | {task} | {curve} | {soft} |")
    return "\n".join(rows)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def targets(results_dir: Path, dataset: str = "ml-100k") -> str:
    """The issue's targets that the results files can check, per backbone, averaged over the seeds
    present. Only files of the current protocol count (they record ``setup``): in older files
    ``positive`` is the leaky task now called ``positive_v1``. Phrase targets need every file to
    have the phrase tasks."""
    by_bb: dict[str, list[dict[str, Any]]] = {}
    for _, doc in _docs(results_dir):
        res = doc["results"]
        if doc["dataset"] == dataset and "setup" in res and "positive" in res:
            hidden = res["setup"].get("hide_tags", 0.0)
            key = str(doc.get("backbone")) + (f", {hidden:g} of tags hidden" if hidden else "")
            by_bb.setdefault(key, []).append(res)
    rows = ["| backbone | seeds | target | value | required | met |", "|---|---|---|---|---|---|"]

    def m(rs: list[dict[str, Any]], task: str, method: str, metric: str) -> float:
        return _mean([r[task]["methods"][method][metric] for r in rs if task in r])

    for bb, rs in sorted(by_bb.items()):
        checks: list[tuple[str, str, str, bool]] = []
        if "hidden" in bb:  # incomplete metadata: against the filter over the visible tags
            pf, ps = m(rs, "positive", "filter_full", "ndcg@10"), m(rs, "positive", "dpr_soft", "ndcg@10")
            ph = m(rs, "positive", "dpr_hybrid", "ndcg@10")
            checks += [
                ("hidden tags: soft / visible-tag filter full", f"{ps / pf:.3f}×", "≥ 1.5×", ps >= 1.5 * pf),
                (
                    "hidden tags: hybrid / visible-tag filter full",
                    f"{ph / pf:.3f}×",
                    "≥ 1.2×",
                    ph >= 1.2 * pf,
                ),
            ]
            for name, val, req, ok in checks:
                rows.append(f"| {bb} | {len(rs)} | {name} | {val} | {req} | {'yes' if ok else '**no**'} |")
            continue
        std = m(rs, "standard", "dpr_soft", "ndcg@10") / m(rs, "standard", "backbone", "ndcg@10")
        checks.append(("no prompt: DPR / backbone NDCG@10", f"{std:.3f}×", "1.00×", abs(std - 1) < 5e-4))
        pf = m(rs, "positive", "filter_full", "ndcg@10")
        ph = m(rs, "positive", "dpr_hybrid", "ndcg@10")
        ps = m(rs, "positive", "dpr_soft", "ndcg@10")
        on = m(rs, "positive", "dpr_soft", "on_tag@10")
        checks += [
            ("genre, leak-free: hybrid − filter full", f"{ph - pf:+.4f}", "≥ −0.005", ph >= pf - 0.005),
            ("genre, leak-free: soft / filter full; on-tag top 10", f"{ps / pf:.3f}×; {on:.3f}",
             "≥ 0.97×; ≥ 0.95", ps >= 0.97 * pf and on >= 0.95),
            ("retrieval budget: soft / filter top-1%",
             f"{ps / m(rs, 'positive', 'filter_top1pct', 'ndcg@10'):.3f}×", "≥ 1.5×",
             ps >= 1.5 * m(rs, "positive", "filter_top1pct", "ndcg@10")),
        ]  # fmt: skip
        ng = {k: m(rs, "negative", k, "recall@10") for k in ("dpr_soft", "dpr_hybrid", "filter_full")}
        vs, vh = (
            m(rs, "negative", "dpr_soft", "violation@10"),
            m(rs, "negative", "dpr_hybrid", "violation@10"),
        )
        checks += [
            ("negative: soft Recall@10 vs filter; soft violations",
             f"{ng['dpr_soft']:.4f} vs {ng['filter_full']:.4f}; {vs:.4f}", "≥; ≤ 0.01",
             ng["dpr_soft"] >= ng["filter_full"] and vs <= 0.01),
            ("negative: hybrid violations", f"{vh:.4f}", "0", vh == 0),
        ]  # fmt: skip
        if all("positive_phrase" in r for r in rs):
            s, x = (
                m(rs, "positive_phrase", "dpr_soft", "ndcg@10"),
                m(rs, "positive_phrase", "dpr_soft_exact", "ndcg@10"),
            )
            sem = m(rs, "positive_phrase", "semantic_top100", "ndcg@10")
            checks += [
                ("phrases: soft / soft with the exact tag", f"{s / x:.3f}×", "≥ 0.95×", s >= 0.95 * x),
                ("phrases: soft / semantic re-ranking", f"{s / sem:.3f}×", "≥ 1.3×", s >= 1.3 * sem),
            ]  # fmt: skip
        for name, val, req, ok in checks:
            rows.append(f"| {bb} | {len(rs)} | {name} | {val} | {req} | {'yes' if ok else '**no**'} |")
    return "\n".join(rows)


def targets_by_dataset(results_dir: Path) -> str:
    """:func:`targets` for every data set with current-protocol files, each under its own heading
    (the issue's targets hold per data set and backbone: seeds of different data sets never share a
    mean); ``ml-100k``'s table is always printed."""
    names = {"ml-100k"}
    for _, doc in _docs(results_dir):
        res = doc["results"]
        if "setup" in res and "positive" in res:
            names.add(str(doc["dataset"]))
    return "\n\n".join(f"Targets on {name}:\n\n{targets(results_dir, name)}" for name in sorted(names))


def significance(results_dir: Path) -> str:
    """Every paired test of every file, each file's family size and Holm-corrected p (computed here
    for files written before the correction was stored)."""
    rows: list[str] = []
    total = 0
    for f, doc in _docs(results_dir):
        comps = doc["results"].get("comparisons", [])
        adj = [c.get("p_holm") for c in comps]
        if any(a is None for a in adj):
            adj = holm([c["p_perm"] for c in comps])
        total += len(comps)
        for c, p in zip(comps, adj, strict=True):
            rows.append(
                f"| {f.stem} | {len(comps)} | {c['task']} | {c['metric']} | {c['method']} | "
                f"{c['baseline']} | {c['diff']:+.4f} | {c['t']:.2f} | {c['p_perm']:.4f} | {p:.4f} |"
            )
    head = [
        f"{total} paired tests in {len(_docs(results_dir))} files; Holm's correction is applied within "
        "each file (its family size is the second column).",
        "",
        "| file | tests in file | task | metric | DPR mode | baseline | mean diff | t | p (perm.) "
        "| p (Holm) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    return "\n".join(head + rows)
