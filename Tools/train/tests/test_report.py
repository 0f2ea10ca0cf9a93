"""The results tables: rows per task (v1 and phrase tasks included), the breakdowns, the budget curve,
the targets and the significance table with its test count and Holm-corrected p-values (also for
files written before the correction was stored)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from steer_train.report import (
    breakdown_table,
    budget_table,
    significance,
    targets,
    targets_by_dataset,
    write_table,
)


def _methods(scale: float, extra: dict[str, float] | None = None) -> dict[str, dict[str, float]]:
    names = ["backbone", "filter_full", "filter_top10", "filter_top100", "filter_top1pct", "semantic_top100",
             "dpr_soft", "dpr_hybrid", "dpr_hard"]  # fmt: skip
    return {m: {"ndcg@10": scale * (i + 1) / 100, "recall@10": scale * (i + 2) / 100, **(extra or {})}
            for i, m in enumerate(names)}  # fmt: skip


def _comp(task: str, p: float, **kw: Any) -> dict[str, Any]:
    return {"task": task, "metric": "ndcg@10", "method": "dpr_soft", "baseline": "filter_full",
            "diff": 0.01, "t": 1.0, "p_perm": p, **kw}  # fmt: skip


def _write(d: Path) -> None:
    new = {
        "standard": {"n": 5, "methods": {"backbone": {"ndcg@10": 0.1, "recall@10": 0.2},
                                         "dpr_soft": {"ndcg@10": 0.1, "recall@10": 0.2}}},
        "positive": {"n": 8, "methods": _methods(1.0, {"on_tag@10": 0.9}),
                     "budget": [{"method": "filter_top10", "k": 10}, {"method": "filter_top100", "k": 100},
                                {"method": "filter_full", "k": 500}],
                     "by": {"template": {"how about {a}": {"n": 3, "methods": _methods(2.0)}},
                            "phrase": {"make me laugh": {"n": 1, "methods": _methods(3.0)}}}},
        "negative": {"n": 4, "methods": _methods(0.5, {"violation@10": 0.25})},
        "positive_v1": {"n": 5, "methods": {**_methods(1.5), "filter_v1_rule": {"ndcg@10": 0.6}}},
        "positive_phrase": {"n": 6, "methods": {**_methods(0.7), "dpr_soft_exact": {"ndcg@10": 0.5}}},
        "comparisons": [_comp("positive", 0.01, p_holm=0.02, family=2),
                        _comp("negative", 0.5, p_holm=0.5, family=2)],
        "setup": {"ties": "item", "hide_tags": 0.0},
    }  # fmt: skip
    old = {
        "standard": {"n": 5, "methods": _methods(1.0)},
        "positive": {"n": 5, "methods": _methods(1.0)},
        "negative": {"n": 5, "methods": _methods(1.0, {"violation@10": 0.0})},
        "comparisons": [_comp("positive", 0.01), _comp("positive", 0.04), _comp("negative", 0.03)],
    }
    for name, res in (("new", new), ("old", old)):
        doc = {"dataset": "ml-100k", "backbone": "sasrec", "seed": 0, "results": res}
        (d / f"{name}.json").write_text(json.dumps(doc))


def test_tables(tmp_path: Path) -> None:
    _write(tmp_path)
    table = write_table(tmp_path)
    assert "| ml-100k | sasrec | 0 | positive_v1 | 5 | ndcg@10 | 0.0150 |" in table
    assert "| ml-100k | sasrec | 0 | positive | 8 | on_tag@10 | 0.9000 |" in table
    assert "| ml-100k | sasrec | 0 | negative | 4 | violation@10 | 0.2500 |" in table
    phrase_row = next(r for r in table.splitlines() if "| positive_phrase | 6 | ndcg@10 |" in r)
    assert phrase_row.endswith("| 0.5000 | – |")  # the exact-tag column; no v1-rule filter there
    v1_row = next(r for r in table.splitlines() if "| positive_v1 | 5 | ndcg@10 |" in r)
    assert v1_row.endswith("| – | 0.6000 |")  # the v1-rule filter, last column
    assert "| positive_phrase | 6 | on_tag@10 |" not in table  # no such metric in the file: no row
    bd = breakdown_table(tmp_path)
    assert "| new | positive | template | how about {a} | 3 | 0.0200 |" in bd
    assert "make me laugh" not in bd  # per phrase: only in the JSON
    bt = budget_table(tmp_path)
    assert "| new | positive | 10: 0.0300, 100: 0.0400, 500: 0.0200 | 0.0700 |" in bt
    sig = significance(tmp_path)
    assert sig.startswith("5 paired tests in 2 files;")
    assert (
        "| new | 2 | positive | ndcg@10 | dpr_soft | filter_full | +0.0100 | 1.00 | 0.0100 | 0.0200 |" in sig
    )
    # the old file: Holm computed here over its 3 tests (0.01·3, 0.04 → max(0.06, 0.04), 0.03·2)
    old_rows = [r for r in sig.splitlines() if r.startswith("| old |")]
    assert [float(r.split("|")[-2]) for r in old_rows] == pytest.approx([0.03, 0.06, 0.06])


def test_targets(tmp_path: Path) -> None:
    _write(tmp_path)
    t = targets(tmp_path)
    # only the file of the current protocol (it records "setup") counts
    rows = [r for r in t.splitlines() if r.startswith("| sasrec | 1 |")]
    assert len(rows) == len(t.splitlines()) - 2
    got = {r.split(" | ")[2]: r.split(" | ")[-1].rstrip(" |") for r in rows}
    assert got["no prompt: DPR / backbone NDCG@10"] == "yes"
    # hybrid 0.08 vs filter 0.02; on-tag 0.9 < 0.95
    assert got["genre, leak-free: hybrid − filter full"] == "yes"
    assert got["negative: hybrid violations"] == "**no**"
    assert got["genre, leak-free: soft / filter full; on-tag top 10"] == "**no**"
    assert got["phrases: soft / soft with the exact tag"] == "**no**"  # 0.049 vs 0.5
    # a --hide-tags file is checked against the incomplete-metadata targets only
    doc = json.loads((tmp_path / "new.json").read_text())
    doc["results"]["setup"]["hide_tags"] = 0.5
    (tmp_path / "hidden.json").write_text(json.dumps(doc))
    hidden = [r for r in targets(tmp_path).splitlines() if r.startswith("| sasrec, 0.5 of tags hidden | 1 |")]
    assert [r.split(" | ")[2] for r in hidden] == [
        "hidden tags: soft / visible-tag filter full", "hidden tags: hybrid / visible-tag filter full"
    ]  # fmt: skip
    assert hidden[0].endswith("| 3.500× | ≥ 1.5× | yes |")


def test_targets_are_per_data_set(tmp_path: Path) -> None:
    _write(tmp_path)
    doc = json.loads((tmp_path / "new.json").read_text())
    doc["dataset"] = "ml-latest-small"
    doc["results"]["positive"]["methods"]["dpr_soft"]["ndcg@10"] = 1.0  # far above the filter there
    (tmp_path / "small.json").write_text(json.dumps(doc))
    text = targets_by_dataset(tmp_path)
    assert text.startswith("Targets on ml-100k:")
    second, first = text.split("Targets on ml-latest-small:")

    def genre(t: str) -> str:
        return next(r for r in t.splitlines() if "soft / filter full; on-tag" in r)

    # one seed each: the latest-small file does not enter ml-100k's mean, nor the other way round
    assert genre(first).startswith("| sasrec | 1 |") and genre(second).startswith("| sasrec | 1 |")
    assert genre(first).split(" | ")[3].startswith("50.000×")
    assert genre(second) == genre(targets(tmp_path))
