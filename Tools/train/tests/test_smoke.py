"""CI smoke test: a tiny DPR on synthetic data; each stage lowers its loss; prompts steer."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from steer_train.evaluate import (
    Evaluator,
    Task,
    build_phrase_tasks,
    build_tasks,
    hide_tags,
    tag_share_top10,
)
from steer_train.minilm import shared_encoder
from steer_train.models import DPR, DPRHead
from steer_train.prompts import EVAL_POS, Phrases

from .helpers import Tiny, tiny


@pytest.mark.parametrize("backbone", ["sasrec", "gru4rec"])
def test_each_stage_lowers_its_loss(backbone: str) -> None:
    t = tiny(backbone)
    for stage, losses in t.result.losses.items():
        assert len(losses) >= 2, stage
        assert losses[-1] < losses[0], (stage, losses)


@pytest.mark.parametrize("backbone", ["sasrec", "gru4rec"])
def test_prompts_steer_the_top10(backbone: str) -> None:
    t = tiny(backbone)
    enc = shared_encoder()
    cases = t.split.test
    for tag in ("comedy", "horror", "sci-fi"):
        base = tag_share_top10(t.model, t.ds, enc, cases, None, tag)
        up = tag_share_top10(t.model, t.ds, enc, cases, f"more {tag}", tag)
        down = tag_share_top10(t.model, t.ds, enc, cases, f"no {tag}", tag)
        assert up > base + 0.05, (tag, base, up)
        assert down < base, (tag, base, down)


SYNTH_PHRASES = {
    "positive": {"comedy": ["make me laugh", "something funny"],
                 "horror": ["something scary", "give me nightmares"], "sci-fi": ["spaceships", "aliens"]},
    "negative": {"comedy": ["nothing funny"], "horror": ["nothing scary"], "sci-fi": ["no spaceships"]},
}  # fmt: skip


def steering_failures(res: dict[str, Any]) -> list[str]:
    """What a model that steers must show on the tiny synthetic data (each could fail: an untrained
    head fails the first three)."""
    out = []
    pos, neg = res["positive"]["methods"], res["negative"]["methods"]
    if not pos["dpr_soft"]["ndcg@10"] > 1.3 * pos["backbone"]["ndcg@10"]:
        out.append("positive: soft NDCG@10 not above 1.3x the backbone")
    if not pos["dpr_soft"]["on_tag@10"] > pos["backbone"]["on_tag@10"] + 0.3:
        out.append("positive: soft top 10 not 0.3 more on-tag than the backbone")
    if not neg["dpr_soft"]["violation@10"] < 0.5 * neg["backbone"]["violation@10"]:
        out.append("negative: soft violations not below half the backbone's")
    if neg["dpr_hybrid"]["violation@10"] != 0.0:
        out.append("negative: hybrid has violations")
    for task in ("positive", "negative", "compound"):
        m = res[task]["methods"]
        curve = [m[b["method"]]["ndcg@10"] for b in sorted(res[task]["budget"], key=lambda b: b["k"])]
        if any(x > y + 1e-9 for x, y in itertools.pairwise(curve)):
            out.append(f"{task}: retrieve-then-filter lost accuracy with a larger budget")
    return out


def _tasks(t: Tiny) -> dict[str, Task]:
    tasks = build_tasks(t.ds, t.split.test, t.ds.prompt_tags(), seed=0)
    ph = Phrases(SYNTH_PHRASES["positive"], SYNTH_PHRASES["negative"])
    tasks.update(build_phrase_tasks(tasks, ph, t.ds.tag_vocab, seed=0))
    return tasks


def test_evaluation_steers_and_an_untrained_head_fails_the_checks() -> None:
    t = tiny("sasrec")
    enc = shared_encoder()
    tasks = _tasks(t)
    res = Evaluator(t.model, t.ds, enc, t.ds.prompt_tags()).run(tasks)
    assert steering_failures(res) == []
    std = res["standard"]["methods"]
    assert std["dpr_soft"] == std["backbone"]  # no prompt: the backbone's ranking exactly
    n_pos = sum(len(np.flatnonzero(t.ds.tag_matrix()[c.target])) for c in t.split.test)
    assert res["positive"]["n"] == n_pos and res["positive"]["users"] == len(t.split.test)
    by = res["positive"]["by"]
    assert set(by["intent"]) == {"shift", "reinforce"} and sum(v["n"] for v in by["intent"].values()) == n_pos
    assert set(by["template"]) <= set(EVAL_POS) and len(by["template"]) > 1
    # the positive_v1 leak as a filter: its targets always pass, so it can only rank them higher
    v1 = res["positive_v1"]["methods"]
    assert v1["filter_v1_rule"]["ndcg@10"] > v1["filter_full"]["ndcg@10"]
    phrase = res["positive_phrase"]
    assert phrase["n"] > 0 and "dpr_soft_exact" in phrase["methods"] and "mapper" in phrase["by"]
    comps = res["comparisons"]
    assert comps and all(c["family"] == len(comps) and c["p_holm"] >= c["p_perm"] for c in comps)
    assert {"positive", "negative", "positive_phrase"} <= {c["task"] for c in comps}
    # the same backbone with an untrained head: the steering checks must fail
    fresh = DPR(t.model.cfg, t.model.backbone, DPRHead(t.model.cfg), t.model.tags)
    failed = steering_failures(Evaluator(fresh, t.ds, enc, t.ds.prompt_tags()).run(tasks))
    assert len(failed) == 3, failed


def test_hidden_tags_blind_the_filters_not_the_relevance() -> None:
    """With half the tag assignments hidden, the filters (which see only the visible tags) let negated
    items through and lose positive targets; the violation rate is measured on the full tags."""
    t = tiny("sasrec")
    tasks = _tasks(t)
    some = {k: tasks[k] for k in ("positive", "negative")}
    enc = shared_encoder()
    full = Evaluator(t.model, t.ds, enc, t.ds.prompt_tags()).run(some)
    hidden = Evaluator(t.model, hide_tags(t.ds, 0.5, seed=0), enc, t.ds.prompt_tags(), truth=t.ds).run(some)
    assert full["negative"]["methods"]["filter_full"]["violation@10"] == 0.0
    assert hidden["negative"]["methods"]["filter_full"]["violation@10"] > 0.01
    f, h = full["positive"]["methods"]["filter_full"], hidden["positive"]["methods"]["filter_full"]
    assert h["recall@10"] < f["recall@10"] - 0.1
    # soft steering does not read the catalog's tags: unchanged for the same model
    assert hidden["positive"]["methods"]["dpr_soft"] == full["positive"]["methods"]["dpr_soft"]


def test_cli_evaluate_with_phrases(tmp_path: Path) -> None:
    from steer_train.cli import main
    from steer_train.export import write_checkpoint
    from steer_train.synth import write_generic

    t = tiny("sasrec")
    n = torch.get_num_threads()
    ckpt = write_checkpoint(t.model, t.ds, shared_encoder(), tmp_path / "ckpt")
    inter, items = write_generic(t.ds, tmp_path / "data")
    phrases = tmp_path / "phrases.json"
    phrases.write_text(
        json.dumps(SYNTH_PHRASES | {"negative": {**SYNTH_PHRASES["negative"], "imax": ["no imax"]}})
    )
    out = tmp_path / "r.json"
    base = ["--no-progress", "evaluate", "--checkpoint", str(ckpt), "--dataset", f"generic:{inter},{items}",
            "--threads", "1"]  # fmt: skip
    try:
        main([*base, "--prompts", str(phrases), "--results", str(out)])
        doc = json.loads(out.read_text())
        res = doc["results"]
        assert doc["backbone"] == "sasrec" and doc["checkpoint"] == str(ckpt)
        assert {"positive_phrase", "negative_phrase", "compound_phrase", "positive_v1"} <= set(res)
        assert res["setup"]["phrases"]["unused_tags"] == ["imax"] and res["setup"]["hide_tags"] == 0.0
        assert res["setup"]["tag_assignments_visible"] == res["setup"]["tag_assignments_total"]
        phrases.write_text('{"positive": {"comedy": []}}')
        with pytest.raises(SystemExit, match=r"phrases.json: positive.comedy: expected a non-empty list"):
            main([*base, "--prompts", str(phrases)])
        # the checkpoint was trained on all tags: evaluating it as a --hide-tags run is refused
        with pytest.raises(SystemExit, match="needs the same --hide-tags"):
            main([*base, "--hide-tags", "0.5"])
    finally:
        torch.set_num_threads(n)
