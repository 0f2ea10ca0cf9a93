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
        for task in ("standard", "positive", "negative", "compound"):
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
