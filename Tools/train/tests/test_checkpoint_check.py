"""``export.load_checkpoint`` (evaluate, compare, export, set-steering) reads a checkpoint as hostile
input: every damage the warm start refuses is refused here too, with the same message, and so are
forged sizes that would make the reader build a huge model, before any model is built."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import torch

from steer_train.checkpoint_check import LIMITS, CheckpointError
from steer_train.data import Dataset
from steer_train.export import load_checkpoint
from steer_train.models import DPR

from .test_warmstart import CORRUPTIONS, Corrupt, _edit_model_config, _items_lines, damaged_copy, live

# What only a checkpoint read on its own checks (a warm start compares with its run's configuration).
ALONE: dict[str, tuple[Corrupt, str]] = {
    "forged dimension": (_edit_model_config(d=1 << 30), "model_config.d = 1073741824 is outside [1, 4096]"),
    "forged layers": (_edit_model_config(n_layers=100_000), "model_config.n_layers = 100000 is outside"),
    "forged items": (_edit_model_config(n_items=10**12), "model_config.n_items = 1000000000000 is outside"),
    "no aux dimensions below zero": (_edit_model_config(d_aux=-1), "model_config.d_aux = -1 is outside"),
    "unknown backbone": (_edit_model_config(backbone="bert"), "backbone must be one of"),
    "heads do not divide d": (_edit_model_config(n_heads=3), "d must be a multiple of n_heads"),
    "dropout out of range": (_edit_model_config(dropout=1.5), "dropout must be in [0, 1)"),
    "title not a string": (_items_lines(lambda ls: ['{"id": "x", "title": 5}', *ls[1:]]), "title must"),
    "tags not strings": (_items_lines(lambda ls: ['{"id": "x", "tags": [1]}', *ls[1:]]), "tags a list"),
}  # fmt: skip
# The warm start's cases that hold for any reader ("other dimension" is a warm-start comparison).
SHARED = {k: v for k, v in CORRUPTIONS.items() if k != "other dimension"}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Dataset, DPR, Path]:
    return live(str(tmp_path_factory.mktemp("check")))


def test_an_intact_checkpoint_loads_with_its_weights_and_catalog(ckpt: tuple[Dataset, DPR, Path]) -> None:
    ds, src, path = ckpt
    model, items = load_checkpoint(path)
    assert [str(it.id) for it in items] == [str(it.id) for it in ds.items]
    assert [it.tags for it in items] == [it.tags for it in ds.items]
    assert torch.equal(model.backbone.item_table(), src.backbone.item_table())
    for k, v in src.head.state_dict().items():
        assert torch.equal(model.head.state_dict()[k], v), k


@pytest.mark.parametrize("case", sorted({**SHARED, **ALONE}))
def test_a_damaged_or_forged_checkpoint_is_refused_before_a_model_is_built(
    case: str, ckpt: tuple[Dataset, DPR, Path], tmp_path: Path
) -> None:
    _, _, path = ckpt
    corrupt, message = {**SHARED, **ALONE}[case]
    damaged = damaged_copy(path, tmp_path, corrupt)
    started = time.monotonic()
    with pytest.raises(CheckpointError, match=re.escape(message)):
        load_checkpoint(damaged)
    assert time.monotonic() - started < 5  # refused from the header, not after building a forged size


def test_the_limits_cover_every_integer_size_of_the_model_config() -> None:
    from dataclasses import fields

    from steer_train.models import ModelConfig

    ints = {f.name for f in fields(ModelConfig) if isinstance(getattr(ModelConfig(), f.name), int)}
    assert ints - {"prompt_dim"} == set(LIMITS)
