"""The evaluation's parts without a trained model: task construction (leak-free positive task, intent
labels, negative and compound cases, the v1 tasks), phrase files, hidden tags, the filters and the
retrieval budgets, the per-case metrics, the paired test and Holm's correction."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from steer_train import evaluate as ev
from steer_train import prompts
from steer_train.clauses import parse
from steer_train.data import Dataset, EvalCase, Item
from steer_train.evaluate import (
    budget_sizes,
    build_phrase_tasks,
    build_tasks,
    comparisons,
    hide_tags,
    holm,
    intent,
    paired_test,
    per_case_metrics,
    retrieve_then_filter,
    tag_filter,
    top_k_only,
    visibility_labels,
)
from steer_train.prompts import EVAL_COMPOUND, EVAL_NEG, EVAL_POS, PhraseError, Phrases, fill, load_phrases

from .conftest import REPO

VOCAB = ["comedy", "drama", "horror", "sci-fi"]


def _ds(tags: list[list[str]], seqs: list[list[int]]) -> Dataset:
    items = [Item(i + 1, f"T{i}", t) for i, t in enumerate(tags)]
    return Dataset("hand", items, list(range(len(seqs))), seqs, list(VOCAB))


# items: 0 comedy, 1 comedy, 2 comedy+drama, 3 drama, 4 horror, 5 comedy+sci-fi, 6 sci-fi, 7 horror+drama
TAGS = [["comedy"], ["comedy"], ["comedy", "drama"], ["drama"], ["horror"], ["comedy", "sci-fi"], ["sci-fi"],
        ["horror", "drama"]]  # fmt: skip


def test_positive_task_has_one_case_per_tag_of_the_target() -> None:
    ds = _ds(TAGS, [[0, 1, 3, 5], [4, 7, 2]])
    cases = [EvalCase(0, [0, 1, 3], 5), EvalCase(1, [4, 7], 2)]
    tasks = build_tasks(ds, cases, VOCAB, seed=0)
    pos = tasks["positive"]
    assert [(c.user, VOCAB[a]) for c, a in zip(pos.cases, pos.pos_tag, strict=True)] == [
        (0, "comedy"), (0, "sci-fi"), (1, "comedy"), (1, "drama")
    ]  # fmt: skip
    assert all(t == -1 for t in pos.neg_tag)
    for p, a, tpl in zip(pos.prompts, pos.pos_tag, pos.labels["template"], strict=True):
        assert tpl in EVAL_POS and p == fill(tpl, VOCAB[a])
    # user 0: comedy 2/3, drama 1/3, sci-fi 0 -> median of the carried tags (comedy, drama) 0.5;
    # user 1: horror 1, drama 1/2 -> median 0.75: comedy (0) and drama (0.5) are shifts
    assert pos.labels["intent"] == ["reinforce", "shift", "shift", "shift"]
    # the same seed gives the same tasks
    again = build_tasks(ds, cases, VOCAB, seed=0)["positive"]
    assert again.prompts == pos.prompts and again.labels == pos.labels
    # a tag not eligible for prompts gets no case
    assert [VOCAB[a] for a in build_tasks(ds, cases, ["comedy", "drama"], seed=0)["positive"].pos_tag] == [
        "comedy", "comedy", "drama"
    ]  # fmt: skip


def test_positive_prompt_tag_does_not_reveal_the_targets_other_tags() -> None:
    """v1 prompts the target's tag least frequent in the history, so a target that also carries a
    rarer tag is never the answer to a prompt naming the commoner one (the leak). The leak-free task
    has a case with "comedy" for every target carrying comedy, whatever else it carries."""
    ds = _ds(TAGS, [[0, 1, 2, 3, 5], [0, 1, 2, 3, 1]])
    history = [0, 2, 3]  # comedy 2, drama 2, sci-fi 0
    only_comedy, comedy_scifi = EvalCase(0, history, 1), EvalCase(1, history, 5)
    tasks = build_tasks(ds, [only_comedy, comedy_scifi], VOCAB, seed=0)
    comedy = VOCAB.index("comedy")
    pos = tasks["positive"]
    assert {c.target for c, a in zip(pos.cases, pos.pos_tag, strict=True) if a == comedy} == {1, 5}
    v1 = tasks["positive_v1"]
    assert {c.target for c, a in zip(v1.cases, v1.pos_tag, strict=True) if a == comedy} == {1}
    # other items' tags play no part: retagging items outside history and target changes no task
    other = [list(t) for t in TAGS]
    other[4], other[6], other[7] = ["sci-fi", "comedy"], ["drama"], []
    again = build_tasks(_ds(other, ds.sequences), [only_comedy, comedy_scifi], VOCAB, seed=0)
    for name in ("positive", "negative", "compound"):
        assert again[name].prompts == tasks[name].prompts, name


def test_v1_rule_filter_is_the_leak() -> None:
    """Keeps the items positive_v1 could have as its target: the prompted tag and no rarer one."""
    ds = _ds(TAGS, [[0]])
    tmt = torch.from_numpy(ds.tag_matrix()).T.contiguous()
    hist = [0, 1, 3, 4]  # comedy 2, drama 1, horror 1, sci-fi 0
    eligible = torch.tensor([True, True, True, True])
    keep = ev.v1_rule_filter(tmt, [hist, hist], [VOCAB.index("drama"), VOCAB.index("comedy")], eligible)
    # drama (count 1): drama items without sci-fi (0); horror (1) is not rarer -> 2, 3, 7
    assert torch.nonzero(keep[0]).flatten().tolist() == [2, 3, 7]
    # comedy (2): no drama, horror or sci-fi -> 0, 1 (not 2: drama; not 5: sci-fi)
    assert torch.nonzero(keep[1]).flatten().tolist() == [0, 1]
    # sci-fi not eligible: 5 is allowed again
    only = torch.tensor([True, True, True, False])
    assert torch.nonzero(ev.v1_rule_filter(tmt, [hist], [0], only)[0]).flatten().tolist() == [0, 1, 5]
    # every target of positive_v1 passes its own rule
    cases = [EvalCase(0, hist, t) for t in range(8) if ds.items[t].tags]
    v1 = build_tasks(ds, cases, VOCAB, seed=0)["positive_v1"]
    rule = ev.v1_rule_filter(tmt, [c.history for c in v1.cases], v1.pos_tag, eligible)
    assert all(bool(rule[i, c.target]) for i, c in enumerate(v1.cases))


def test_intent_rule() -> None:
    tm = _ds(TAGS, [[0]]).tag_matrix()
    # the last 10 of 12 items: comedy 6, drama 4, horror 1 (sci-fi only in the two older ones)
    hist = [6, 6, 0, 0, 0, 0, 0, 3, 3, 4, 2, 3]
    shares = ev.recent_shares(tm, hist)
    assert shares.tolist() == pytest.approx([0.6, 0.4, 0.1, 0.0])
    # carried over the whole history: all four tags -> median of (0.6, 0.4, 0.1, 0.0) = 0.25
    assert [intent(tm, hist, j) for j in range(4)] == ["reinforce", "reinforce", "shift", "shift"]
    assert intent(tm, [], 0) == "shift"


def test_negative_and_compound_cases() -> None:
    ds = _ds(TAGS, [[0, 1, 2, 6], [0, 1, 3, 2]])
    cases = [EvalCase(0, [0, 1, 2], 6), EvalCase(1, [0, 1, 3], 2)]
    tasks = build_tasks(ds, cases, VOCAB, seed=1)
    neg = tasks["negative"]
    # user 0: dominant comedy, the target (sci-fi) lacks it -> a case; user 1's target carries comedy -> none
    assert [(c.user, VOCAB[b]) for c, b in zip(neg.cases, neg.neg_tag, strict=True)] == [(0, "comedy")]
    assert neg.labels["template"][0] in EVAL_NEG and "comedy" in str(neg.prompts[0])
    comp = tasks["compound"]
    got = [
        (c.user, VOCAB[a], VOCAB[b]) for c, a, b in zip(comp.cases, comp.pos_tag, comp.neg_tag, strict=True)
    ]
    assert got == [(0, "sci-fi", "comedy")]
    assert comp.labels["template"][0] in EVAL_COMPOUND and comp.labels["intent"] == ["shift"]
    assert len(tasks["standard"].cases) == 2 and set(tasks) >= {"positive_v1", "negative_v1", "compound_v1"}
    assert "positive_v1" not in build_tasks(ds, cases, VOCAB, seed=1, v1=False)


def test_phrase_tasks_follow_the_tag_tasks(tmp_path: Path) -> None:
    ds = _ds(TAGS, [[0, 1, 2, 6], [4, 7, 3, 5]])
    cases = [EvalCase(0, [0, 1, 2], 6), EvalCase(1, [4, 7, 3], 5)]
    tasks = build_tasks(ds, cases, VOCAB, seed=0)
    ph = Phrases({"sci-fi": ["spaceships", "robots"]}, {"comedy": ["nothing funny"], "drama": ["no tears"]})
    out = build_phrase_tasks(tasks, ph, VOCAB, seed=0)
    p = out["positive_phrase"]
    assert [(c.user, VOCAB[a]) for c, a in zip(p.cases, p.pos_tag, strict=True)] == [
        (0, "sci-fi"),
        (1, "sci-fi"),
    ]
    assert all(x in ("spaceships", "robots") for x in p.prompts)
    assert p.exact_prompts is not None and all("sci-fi" in x for x in p.exact_prompts if x)
    assert p.labels["phrase"] == p.prompts and len(p.labels["intent"]) == 2
    n = out["negative_phrase"]
    assert [VOCAB[b] for b in n.neg_tag] == ["comedy", "drama"] and n.prompts == ["nothing funny", "no tears"]
    c = out["compound_phrase"]
    assert [x.split(", ")[1] for x in c.prompts if x] == ["nothing funny", "no tears"]
    assert build_phrase_tasks(tasks, ph, VOCAB, seed=0)["compound_phrase"].prompts == c.prompts


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1]", "expected a JSON object"),
        ('{"positive": {}, "neutral": {}}', "unknown key 'neutral'"),
        ("{}", "no 'positive' or 'negative'"),
        ('{"positive": {"comedy": []}}', r"positive.comedy: expected a non-empty list"),
        ('{"positive": {"comedy": ["ok", 3]}}', r"positive.comedy\[1\]: expected a non-empty string"),
        ('{"negative": {"comedy": ["x", "  X "]}}', r"negative.comedy\[1\]: duplicate phrase"),
        ('{"positive": {"Comedy": ["a"], "comedy": ["b"]}}', "tag given twice"),
        ('{"positive": {"comedy": ["' + "a" * 201 + '"]}}', "longer than 200 characters"),
        ('{"positive": {"comedy": ["a"]}\n,}', r":2: invalid JSON"),
        ('{"positive": ["a"]}', "expected an object tag"),
    ],
)
def test_phrase_file_errors(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "p.json"
    f.write_text(content)
    with pytest.raises(PhraseError, match=message):
        load_phrases(f)


def test_phrase_file_size_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "p.json"
    f.write_text('{"positive": {"comedy": ["make me laugh"]}}')
    assert load_phrases(f).positive == {"comedy": ["make me laugh"]}
    monkeypatch.setattr(prompts, "PHRASE_FILE_MAX_BYTES", 10)
    with pytest.raises(PhraseError, match="more than the limit of 10"):
        load_phrases(f)
    with pytest.raises(PhraseError, match="cannot read"):
        load_phrases(tmp_path / "missing.json")


ML100K_GENRES = ["action", "adventure", "animation", "children", "comedy", "crime", "documentary", "drama",
                 "fantasy", "film-noir", "horror", "musical", "mystery", "romance", "sci-fi", "thriller",
                 "war", "western"]  # fmt: skip
LATEST_SMALL_GENRES = [*ML100K_GENRES, "imax"]


def test_shipped_phrase_files() -> None:
    """>= 8 phrasings per genre and polarity for training/validation, a disjoint held-out file, and
    every phrase parses to clauses of its polarity (so the evaluation measures the model, not the
    parser)."""
    d = REPO / "Tools" / "train" / "phrases"
    tv = load_phrases(d / "phrases-trainval.json")
    test = load_phrases(d / "phrases-test.json")
    for g in LATEST_SMALL_GENRES:
        assert len(tv.positive[g]) >= 8 and len(tv.negative[g]) >= 8, g
        assert len(test.positive[g]) >= 5 and len(test.negative[g]) >= 5, g
    assert not tv.all() & test.all()
    for ph in (tv, test):
        for pol, group in (("+", ph.positive), ("-", ph.negative)):
            for tag, phrases in group.items():
                for p in phrases:
                    cl = parse(p)
                    assert cl and all(c.polarity == pol for c in cl), (tag, p, cl)


def test_hide_tags() -> None:
    ds = _ds(TAGS, [[0, 1]])
    total = sum(len(t) for t in TAGS)  # 11
    a = hide_tags(ds, 0.5, seed=0)
    assert sum(len(it.tags) for it in a.items) == total - round(0.5 * total)
    assert all(set(x.tags) <= set(y.tags) for x, y in zip(a.items, ds.items, strict=True))
    assert [it.tags for it in ds.items] == TAGS  # the original is untouched
    assert a.tag_vocab == ds.tag_vocab and a.sequences == ds.sequences
    assert [it.tags for it in hide_tags(ds, 0.5, seed=0).items] == [it.tags for it in a.items]
    assert any(
        [it.tags for it in hide_tags(ds, 0.5, seed=s).items] != [it.tags for it in a.items] for s in (1, 2, 3)
    )
    assert [it.tags for it in hide_tags(ds, 0.0, seed=0).items] == TAGS
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        hide_tags(ds, 1.0, seed=0)


def test_visibility_labels_say_whether_the_prompted_tag_is_visible_on_the_target() -> None:
    ds = _ds(TAGS, [[0, 1, 2, 3, 4, 5]])
    seen = _ds([["comedy"], [], ["drama"], ["drama"], ["horror"], ["sci-fi"], [], []], [[0]])
    cases = [EvalCase(0, [3], 0), EvalCase(0, [3], 1), EvalCase(0, [3], 2), EvalCase(0, [3], 2),
             EvalCase(0, [3], 5)]  # fmt: skip
    task = ev.Task("positive")
    for c, tag in zip(cases, ["comedy", "comedy", "comedy", "drama", "comedy"], strict=True):
        task.add(c, "p", pos=VOCAB.index(tag))
    task.add(EvalCase(0, [3], 4), "p", neg=VOCAB.index("horror"))
    tm_t = torch.from_numpy(seen.tag_matrix()).T.contiguous()
    assert visibility_labels(tm_t, task) == ["visible", "hidden", "hidden", "visible", "hidden", "none"]
    # with the full metadata every prompted tag is visible
    full = torch.from_numpy(ds.tag_matrix()).T.contiguous()
    assert visibility_labels(full, task) == ["visible"] * 5 + ["none"]


def test_filters_and_budgets() -> None:
    tmt = torch.from_numpy(_ds(TAGS, [[0]]).tag_matrix()).T.contiguous()
    keep = tag_filter(tmt, [0, -1, 0], [-1, 2, 1])  # comedy; not horror; comedy and not drama
    assert keep[0].tolist() == [True, True, True, False, False, True, False, False]
    assert keep[1].tolist() == [True, True, True, True, False, True, True, False]
    assert keep[2].tolist() == [True, True, False, False, False, True, False, False]
    scores = torch.tensor([[0.0, 7, 6, 5, 4, 3, 2, 1]])
    assert torch.isfinite(top_k_only(scores, 3)).tolist() == [[False, True, True, True] + [False] * 4]
    got = retrieve_then_filter(scores, keep[:1], 3)  # top 3 = items 1, 2, 3; item 3 lacks comedy
    assert torch.isfinite(got).tolist() == [[False, True, True] + [False] * 5]
    assert budget_sizes(1682) == {"filter_top10": 10, "filter_top20": 20, "filter_top50": 50,
                                  "filter_top100": 100, "filter_top1pct": 17}  # fmt: skip
    assert budget_sizes(9742)["filter_top1pct"] == 98 and budget_sizes(50)["filter_top1pct"] == 1


def test_per_case_metrics_by_hand() -> None:
    inf = -math.inf
    scores = torch.tensor(
        [[5.0, 4, 3, 2, 1, 0, inf, inf, inf, inf, inf, inf], [1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]]
    )
    target = torch.tensor([2, 0])  # rank 2 in row 0; rank 11 (outside the top 10) in row 1
    banned = torch.zeros((2, 12), dtype=torch.bool)
    banned[0, [0, 1]] = True  # 2 of the 6 returned
    wanted = torch.zeros((2, 12), dtype=torch.bool)
    wanted[1, [11, 10, 0]] = True  # 2 of row 1's top 10 (item 0 is not in it)
    m = per_case_metrics(scores, target, banned, wanted)
    assert m["ndcg@10"].tolist() == pytest.approx([1 / math.log2(4), 0.0])
    assert m["recall@10"].tolist() == [1.0, 0.0]
    assert m["violation@10"].tolist() == pytest.approx([2 / 6, 0.0])
    assert m["on_tag@10"].tolist() == pytest.approx([0.0, 0.2])
    # a target that is not returned (-inf) is a miss even if fewer than 10 items are returned
    assert per_case_metrics(scores, torch.tensor([7, 11]), None)["recall@10"].tolist() == [0.0, 1.0]


def test_paired_test() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(40)
    same = paired_test(a, a)
    assert same["p_perm"] == 1.0 and same["diff"] == 0.0
    better = paired_test(a + 0.1 + 0.01 * rng.random(40), a, n_perm=2000)
    assert better["diff"] == pytest.approx(0.105, abs=0.01) and better["p_perm"] < 0.001 and better["t"] > 10
    noise = paired_test(a, a[::-1], n_perm=2000)
    assert noise["p_perm"] > 0.05
    # two cases per user that share one difference: grouping gives the test of one case per user
    b = rng.random(40)
    one = paired_test(a, b, n_perm=2000, seed=3)
    two = paired_test(
        np.repeat(a, 2), np.repeat(b, 2), n_perm=2000, seed=3, groups=[i // 2 for i in range(80)]
    )
    assert two["p_perm"] == one["p_perm"] and two["t"] == pytest.approx(one["t"])
    assert two["diff"] == pytest.approx(one["diff"]) and two["n"] == 80 and two["units"] == 40
    # without the groups the duplicated cases look twice as certain
    naive = paired_test(np.repeat(a, 2), np.repeat(b, 2), n_perm=2000, seed=3)
    assert abs(naive["t"]) > 1.4 * abs(one["t"])


def test_holm() -> None:
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == [1.0, 1.0]
    assert holm([]) == []


def test_comparisons_carry_the_family_and_holm() -> None:
    rng = np.random.default_rng(1)
    x = rng.random(30)
    pc = {
        "positive": {"dpr_soft": {"ndcg@10": x + 0.2}, "filter_full": {"ndcg@10": x},
                     "dpr_hybrid": {"ndcg@10": x}},
        "negative": {"dpr_soft": {"recall@10": x}, "filter_full": {"recall@10": x}},
    }  # fmt: skip
    out = comparisons(pc, {"positive": list(range(30))}, seed=0)
    assert [(c["task"], c["method"], c["baseline"]) for c in out] == [
        ("positive", "dpr_soft", "filter_full"), ("positive", "dpr_hybrid", "filter_full"),
        ("negative", "dpr_soft", "filter_full"),
    ]  # fmt: skip
    assert all(c["family"] == 3 for c in out)
    assert out[0]["p_holm"] == pytest.approx(3 * out[0]["p_perm"]) and out[0]["headline"]
    assert out[1]["p_holm"] == 1.0
    json.dumps(out)  # results files hold them


def test_tie_order_comparison_and_popularity(tmp_path: Path) -> None:
    from steer_train.data import load_generic

    (tmp_path / "items.jsonl").write_text("".join(f'{{"id": {i}}}\n' for i in range(1, 6)))
    # user 1 rates 5 and 3 in the same last second (file order 5, 3): the test target is 5 by item id,
    # 3 by file order; users 2 and 3 make item 3 the most popular training item
    rows = ["1,1,1", "1,2,2", "1,5,9", "1,3,9", "2,3,1", "2,4,2", "2,1,3", "2,2,4", "3,3,1", "3,1,2", "3,2,3"]
    (tmp_path / "i.csv").write_text("user,item,timestamp\n" + "\n".join(rows) + "\n")
    by_item = load_generic(tmp_path / "i.csv", tmp_path / "items.jsonl")
    by_file = load_generic(tmp_path / "i.csv", tmp_path / "items.jsonl", ties="file")
    res = ev.compare_tie_orders(by_item, by_file)
    assert res["test_cases"] == 3 and res["test_targets_differ"] == 1 and res["valid_targets_differ"] == 1
    # training (all but the last two per user) is the same under both orders: item 3 twice, items 1, 2
    # and 4 once, 5 never -> popularity order 3, 1, 2, 4, 5. Users 2 and 3 (target 2) hit at rank 0 under
    # both. User 1: by item id the target is 5 after history [1, 2, 3] -> rank 1 (behind 4); by file
    # order it is 3 after history [1, 2, 5] -> rank 0
    item, file = res["popularity"]["item"], res["popularity"]["file"]
    assert file["ndcg@10"] == 1.0 and item["recall@10"] == 1.0
    assert item["ndcg@10"] == pytest.approx((2 + 1 / math.log2(3)) / 3)
