"""A tiny model trained once per test session on synthetic data (the CI smoke run)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from steer_train.data import Dataset, Split, leave_one_out
from steer_train.minilm import shared_encoder
from steer_train.models import DPR, ModelConfig
from steer_train.prompts import PromptBank
from steer_train.synth import SynthConfig, generate
from steer_train.train import TrainConfig, TrainResult, train_all


@dataclass
class Tiny:
    ds: Dataset
    split: Split
    model: DPR
    result: TrainResult


@lru_cache(maxsize=2)
def tiny(backbone: str = "sasrec") -> Tiny:
    ds = generate(SynthConfig(seed=7, n_users=300, n_items=150, min_len=10, max_len=30))
    split = leave_one_out(ds)
    cfg = ModelConfig(
        backbone=backbone, n_items=ds.n_items, d=32, max_len=20, n_layers=2, n_heads=2, d_ff=32,
        dropout=0.1, fusion_hidden=64, n_experts=2, expert_hidden=64,
    )  # fmt: skip
    tc = TrainConfig(
        seed=0, epochs1=15, lr1=5e-3, eval_every=0, epochs2=4, epochs3=5, lr23=3e-3,
        batch23=128, progress=False,
    )  # fmt: skip
    model = DPR.create(cfg, seed=0)
    res = train_all(model, ds, split, PromptBank(shared_encoder()), tc, ds.prompt_tags())
    return Tiny(ds, split, model, res)
