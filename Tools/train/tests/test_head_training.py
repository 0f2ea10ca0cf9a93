"""Stages 2–3 on held-out transitions, the within-tag ranking term, clause-embedding noise,
validation with early stopping, the λ/β tuning and the optional ``steering.json``."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from steer_train.data import Dataset, Item, leave_one_out
from steer_train.evaluate import Evaluator, blend, build_tasks, compare_models
from steer_train.export import STEERING_FILE, load_checkpoint, read_steering, write_checkpoint
from steer_train.minilm import shared_encoder
from steer_train.models import DPR, ModelConfig
from steer_train.prompts import EVAL_POS, TRAIN_COMPOUND, TRAIN_NEG, TRAIN_POS, PromptBank
from steer_train.synth import SynthConfig, generate
from steer_train.train import (
    BETAS,
    LAMBDAS,
    AuxNet,
    HeadValidator,
    PromptSampler,
    TrainConfig,
    TrainResult,
    _within_tag,
    build_samples,
    case_samples,
    holdout_split,
    noisy,
    train_all,
    train_head,
    user_vectors,
)

from .helpers import tiny


@pytest.fixture(autouse=True)
def _keep_threads() -> Iterator[None]:
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------- held-out transitions


def test_holdout_split_keeps_two_items_and_makes_cases_of_the_rest() -> None:
    train = [[0, 1, 2, 3, 4, 5], [7, 8, 9], [4, 5], [3]]
    kept, cases = holdout_split(train, 3)
    assert kept == [[0, 1, 2], [7, 8], [4, 5], [3]]
    got = [(c.user, c.history, c.target) for c in cases]
    assert got == [(0, [0, 1, 2], 3), (0, [0, 1, 2, 3], 4), (0, [0, 1, 2, 3, 4], 5), (1, [7, 8], 9)]
    assert holdout_split(train, 0) == (train, [])
    with pytest.raises(ValueError):
        holdout_split(train, -1)


def test_case_samples_count_the_window_and_the_recent_items() -> None:
    ds = generate(SynthConfig(seed=3, n_users=20, n_items=40, min_len=5, max_len=8))
    cfg = ModelConfig(backbone="sasrec", n_items=ds.n_items, d=8, max_len=15, n_layers=1, n_heads=1,
                      d_ff=8, dropout=0.0, fusion_hidden=8, n_experts=1, expert_hidden=8)  # fmt: skip
    model = DPR.create(cfg, seed=0)
    model.eval()
    tm = ds.tag_matrix()
    long_hist = [i % ds.n_items for i in range(20)]  # longer than max_len: only the last 15 count
    _, cases = holdout_split([[*long_hist, 21, 22], [1, 2, 3, 4]], 2)
    smp = case_samples(model, cases, tm, 0, 0)
    assert smp.h.shape[0] == len(cases) == 4
    for i, c in enumerate(cases):
        window = c.history[-15:]
        assert smp.target[i] == c.target
        assert torch.equal(smp.hist[i], torch.from_numpy(tm[window].sum(0)).float())
        assert torch.equal(smp.recent[i], torch.from_numpy(tm[window[-10:]].sum(0)).float())
    assert torch.allclose(smp.h, user_vectors(model, [c.history for c in cases]))
    assert case_samples(model, cases, tm, 3, 0).h.shape[0] == 3  # max_samples


# ---------------------------------------------------------------------------- loss terms


def test_within_tag_term_ignores_items_outside_the_tag() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, generator=g)
    carries = torch.tensor([[1, 1, 0, 0, 1, 0], [0, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    target = torch.tensor([4, 2, 0])
    got = _within_tag(logits, carries, target)
    # the target's position among the tag's items, then plain cross-entropy over those items
    pos = [int(carries[i][: int(target[i])].sum()) for i in range(3)]
    want = torch.stack(
        [F.cross_entropy(logits[i][carries[i]][None], torch.tensor([pos[i]]))[()] for i in range(3)]
    )
    assert torch.allclose(got, want)
    bumped = logits.masked_fill(~carries, 50.0)  # off-tag items change: the term does not
    assert torch.allclose(_within_tag(bumped, carries, target), got)
    assert not torch.allclose(
        F.cross_entropy(bumped, target, reduction="none"), F.cross_entropy(logits, target, reduction="none")
    )


def test_clause_noise_keeps_lengths_and_moves_directions() -> None:
    e = F.normalize(torch.randn(64, 384, generator=torch.Generator().manual_seed(1)), dim=1)
    assert noisy(e, 0.0, torch.Generator()) is e
    a = noisy(e, 0.3, torch.Generator().manual_seed(2))
    b = noisy(e, 0.3, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)  # seeded
    assert torch.allclose(a.norm(dim=1), torch.ones(64), atol=1e-5)
    cos_small = (a * e).sum(1).mean()
    cos_big = (noisy(e, 1.0, torch.Generator().manual_seed(2)) * e).sum(1).mean()
    assert 0.9 < cos_small < 0.999
    assert cos_big < cos_small - 0.1


def test_prompts_tags_name_a_tag_the_target_carries() -> None:
    tags = [["comedy"], ["horror"], ["sci-fi"], ["comedy", "horror"]]
    vocab = ["comedy", "horror", "sci-fi"]
    ds = Dataset("t", [Item(i, f"T{i}", t) for i, t in enumerate(tags)], [0], [[0, 1]], vocab)
    from steer_train.train import Samples

    smp = Samples(torch.zeros(8, 4), torch.tensor([0, 1, 2, 3] * 2), torch.ones(8, 3), torch.zeros(8, 3))
    s = PromptSampler(ds, vocab, smp, seed=1)
    tm = torch.from_numpy(ds.tag_matrix())
    idx = torch.arange(8).repeat(10)
    for kind in ("pos", "neg", "compound"):
        prompts, a, b = s.prompts_tags(kind, idx)
        assert (a is None) == (kind == "neg") and (b is None) == (kind == "pos")
        if a is not None:
            assert bool(tm[smp.target[idx], a].all())
        if b is not None:
            assert not bool(tm[smp.target[idx], b].any())
        tpl = {"pos": TRAIN_POS, "neg": TRAIN_NEG, "compound": TRAIN_COMPOUND}[kind]
        assert all(any(p == t.replace("{a}", x).replace("{b}", y) for t in tpl for x in ["", *vocab]
                       for y in ["", *vocab]) for p in prompts)  # fmt: skip


# ---------------------------------------------------------------------------- hybrid blend


def test_blend_ends_are_soft_and_plain_and_history_stays_out() -> None:
    soft = torch.tensor([[3.0, -math.inf, 1.0, 0.0]])
    plain = torch.tensor([[0.0, -math.inf, 2.0, 5.0]])
    assert torch.equal(blend(soft, plain, 1.0), soft)
    assert torch.equal(blend(soft, plain, 0.0), plain)
    mid = blend(soft, plain, 0.25)
    assert not torch.isnan(mid).any()
    assert torch.allclose(mid, torch.tensor([[0.75, -math.inf, 1.75, 3.75]]))


# ---------------------------------------------------------------------------- validation and tuning


def test_validation_prompts_use_training_templates_on_validation_targets() -> None:
    t = tiny("sasrec")
    tasks = build_tasks(t.ds, t.split.valid, t.ds.prompt_tags(), seed=0, v1=False, templates="train")
    assert tasks["positive"].cases and {c.target for c in tasks["positive"].cases} <= {
        c.target for c in t.split.valid
    }
    assert not any(p and any(p == x.replace("{a}", tag) for x in EVAL_POS for tag in t.ds.tag_vocab)
                   for p in tasks["positive"].prompts)  # fmt: skip
    assert all(any(p == x.replace("{a}", tag) for x in TRAIN_POS for tag in t.ds.tag_vocab)
               for p in tasks["positive"].prompts)  # fmt: skip


def test_validator_scores_match_the_evaluator() -> None:
    """β = 0 is the intended-tag filter; λ = 1 soft is the evaluator's soft mode (same cases)."""
    t = tiny("sasrec")
    enc = shared_encoder()
    v = HeadValidator(t.model, t.ds, t.split.valid, PromptBank(enc), t.ds.prompt_tags(), seed=0)
    tasks = build_tasks(t.ds, t.split.valid, t.ds.prompt_tags(), seed=0, v1=False, templates="train")
    ev = Evaluator(t.model, t.ds, enc, t.ds.prompt_tags())
    for kind in ("positive", "negative", "compound"):
        pc = ev.evaluate_task(tasks[kind])
        assert v.score([kind]) == pytest.approx(float(pc["dpr_soft"]["ndcg@10"].mean()), abs=1e-6)
        assert v.score([kind], beta=0.0) == pytest.approx(
            float(pc["filter_full"]["ndcg@10"].mean()), abs=1e-6
        )
    assert v.score(["positive"]) != v.score(["positive"], scale=3.0)


def test_tuning_picks_the_best_grid_values() -> None:
    t = tiny("sasrec")
    v = HeadValidator(t.model, t.ds, t.split.valid, PromptBank(shared_encoder()), t.ds.prompt_tags(), seed=0)
    r = v.tune()
    kinds = ["positive", "negative", "compound"]
    assert r["soft_scale"] in LAMBDAS and r["hybrid_blend"] in BETAS
    best_soft = max(v.score(kinds, scale=x) for x in LAMBDAS)
    assert v.score(kinds, scale=r["soft_scale"]) == pytest.approx(best_soft)
    assert r["hybrid_ndcg@10"][str(r["hybrid_blend"])] == pytest.approx(max(r["hybrid_ndcg@10"].values()))
    # β = 0 is in the grid: the tuned hybrid never scores below the filter on validation
    assert r["hybrid_ndcg@10"][str(r["hybrid_blend"])] >= r["hybrid_ndcg@10"]["0.0"]


def test_evaluator_applies_the_soft_scale_and_the_blend() -> None:
    t = tiny("sasrec")
    enc = shared_encoder()
    tasks = build_tasks(t.ds, t.split.test[:40], t.ds.prompt_tags(), seed=0, v1=False)
    ev = Evaluator(t.model, t.ds, enc, t.ds.prompt_tags())
    base = ev.scores(tasks["positive"])
    try:
        t.model.soft_scale, t.model.hybrid_blend = 0.0, 0.0
        flat = ev.scores(tasks["positive"])
    finally:
        t.model.soft_scale, t.model.hybrid_blend = 1.0, 1.0
    # λ = 0: the query is [h ; 0], so soft is the backbone; β = 0: hybrid is the mapped filter
    assert torch.allclose(flat["dpr_soft"], flat["backbone"], atol=1e-5)
    assert torch.equal(flat["dpr_hybrid"], flat["dpr_hard"])
    assert not torch.allclose(base["dpr_soft"], base["backbone"], atol=1e-3)


# ---------------------------------------------------------------------------- early stopping


@lru_cache(maxsize=1)
def _held_out_run() -> tuple[DPR, TrainResult, HeadValidator]:
    ds = generate(SynthConfig(seed=7, n_users=300, n_items=150, min_len=10, max_len=30))
    split = leave_one_out(ds)
    cfg = ModelConfig(backbone="sasrec", n_items=ds.n_items, d=32, max_len=20, n_layers=2, n_heads=2,
                      d_ff=32, dropout=0.1, fusion_hidden=64, n_experts=2, expert_hidden=64)  # fmt: skip
    tc = TrainConfig(seed=0, epochs1=10, lr1=5e-3, eval_every=0, epochs2=5, epochs3=6, lr23=3e-2,
                     batch23=128, progress=False, holdout=5, rank_weight=0.5, clause_noise=0.3,
                     head_patience=2, tune=True)  # fmt: skip
    model = DPR.create(cfg, seed=0)
    bank = PromptBank(shared_encoder())
    res = train_all(model, ds, split, bank, tc, ds.prompt_tags())
    return model, res, HeadValidator(model, ds, split.valid, bank, ds.prompt_tags(), tc.seed)


def test_held_out_run_keeps_the_best_validated_head_and_tunes() -> None:
    model, res, v = _held_out_run()
    va = res.valid
    assert va["held_out"] and va["head_samples"] == 300 * 5  # every synthetic user has >= 8 train items
    s3 = va["stage3"]
    assert 1 <= len(s3) <= 6 and len(va["stage2"]) >= 1
    tuned = va["tuning"]
    assert (model.soft_scale, model.hybrid_blend) == (tuned["soft_scale"], tuned["hybrid_blend"])
    # the kept head is the best validated one (not the last epoch's)
    assert v.score(["positive", "negative", "compound"]) == pytest.approx(max(s3), abs=1e-6)
    assert tuned["soft_ndcg@10"]["1.0"] == pytest.approx(max(s3), abs=1e-6)


# ---------------------------------------------------------------------------- steering.json


def test_steering_file_round_trips_and_leaves_the_v1_files_alone(tmp_path: Path) -> None:
    t = tiny("sasrec")
    enc = shared_encoder()
    plain = write_checkpoint(t.model, t.ds, enc, tmp_path / "a")
    assert not (plain / STEERING_FILE).exists()
    try:
        t.model.soft_scale, t.model.hybrid_blend = 1.5, 0.25
        tuned = write_checkpoint(t.model, t.ds, enc, tmp_path / "b")
    finally:
        t.model.soft_scale, t.model.hybrid_blend = 1.0, 1.0
    for name in ("config.json", "model.safetensors", "items.jsonl", "golden.json"):
        assert (plain / name).read_bytes() == (tuned / name).read_bytes(), name
    model, _ = load_checkpoint(tuned)
    assert (model.soft_scale, model.hybrid_blend) == (1.5, 0.25)
    assert read_steering(plain) == (1.0, 1.0)
    # a re-export with the defaults removes an older tuning
    write_checkpoint(t.model, t.ds, enc, tuned)
    assert not (tuned / STEERING_FILE).exists()


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        json.dumps({"format": "other", "version": 1, "soft_scale": 1, "hybrid_blend": 1}),
        json.dumps({"format": "steer-dpr-steering", "version": 2, "soft_scale": 1, "hybrid_blend": 1}),
        json.dumps({"format": "steer-dpr-steering", "version": 1, "soft_scale": "2", "hybrid_blend": 1}),
        json.dumps({"format": "steer-dpr-steering", "version": 1, "soft_scale": True, "hybrid_blend": 1}),
        '{"format": "steer-dpr-steering", "version": 1, "soft_scale": NaN, "hybrid_blend": 1}',
        json.dumps({"format": "steer-dpr-steering", "version": 1, "soft_scale": 0, "hybrid_blend": 1}),
        json.dumps({"format": "steer-dpr-steering", "version": 1, "soft_scale": 1, "hybrid_blend": 1.5}),
        json.dumps({"format": "steer-dpr-steering", "version": 1, "soft_scale": 1}),
        json.dumps([1, 2]),
        " " * (64 * 1024 + 1),
    ],
)
def test_hostile_steering_files_are_refused(tmp_path: Path, content: str) -> None:
    (tmp_path / STEERING_FILE).write_text(content)
    with pytest.raises(ValueError, match=STEERING_FILE):
        read_steering(tmp_path)


class _ScriptedValidator:
    """Returns scripted validation scores and snapshots the head at every check."""

    def __init__(self, model: DPR, scores: list[float]) -> None:
        self.model = model
        self.scores = list(scores)
        self.snapshots: list[dict[str, torch.Tensor]] = []
        self.aux: list[torch.Tensor] = []

    def score(self, kinds: list[str], scale: float = 1.0, beta: float | None = None) -> float:
        self.snapshots.append(copy.deepcopy(self.model.head.state_dict()))
        assert self.model.backbone.aux_emb is not None
        self.aux.append(self.model.backbone.aux_emb.detach().clone())
        return self.scores.pop(0)


def test_early_stopping_restores_the_best_epoch_and_stops() -> None:
    t = tiny("sasrec")
    model = copy.deepcopy(t.model)
    smp = build_samples(model, t.split, t.ds.tag_matrix(), 0, 0)
    tc = TrainConfig(seed=0, epochs3=8, lr23=3e-3, batch23=128, progress=False, head_patience=2)
    fake = _ScriptedValidator(model, [0.5, 0.9, 0.3, 0.2, 0.95, 0.99, 0.99, 0.99])
    log: list[float] = []
    bank = PromptBank(shared_encoder())
    losses = train_head(model, t.ds, smp, bank, t.ds.prompt_tags(), tc, 3, None, fake, log)  # type: ignore[arg-type]
    assert len(losses) == 4 and log == [0.5, 0.9, 0.3, 0.2]  # two epochs without a gain after the best
    got = model.head.state_dict()
    assert all(torch.equal(got[k], fake.snapshots[1][k]) for k in got)
    assert not all(torch.equal(got[k], fake.snapshots[3][k]) for k in got)
    assert model.backbone.aux_emb is not None and torch.equal(model.backbone.aux_emb, fake.aux[1])


# ---------------------------------------------------------------------------- model vs model


def test_compare_models_pairs_the_same_cases_in_one_holm_family() -> None:
    rng = np.random.default_rng(0)
    base = rng.random(200)
    a = {"positive": {"dpr_soft": {"ndcg@10": base + 0.2}, "dpr_hybrid": {"ndcg@10": base}},
         "negative": {"dpr_soft": {"recall@10": base[:50]}}}  # fmt: skip
    b = {"positive": {"dpr_soft": {"ndcg@10": base}, "dpr_hybrid": {"ndcg@10": base}},
         "negative": {"dpr_soft": {"recall@10": base[:50]}}}  # fmt: skip
    groups = {"positive": list(range(200)), "negative": list(range(50))}
    out = compare_models(a, b, groups, seed=0)
    assert [(c["task"], c["method"]) for c in out] == [("positive", "dpr_soft"), ("positive", "dpr_hybrid"),
                                                        ("negative", "dpr_soft")]  # fmt: skip
    assert all(c["family"] == 3 for c in out)
    assert out[0]["diff"] == pytest.approx(0.2) and out[0]["p_holm"] < 0.01
    assert out[1]["diff"] == 0.0 and out[1]["p_holm"] == 1.0
    b["positive"]["dpr_soft"]["ndcg@10"] = base[:100]
    with pytest.raises(ValueError, match="different cases"):
        compare_models(a, b, groups, seed=0)


def test_cli_compare_finds_an_untrained_head_worse(tmp_path: Path) -> None:
    from steer_train.cli import main
    from steer_train.models import DPRHead
    from steer_train.synth import write_generic

    t = tiny("sasrec")
    n = torch.get_num_threads()
    enc = shared_encoder()
    good = write_checkpoint(t.model, t.ds, enc, tmp_path / "good")
    blank = copy.deepcopy(t.model)
    torch.manual_seed(0)
    blank.head = DPRHead(t.model.cfg)
    bad = write_checkpoint(blank, t.ds, enc, tmp_path / "bad")
    inter, items = write_generic(t.ds, tmp_path / "data")
    out = tmp_path / "c.json"
    try:
        main(["--no-progress", "compare", "--checkpoint", str(good), "--against", str(bad), "--dataset",
              f"generic:{inter},{items}", "--threads", "1", "--results", str(out)])  # fmt: skip
    finally:
        torch.set_num_threads(n)
    doc = json.loads(out.read_text())
    rows = {(c["task"], c["method"]): c for c in doc["comparisons"]}
    assert rows[("positive", "dpr_soft")]["diff"] > 0.05 and rows[("positive", "dpr_soft")]["p_holm"] < 0.05
    assert all(c["family"] == len(doc["comparisons"]) == 5 for c in doc["comparisons"])  # no phrase tasks


def test_holdout_mix_trains_on_in_sample_windows_and_the_held_out_transitions() -> None:
    ds = generate(SynthConfig(seed=7, n_users=60, n_items=80, min_len=8, max_len=14))
    split = leave_one_out(ds)
    cfg = ModelConfig(backbone="sasrec", n_items=ds.n_items, d=16, max_len=10, n_layers=1, n_heads=1,
                      d_ff=16, dropout=0.0, fusion_hidden=16, n_experts=1, expert_hidden=16)  # fmt: skip
    bank = PromptBank(shared_encoder())
    kept, held = holdout_split(split.train, 3)
    in_sample = sum(len(s) - 1 for s in kept if len(s) >= 2)
    counts = {}
    for mix in (False, True):
        tc = TrainConfig(seed=0, epochs1=1, eval_every=0, epochs2=1, epochs3=1, progress=False,
                         holdout=3, holdout_mix=mix)  # fmt: skip
        res = train_all(DPR.create(cfg, seed=0), ds, split, bank, tc, ds.prompt_tags())
        counts[mix] = res.valid["head_samples"]
    assert counts == {False: len(held), True: in_sample + len(held)}
    assert len(held) == 3 * 60


# ---------------------------------------------------------------------------- prompt-only dims from E


def _twin_items_model() -> tuple[DPR, torch.Tensor]:
    """A copy of the tiny model in which item 2's collaborative vector equals item 1's."""
    model = copy.deepcopy(tiny("sasrec").model)
    with torch.no_grad():
        model.backbone.item_emb.weight[3] = model.backbone.item_emb.weight[2]  # token = row + 1
    return model, model.backbone.base_table().detach().clone()


def test_aux_net_gives_items_with_equal_vectors_equal_prompt_dimensions() -> None:
    """With ``aux_net`` the prompt-only dimensions are ``g(E)``: two items with the same collaborative
    vector cannot be told apart by a prompt (so a hidden tag member is not singled out); the free
    table (the default) learns them apart."""
    t = tiny("sasrec")
    smp = build_samples(t.model, t.split, t.ds.tag_matrix(), 0, 0)
    bank = PromptBank(shared_encoder())
    tc = TrainConfig(seed=0, epochs3=2, lr23=3e-3, batch23=128, progress=False)
    free, _ = _twin_items_model()
    train_head(free, t.ds, smp, bank, t.ds.prompt_tags(), tc, 3)
    assert free.backbone.aux_emb is not None
    assert not torch.allclose(free.backbone.aux_emb[1], free.backbone.aux_emb[2], atol=1e-4)
    model, E = _twin_items_model()
    net = AuxNet(model.cfg.d, 16, model.cfg.d_aux, seed=0)
    before = net.fc2.weight.detach().clone()
    train_head(model, t.ds, smp, bank, t.ds.prompt_tags(), tc, 3, aux_net=net)
    aux = model.backbone.aux_emb
    assert aux is not None and not aux.requires_grad
    assert not torch.equal(net.fc2.weight, before)  # g trained
    assert torch.allclose(aux, net(E), atol=1e-6)  # the table the server indexes is g(E)
    assert torch.equal(aux[1], aux[2])
    assert torch.equal(model.backbone.base_table(), E)  # the backbone stays frozen


def test_aux_net_early_stopping_restores_the_best_epochs_net() -> None:
    t = tiny("sasrec")
    model, E = _twin_items_model()
    smp = build_samples(model, t.split, t.ds.tag_matrix(), 0, 0)
    tc = TrainConfig(seed=0, epochs3=6, lr23=3e-3, batch23=128, progress=False, head_patience=2)
    fake = _ScriptedValidator(model, [0.5, 0.9, 0.3, 0.2, 0.95, 0.99])
    net = AuxNet(model.cfg.d, 16, model.cfg.d_aux, seed=0)
    bank = PromptBank(shared_encoder())
    train_head(model, t.ds, smp, bank, t.ds.prompt_tags(), tc, 3, None, fake, None, net)  # type: ignore[arg-type]
    assert len(fake.aux) == 4
    assert model.backbone.aux_emb is not None and torch.equal(model.backbone.aux_emb, fake.aux[1])
    assert torch.allclose(net(E), fake.aux[1], atol=1e-6)  # the net of the kept epoch, not the last
