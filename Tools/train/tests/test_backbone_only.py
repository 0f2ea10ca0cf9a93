"""The backbone-only path (data sets without tags, e.g. Amazon Video Games): stage 1, the standard task
with full ranking and the sampled-negatives anchor, the stage-1 time budget and the CLI's results file."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from steer_train.cli import main
from steer_train.data import Dataset, Item, leave_one_out
from steer_train.evaluate import evaluate_backbone, sample_negatives
from steer_train.models import DPR, ModelConfig
from steer_train.report import write_table
from steer_train.train import TrainConfig, quick_ndcg, train_stage1, user_vectors


@pytest.fixture(autouse=True)
def _keep_threads() -> Iterator[None]:
    """``main`` sets torch's thread count (``--threads 1`` here); later tests get theirs back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _tagless(n_users: int = 60, n_items: int = 40, seed: int = 0) -> Dataset:
    """Users walk through consecutive items (learnable), no tags."""
    rng = random.Random(seed)
    seqs = []
    for _ in range(n_users):
        start = rng.randrange(n_items)
        seqs.append([(start + k) % n_items for k in range(rng.randint(4, 9))])
    items = [Item(id=i + 1, title=f"item {i + 1}", tags=[]) for i in range(n_items)]
    return Dataset("tagless", items, list(range(1, n_users + 1)), seqs)


def _model(ds: Dataset, backbone: str = "sasrec") -> DPR:
    cfg = ModelConfig(backbone=backbone, n_items=ds.n_items, d=16, max_len=10, n_layers=1, d_ff=16)
    return DPR.create(cfg, seed=0)


def test_sample_negatives_excludes_and_is_seeded() -> None:
    excl = {0, 3, 5, 7}
    a = sample_negatives(50, excl, 20, np.random.default_rng(1))
    b = sample_negatives(50, excl, 20, np.random.default_rng(1))
    c = sample_negatives(50, excl, 20, np.random.default_rng(2))
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()
    assert len(a) == 20 and len(set(a.tolist())) == 20 and not set(a.tolist()) & excl
    assert all(0 <= x < 50 for x in a.tolist())
    # fewer left than asked: all of them
    assert sample_negatives(6, {1, 4}, 10, np.random.default_rng(0)).tolist() == [0, 2, 3, 5]


@pytest.mark.parametrize("backbone", ["sasrec", "gru4rec"])
def test_evaluate_backbone_matches_brute_force(backbone: str) -> None:
    ds = _tagless()
    model = _model(ds, backbone)
    cases = leave_one_out(ds).test
    res = evaluate_backbone(model, cases, seed=3, negatives=10, batch=7)
    # brute force, one case at a time, with the same negative draws
    rng = np.random.default_rng(3)
    h = user_vectors(model, [c.history for c in cases])
    table = model.backbone.base_table()
    full_nd, full_hit, s_nd, s_hit = [], [], [], []
    for i, c in enumerate(cases):
        sc = (h[i] @ table.T).tolist()
        others = [sc[j] for j in range(ds.n_items) if j != c.target and j not in c.history]
        rank = sum(x > sc[c.target] for x in others)
        full_hit.append(rank < 10)
        full_nd.append(1 / math.log2(rank + 2) if rank < 10 else 0.0)
        neg = sample_negatives(ds.n_items, set(c.history) | {c.target}, 10, rng)
        srank = sum(sc[j] > sc[c.target] for j in neg.tolist())
        s_hit.append(srank < 10)
        s_nd.append(1 / math.log2(srank + 2) if srank < 10 else 0.0)
    full = res["standard"]["methods"]["backbone"]
    samp = res["standard_sampled"]["methods"]["backbone"]
    assert res["standard"]["n"] == len(cases) == res["standard_sampled"]["n"]
    assert full["ndcg@10"] == pytest.approx(np.mean(full_nd), abs=1e-6)
    assert full["recall@10"] == pytest.approx(np.mean(full_hit), abs=1e-6)
    assert samp["ndcg@10"] == pytest.approx(np.mean(s_nd), abs=1e-6)
    assert samp["recall@10"] == pytest.approx(np.mean(s_hit), abs=1e-6)
    # a subset of the candidates can only rank the target higher
    assert samp["recall@10"] >= full["recall@10"] and samp["ndcg@10"] >= full["ndcg@10"]
    assert res["standard_sampled"]["negatives_min"] == 10
    # the batch size changes nothing
    assert evaluate_backbone(model, cases, seed=3, negatives=10, batch=1000) == res


def test_quick_ndcg_batches_agree() -> None:
    ds = _tagless()
    model = _model(ds)
    cases = leave_one_out(ds).valid
    assert quick_ndcg(model, cases, ds.n_items, batch=4) == pytest.approx(
        quick_ndcg(model, cases, ds.n_items), abs=1e-6
    )
    assert quick_ndcg(model, [], ds.n_items) == 0.0


def test_stage1_learns_and_time_budget_stops_it() -> None:
    ds = _tagless(n_users=120)
    split = leave_one_out(ds)
    model = _model(ds)
    before = quick_ndcg(model, split.valid, ds.n_items)
    log: list[tuple[int, float]] = []
    losses = train_stage1(
        model, split, TrainConfig(epochs1=12, lr1=1e-2, eval_every=4, progress=False), valid_log=log
    )
    assert len(losses) == 12 and losses[-1] < losses[0]
    assert [e for e, _ in log] == [4, 8, 12]
    assert max(v for _, v in log) > before + 0.1
    # a budget already spent: one epoch, validated, then stop
    log2: list[tuple[int, float]] = []
    tc = TrainConfig(epochs1=50, eval_every=10, progress=False, max_minutes1=1e-9)
    assert len(train_stage1(_model(ds), split, tc, valid_log=log2)) == 1
    assert [e for e, _ in log2] == [1]


def _write_video(path: Path) -> None:
    ds = _tagless(n_users=50, n_items=30, seed=1)
    path.write_text("".join(f"{u} {i + 1}\n" for u, s in enumerate(ds.sequences, 1) for i in s))


def test_cli_run_writes_a_backbone_only_results_file(tmp_path: Path) -> None:
    video = tmp_path / "Video.txt"
    _write_video(video)
    out = tmp_path / "r" / "amazon.json"
    args = ["--no-progress", "run", "--dataset", f"amazon-video-games={video}", "--backbone", "gru4rec",
            "--d", "16", "--epochs1", "3", "--eval-every", "1", "--threads", "1", "--negatives", "5",
            "--results", str(out)]  # fmt: skip
    main(args)
    doc = json.loads(out.read_text())
    assert doc["mode"] == "backbone-only" and doc["dataset"] == "amazon-video-games"
    assert doc["command"].startswith("steer-train --no-progress run --dataset amazon-video-games=")
    assert doc["seed"] == 0 and doc["backbone"] == "gru4rec" and doc["commit"] and doc["machine"]["cores"]
    assert len(doc["losses"]["stage1"]) == doc["epochs1_run"] == 3
    assert [e for e, _ in doc["valid_ndcg@10"]] == [1, 2, 3]
    assert set(doc["seconds"]) == {"stage1", "evaluate"}
    assert doc["results"]["standard_sampled"]["negatives"] == 5
    assert set(doc["results"]) == {"standard", "standard_sampled", "comparisons"}
    # the generated table shows both rows; --out (a DPR checkpoint) needs the prompt head
    table = write_table(out.parent)
    assert "| amazon-video-games | gru4rec | 0 | standard | " in table
    assert "| amazon-video-games | gru4rec | 0 | standard_sampled | " in table
    with pytest.raises(SystemExit, match="--out needs the prompt head"):
        main([*args, "--out", str(tmp_path / "ckpt")])


def test_cli_backbone_only_flag_on_a_tagged_data_set(tmp_path: Path) -> None:
    from steer_train.synth import SynthConfig, generate, write_generic

    inter, items = write_generic(generate(SynthConfig(seed=2, n_users=40, n_items=30)), tmp_path)
    out = tmp_path / "s.json"
    main(["--no-progress", "run", "--dataset", f"generic:{inter},{items}", "--backbone-only", "--d", "16",
          "--epochs1", "2", "--threads", "1", "--results", str(out)])  # fmt: skip
    doc = json.loads(out.read_text())
    assert doc["mode"] == "backbone-only" and "positive" not in doc["results"]
