"""The measured-best training defaults of the CLI, ``steer-train steering`` / ``golden-steering.json``
(what the Swift model must reproduce with λ and β) and the hidden-tag diagnosis."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from steer_train import cli
from steer_train.diagnose import auc, membership_bound, probe, separability
from steer_train.evaluate import Evaluator, blend, build_tasks, hide_tags
from steer_train.export import (
    STEERING_FILE,
    STEERING_GOLDEN_FILE,
    load_checkpoint,
    set_steering,
    write_checkpoint,
)
from steer_train.minilm import shared_encoder
from steer_train.prompts import TRAINVAL_PHRASES, PromptBank, load_phrases
from steer_train.train import pad_left, propagation

from .helpers import tiny


@pytest.fixture(autouse=True)
def _keep_threads() -> Iterator[None]:
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


class _Captured(Exception):
    pass


def _captured_training(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *extra: str) -> dict[str, Any]:
    from steer_train.synth import SynthConfig, generate, write_generic

    inter, items = write_generic(generate(SynthConfig(seed=2, n_users=30, n_items=20)), tmp_path)
    seen: dict[str, Any] = {}

    def fake_train_all(model: Any, ds: Any, split: Any, bank: Any, tc: Any, tags: Any, cache: Any = None,
                       phrases: Any = None) -> Any:  # fmt: skip
        seen.update(tc=tc, phrases=phrases)
        raise _Captured

    monkeypatch.setattr(cli, "train_all", fake_train_all)
    with pytest.raises(_Captured):
        cli.main(["--no-progress", "train", "--dataset", f"generic:{inter},{items}", "--threads", "1",
                  "--out", str(tmp_path / "c"), *extra])  # fmt: skip
    return seen


def test_training_defaults_are_the_measured_best(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    got = _captured_training(monkeypatch, tmp_path)
    tc = got["tc"]
    assert (tc.head_patience, tc.tune, tc.clause_noise, tc.epochs2, tc.epochs3) == (3, True, 0.3, 15, 20)
    assert (tc.aux_net, tc.rank_weight, tc.holdout) == (0, 0.0, 0)  # measured not to help: off
    assert TRAINVAL_PHRASES.is_file()
    assert got["phrases"] is not None and got["phrases"].all() == load_phrases(TRAINVAL_PHRASES).all()
    off = _captured_training(
        monkeypatch, tmp_path, "--no-tune", "--train-phrases", "none", "--clause-noise", "0"
    )
    assert not off["tc"].tune and off["phrases"] is None and off["tc"].clause_noise == 0.0


# ---------------------------------------------------------------------------- steering golden


def test_steering_golden_answers_with_lambda_and_beta(tmp_path: Path) -> None:
    t = tiny("sasrec")
    enc = shared_encoder()
    ckpt = write_checkpoint(t.model, t.ds, enc, tmp_path / "c")
    assert not (ckpt / STEERING_GOLDEN_FILE).exists()
    set_steering(ckpt, 0.5, 0.25, enc)
    doc = json.loads((ckpt / STEERING_GOLDEN_FILE).read_text())
    plain = json.loads((ckpt / "golden.json").read_text())["cases"]
    model, items = load_checkpoint(ckpt)
    assert (model.soft_scale, model.hybrid_blend) == (0.5, 0.25) == (doc["soft_scale"], doc["hybrid_blend"])
    rows = {str(it.id): r for r, it in enumerate(items)}
    tm = torch.from_numpy(t.ds.tag_matrix()).T
    V = model.backbone.item_table().detach()
    changed = 0
    for case, ref in zip(doc["cases"], plain, strict=True):
        assert case["history"] == ref["history"] and case["prompt"] == ref["prompt"]
        assert case["user_vector"] == ref["user_vector"]
        hist = [rows[str(i)] for i in case["history"]]
        with torch.no_grad():
            hp = model.backbone.pad(model.backbone.user_vector(pad_left([hist], model.cfg.max_len)))[0]
        q0 = torch.tensor(ref["query"])  # λ = 1: h⁺ + Σ Δ
        q = torch.tensor(case["query"])
        assert torch.allclose(q, hp + 0.5 * (q0 - hp), atol=1e-5)
        # the hybrid ranking is β · soft + (1 − β) · backbone inside the mapped filter
        soft = q @ V.T
        base = hp @ V.T
        if hist:
            soft[hist] = -math.inf
            base[hist] = -math.inf
        keep = torch.ones(V.shape[0], dtype=torch.bool)
        for c in ref["clauses"]:
            if c["tags"]:
                carries = tm[[model.tags.index(x) for x in c["tags"]]].any(0)
                keep &= carries if c["polarity"] == "+" else ~carries
        hyb = torch.where(keep, blend(soft, base, 0.25), torch.tensor(-math.inf))
        vals, idx = torch.topk(hyb, 10)
        want = [items[int(r)].id for r, v in zip(idx, vals, strict=True) if math.isfinite(float(v))]
        assert case["top10_hybrid"] == want
        assert np.allclose(case["top10_hybrid_scores"], [float(v) for v in vals if math.isfinite(float(v))],
                           atol=1e-4)  # fmt: skip
        changed += case["top10_hybrid"] != ref["top10_hybrid"]
    assert changed >= 1  # β and λ change some hybrid answer (the test can see a wrong blend)
    set_steering(ckpt, 1.0, 1.0, enc)
    assert not (ckpt / STEERING_FILE).exists() and not (ckpt / STEERING_GOLDEN_FILE).exists()
    for lam, beta in ((0.0, 0.5), (math.nan, 0.5), (1.0, 1.5), (1.0, -0.1)):
        with pytest.raises(ValueError):
            set_steering(ckpt, lam, beta, enc)
    assert not (ckpt / STEERING_FILE).exists()


# ---------------------------------------------------------------------------- diagnosis


def test_auc_by_hand() -> None:
    assert auc(np.array([True, False, True, False]), np.array([0.9, 0.1, 0.8, 0.2])) == 1.0
    assert auc(np.array([True, False, True, False]), np.array([0.1, 0.9, 0.2, 0.8])) == 0.0
    # one tie between a positive and a negative counts one half: pairs (p, n): 4 pairs, 3 won, 1 tied
    assert auc(np.array([True, True, False, False]), np.array([0.5, 0.9, 0.5, 0.1])) == pytest.approx(3.5 / 4)
    assert math.isnan(auc(np.array([True, True]), np.array([0.1, 0.2])))


def test_probe_separates_a_linear_label() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g)
    y = (x[:, 2] - 0.5 * x[:, 0] > 0).numpy()
    assert auc(y, probe(x, y)) > 0.98
    assert 0.3 < auc(y, probe(torch.randn(200, 5, generator=g), y)) < 0.85  # unrelated features: weak


def test_propagation_reads_the_neighbours_visible_tags() -> None:
    # items 0, 1 always together (users 0, 1); items 2, 3 together (users 2, 3); item 1 carries tag 0
    train = [[0, 1], [1, 0], [2, 3], [3, 2]]
    visible = np.array([[False], [True], [False], [False]])
    p = propagation(train, visible, k=1)
    assert p[:, 0].tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0])  # item 0's only neighbour is item 1


def test_membership_bound_at_zero_is_the_visible_filter_and_separability_runs() -> None:
    t = tiny("sasrec")
    seen = hide_tags(t.ds, 0.5, seed=0)
    tasks = build_tasks(t.ds, t.split.test[:80], t.ds.prompt_tags(), seed=0, v1=False)
    prop = propagation(t.split.train, seen.tag_matrix())
    bound = membership_bound(t.model, seen, t.split, tasks["positive"], prop)
    ev = Evaluator(t.model, seen, shared_encoder(), t.ds.prompt_tags(), truth=t.ds)
    filt = ev.evaluate_task(tasks["positive"])["filter_full"]["ndcg@10"]
    assert bound["by_scale"]["0.0"]["ndcg@10"] == pytest.approx(float(filt.mean()), abs=1e-6)
    assert bound["by_scale"]["0.0"]["hidden"] == 0.0  # the visible filter never returns a hidden member
    assert 0 < bound["visible_cases"] < bound["n"]
    assert bound["best_over_filter"] >= 1.0
    sep = separability(t.model, seen, t.ds, t.split, PromptBank(shared_encoder()), min_items=2)
    assert sep["per_tag"] and all(0.0 <= v <= 1.0 for v in sep["mean"].values())
    assert {"probe_E", "probe_A", "prompt_direction", "propagation", "prompt_direction_visible"} <= set(
        sep["mean"]
    )


def test_aux_net_features_and_tag_dropout() -> None:
    from steer_train.train import AuxNet

    g = torch.Generator().manual_seed(1)
    E = torch.randn(6, 4, generator=g)
    tags = torch.tensor([[1.0, 0], [0, 1], [1, 1], [0, 0], [1, 0], [0, 1]])
    prop = torch.rand(6, 2, generator=g)
    net = AuxNet(4, 8, 3, seed=0, features=torch.cat([tags, prop], 1), tag_cols=2, tag_dropout=1.0)
    full = net(E)
    assert full.shape == (6, 3) and torch.equal(net(E), full)  # no generator: the visible tags, fixed
    blind = AuxNet(4, 8, 3, seed=0, features=torch.cat([torch.zeros(6, 2), prop], 1), tag_cols=2)
    # dropout 1 zeroes every tag indicator (the propagation columns stay)
    assert torch.allclose(net(E, torch.Generator().manual_seed(0)), blind(E), atol=1e-6)
    assert not torch.allclose(full, blind(E), atol=1e-4)
    half = AuxNet(4, 8, 3, seed=0, features=torch.cat([tags, prop], 1), tag_cols=2, tag_dropout=0.5)
    outs = {tuple(half(E, torch.Generator().manual_seed(s)).flatten().tolist()) for s in range(6)}
    assert len(outs) > 1  # the mask is drawn per step


def test_cli_top10_counts_the_tag_in_a_users_top10(tmp_path: Path) -> None:
    from steer_train.synth import write_generic

    t = tiny("sasrec")
    ckpt = write_checkpoint(t.model, t.ds, shared_encoder(), tmp_path / "ckpt")
    inter, items = write_generic(t.ds, tmp_path / "data")
    tag = t.ds.prompt_tags()[0]
    out = tmp_path / "top.json"
    user = str(t.ds.user_ids[0])
    cli.main(["--no-progress", "top10", "--checkpoint", str(ckpt), "--dataset", f"generic:{inter},{items}",
              "--user", user, "--history", "5", "--prompt", f"more {tag}", "--prompt", f"no {tag}",
              "--tag", tag, "--results", str(out)])  # fmt: skip
    doc = json.loads(out.read_text())
    rows = {r["prompt"]: r for r in doc["rows"]}
    assert doc["user"] == user and doc["history"] == 5 and len(doc["rows"]) == 2  # λ = 1 only
    more, less = rows[f"more {tag}"], rows[f"no {tag}"]
    assert more["clauses"] == [tag] and len(more["top10"]) == 10
    hist_ids = {str(t.ds.items[r].id) for r in t.ds.sequences[0][-5:]}
    assert not hist_ids & {str(i) for i in more["top10"]}
    assert more["with_tag"] >= 8 and less["with_tag"] <= 2
    with pytest.raises(SystemExit, match="not in"):
        cli.main(["--no-progress", "top10", "--checkpoint", str(ckpt), "--dataset",
                  f"generic:{inter},{items}", "--user", "nobody", "--prompt", "x", "--tag", tag])  # fmt: skip
