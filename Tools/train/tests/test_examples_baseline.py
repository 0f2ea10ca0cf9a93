"""The ``examples`` steering baseline (steer_train/examples_baseline.py): the example rule, the server's
``average_vector`` formula, and that examples of a tag steer toward it on the tiny model."""

from __future__ import annotations

import math

import torch

from steer_train.evaluate import Evaluator, build_tasks
from steer_train.examples_baseline import average_vector, examples_scores, pick_examples
from steer_train.minilm import shared_encoder
from steer_train.train import user_vectors

from .helpers import tiny


def test_examples_are_the_most_popular_tagged_items_outside_the_history() -> None:
    carries = torch.tensor([True, True, False, True, True, True])
    popularity = torch.tensor([5.0, 9.0, 50.0, 5.0, 1.0, 7.0])
    # 2 does not carry the tag; 1 is in the history; 0 and 3 tie: the lower row first
    assert pick_examples(carries, popularity, [1]) == [5, 0, 3]
    assert pick_examples(carries, popularity, [0, 1, 3, 4, 5]) == []


def test_the_query_is_the_servers_average_vector() -> None:
    p = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
    n = torch.tensor([[0.0, 4.0]])
    assert torch.equal(average_vector(p, n[:0]), torch.tensor([2.0, 1.0]))
    assert torch.equal(average_vector(p, n), torch.tensor([4.0, -2.0]))  # 2·mean(p) − mean(n)
    table = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0], [0.5, 0.5]])
    tags = torch.tensor([[False, True, True, False, False], [False, False, False, True, True]])
    popularity = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    h = torch.tensor([[1.0, 0.0]])
    # positive tag 0: examples 2 then 1 (item 0 is the history); q = mean(h, V2, V1) = (2/3, 2/3)
    s = examples_scores(table, h, tags, popularity, [[0]], [0], [-1])[0]
    assert all(math.isinf(float(s[i])) for i in (0, 1, 2))
    assert torch.allclose(s[3:], torch.tensor([-2 / 3, 2 / 3]))
    # negative tag 1 (examples 4, 3): q = 2·h − mean(V4, V3) = (2.25, −0.25)
    s = examples_scores(table, h, tags, popularity, [[0]], [-1], [1])[0]
    assert torch.allclose(s[1:3], torch.tensor([-0.25, 2.0])) and math.isinf(float(s[3]))


def test_the_evaluator_scores_examples_with_the_models_table_and_never_returns_them() -> None:
    t = tiny("sasrec")
    ev = Evaluator(t.model, t.ds, shared_encoder(), t.ds.prompt_tags())
    part = build_tasks(t.ds, t.split.test, t.ds.prompt_tags(), seed=0)["positive"].part(0, 50)
    scores = ev.scores(part)["examples"]
    pop = ev._popularity
    assert pop is not None
    table = t.model.backbone.item_table()
    h = t.model.backbone.pad(user_vectors(t.model, [c.history for c in part.cases]))
    for i, case in enumerate(part.cases):
        chosen = pick_examples(ev.tagmat_t[part.pos_tag[i]], pop, case.history)
        assert len(chosen) == 3 and all(math.isinf(float(scores[i, r])) for r in chosen)
        expected = table @ torch.cat([h[i : i + 1], table[chosen]]).mean(0)
        finite = torch.isfinite(scores[i])
        assert torch.allclose(scores[i][finite], expected[finite], atol=1e-5)
        assert int((~finite).sum()) == len(set(case.history) | set(chosen))
    res = ev.evaluate_task(part)
    assert set(res["examples"]) == {"ndcg@10", "recall@10", "on_tag@10"}
