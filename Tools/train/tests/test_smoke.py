"""CI smoke test: a tiny DPR on synthetic data; each stage lowers its loss; prompts steer."""

from __future__ import annotations

import pytest

from steer_train.evaluate import Evaluator, build_tasks, tag_share_top10
from steer_train.minilm import shared_encoder

from .helpers import tiny


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


def test_evaluation_runs_and_hybrid_has_no_violations() -> None:
    t = tiny("sasrec")
    ev = Evaluator(t.model, t.ds, shared_encoder(), t.ds.prompt_tags())
    res = ev.run(build_tasks(t.ds, t.split.test, t.ds.prompt_tags(), seed=0))
    std = res["standard"]["methods"]
    # stage 3 tunes the scoring table with the no-prompt loss: accuracy stays close to the backbone's
    assert std["dpr_soft"]["ndcg@10"] >= 0.9 * std["backbone"]["ndcg@10"]
    assert res["negative"]["methods"]["dpr_hybrid"]["violation@10"] == 0.0
    assert (
        res["positive"]["methods"]["filter_full"]["ndcg@10"]
        >= res["positive"]["methods"]["filter_top100"]["ndcg@10"]
    )
    assert {c["task"] for c in res["comparisons"]} >= {"positive", "negative"}
