"""Warm start (``--init-from``): weights carried over by item id, hostile checkpoints refused, and a
warm-started one-epoch run keeping at least the live model's validation metric."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from steer_train.cli import main as cli_main
from steer_train.data import Dataset, Item, leave_one_out
from steer_train.export import FORMAT, write_checkpoint
from steer_train.minilm import shared_encoder
from steer_train.models import DPR, ModelConfig
from steer_train.prompts import PromptBank
from steer_train.synth import SynthConfig, generate, write_generic
from steer_train.train import TrainConfig, quick_ndcg, train_all, train_stage1
from steer_train.warmstart import WarmStartError, warm_start

CFG = dict(d=16, max_len=10, n_layers=1, n_heads=1, d_ff=16, dropout=0.1, fusion_hidden=16, n_experts=1,
           expert_hidden=16, d_aux=4)  # fmt: skip


def config(ds: Dataset, **over: object) -> ModelConfig:
    return ModelConfig(**{**CFG, "n_items": ds.n_items, **over})  # type: ignore[arg-type]


def live(tmp: str) -> tuple[Dataset, DPR, Path]:
    """The 'live' model: trained for 12 epochs on tiny synthetic data, written as a checkpoint."""
    ds = generate(SynthConfig(seed=3, n_users=150, n_items=60, min_len=6, max_len=14))
    model = DPR.create(config(ds), seed=0)
    tc = TrainConfig(seed=0, epochs1=12, lr1=5e-3, eval_every=0, epochs2=1, epochs3=1, max_samples=300,
                     progress=False)  # fmt: skip
    train_all(model, ds, leave_one_out(ds), PromptBank(shared_encoder()), tc, ds.prompt_tags())
    out = Path(tmp) / "live"
    write_checkpoint(model, ds, shared_encoder(), out)
    return ds, model, out


@pytest.fixture(scope="module")
def live_ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Dataset, DPR, Path]:
    return live(str(tmp_path_factory.mktemp("warm")))


def test_shared_items_get_the_checkpoint_rows_and_new_items_fresh_ones(
    live_ckpt: tuple[Dataset, DPR, Path],
) -> None:
    ds, src, ckpt = live_ckpt
    # the new catalog: reversed order, the first two items gone, two items the checkpoint never saw
    items = [*reversed(ds.items[2:]), Item(id="new-1", title="n1", tags=["comedy"]),
             Item(id="new-2", title="n2", tags=[])]  # fmt: skip
    new_ds = replace(ds, items=items, sequences=[[0, 1]], user_ids=["u"], tag_vocab=[])
    model = DPR.create(config(new_ds), seed=1)
    fresh = model.backbone.item_table().detach().clone()
    report = warm_start(model, new_ds, ckpt)
    assert (report.shared, report.new, report.dropped) == (ds.n_items - 2, 2, 2)
    table, src_table = model.backbone.item_table(), src.backbone.item_table()
    old_row = {str(it.id): j for j, it in enumerate(ds.items)}
    for i, it in enumerate(items):
        if str(it.id) in old_row:
            assert torch.equal(table[i], src_table[old_row[str(it.id)]]), it.id
        else:
            assert torch.equal(table[i], fresh[i]), it.id
    assert bool(model.backbone.item_emb.weight[0].eq(0).all())  # padding stays zero
    src_bb = {k: v for k, v in src.backbone.state_dict().items() if k not in ("item_emb.weight", "aux_emb")}
    for k, v in src_bb.items():
        assert torch.equal(model.backbone.state_dict()[k], v), k
    for k, v in src.head.state_dict().items():
        assert torch.equal(model.head.state_dict()[k], v), k


Corrupt = Callable[[Path], None]


def _edit_config(**over: object) -> Corrupt:
    def f(d: Path) -> None:
        doc = json.loads((d / "config.json").read_text())
        doc.update(over)
        (d / "config.json").write_text(json.dumps(doc))

    return f


def _edit_model_config(**over: object) -> Corrupt:
    def f(d: Path) -> None:
        doc = json.loads((d / "config.json").read_text())
        doc["model_config"].update(over)
        (d / "config.json").write_text(json.dumps(doc))

    return f


def _edit_tensor(name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> Corrupt:
    def f(d: Path) -> None:
        w = load_file(str(d / "model.safetensors"))
        w[name] = fn(w[name]).contiguous()
        save_file(w, str(d / "model.safetensors"), metadata={"format": FORMAT})

    return f


def _write(path: str, text: bytes) -> Corrupt:
    def f(d: Path) -> None:
        (d / path).write_bytes(text)

    return f


def _truncate(d: Path) -> None:
    p = d / "model.safetensors"
    p.write_bytes(p.read_bytes()[:1000])


def _items_lines(fn: Callable[[list[str]], list[str]]) -> Corrupt:
    def f(d: Path) -> None:
        p = d / "items.jsonl"
        p.write_text("".join(x + "\n" for x in fn(p.read_text().splitlines())))

    return f


def _nan(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[0] = float("nan")
    return t


CORRUPTIONS: dict[str, tuple[Corrupt, str]] = {
    "version": (_edit_config(version=2), "not a steer-dpr v1 checkpoint"),
    "config not json": (_write("config.json", b"{"), "not JSON"),
    "config too large": (_write("config.json", b" " * (5 << 20)), "larger than"),
    "missing config field": (lambda d: _edit_config(model_config={"d": 16})(d), "must name exactly"),
    "bad field type": (_edit_model_config(d="16"), "model_config.d must be an int"),
    "other dimension": (_edit_model_config(d=32, d_ff=32), "architecture differs from this run's: d 32"),
    "more items than lines": (_edit_model_config(n_items=61), "items, config.json says n_items = 61"),
    "duplicate id": (_items_lines(lambda ls: [ls[0], ls[0], *ls[2:]]), "appears twice"),
    "id not a scalar": (_items_lines(lambda ls: ['{"id": [1]}', *ls[1:]]), "must be an integer or a string"),
    "truncated tensors": (_truncate, "unreadable"),
    "missing file": (lambda d: (d / "model.safetensors").unlink(), "model.safetensors: missing"),
    "wrong shape": (_edit_tensor("head.proj.bias", lambda t: t[:-1]), "head.proj.bias is F32 [15]"),
    "wrong dtype": (_edit_tensor("head.proj.bias", lambda t: t.double()), "head.proj.bias is F64"),
    "extra tensor": (lambda d: _add_tensor(d), "unexpected"),
    "not finite": (_edit_tensor("backbone.pos_emb.weight", _nan), "not finite"),
    "tables disagree": (_edit_tensor("item_embeddings", lambda t: t + 1), "differs from backbone.input"),
}


def _add_tensor(d: Path) -> None:
    w = load_file(str(d / "model.safetensors"))
    w["head.extra"] = torch.zeros(2)
    save_file(w, str(d / "model.safetensors"), metadata={"format": FORMAT})


def damaged_copy(ckpt: Path, tmp_path: Path, corrupt: Corrupt) -> Path:
    """A copy of ``ckpt`` under ``tmp_path`` with ``corrupt`` applied."""
    damaged = tmp_path / "ckpt"
    shutil.copytree(ckpt, damaged)
    corrupt(damaged)
    return damaged


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_a_damaged_or_mismatched_checkpoint_is_refused_and_the_model_untouched(
    case: str, live_ckpt: tuple[Dataset, DPR, Path], tmp_path: Path
) -> None:
    ds, _, ckpt = live_ckpt
    corrupt, message = CORRUPTIONS[case]
    damaged = damaged_copy(ckpt, tmp_path, corrupt)
    model = DPR.create(config(ds), seed=1)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    with pytest.raises(WarmStartError, match=message.replace("[", r"\[").replace("(", r"\(")):
        warm_start(model, ds, damaged)
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_a_warm_started_epoch_keeps_at_least_the_live_validation_metric(
    live_ckpt: tuple[Dataset, DPR, Path],
) -> None:
    ds, src, ckpt = live_ckpt
    split = leave_one_out(ds)
    live_valid = quick_ndcg(src, split.valid, ds.n_items)
    tc = TrainConfig(seed=1, epochs1=1, lr1=5e-3, eval_every=1, progress=False)
    cold = DPR.create(config(ds), seed=1)
    cold_log: list[tuple[int, float]] = []
    train_stage1(cold, split, tc, valid_log=cold_log)
    # what the assertion below could fail on: one epoch from scratch is far from the live model
    assert max(v for _, v in cold_log) < live_valid - 0.02, (cold_log, live_valid)
    warm = DPR.create(config(ds), seed=1)
    warm_start(warm, ds, ckpt)
    warm_log: list[tuple[int, float]] = []
    train_stage1(warm, split, replace(tc, init_from=str(ckpt)), valid_log=warm_log)
    assert warm_log[0][0] == 0 and abs(warm_log[0][1] - live_valid) < 1e-6, warm_log  # starts at live
    assert quick_ndcg(warm, split.valid, ds.n_items) >= live_valid - 1e-6, (warm_log, live_valid)


def test_the_cli_refuses_another_architecture_and_records_a_warm_start(
    live_ckpt: tuple[Dataset, DPR, Path], tmp_path: Path
) -> None:
    ds, _, ckpt = live_ckpt
    inter, items = write_generic(ds, tmp_path / "data")
    args = ["--no-progress", "run", "--dataset", f"generic:{inter},{items}", "--init-from", str(ckpt),
            "--d", "16", "--d-aux", "4", "--max-len", "10", "--layers", "1", "--experts", "1",
            "--fusion-hidden", "16", "--expert-hidden", "16", "--epochs1", "1", "--eval-every", "1",
            "--epochs2", "1", "--epochs3", "1", "--max-samples", "200", "--threads", "1"]  # fmt: skip
    with pytest.raises(SystemExit, match="architecture differs from this run's: d 16 \\(this run 32\\)"):
        cli_main([*args, "--d", "32"])
    results = tmp_path / "r.json"
    cli_main([*args, "--results", str(results)])
    doc = json.loads(results.read_text())
    assert doc["warm_start"] == {"checkpoint": str(ckpt), "shared": ds.n_items, "new": 0, "dropped": 0}
    assert doc["train_config"]["init_from"] == str(ckpt)


def test_a_gru4rec_checkpoint_carries_every_weight(
    live_ckpt: tuple[Dataset, DPR, Path], tmp_path: Path
) -> None:
    ds = live_ckpt[0]
    src = DPR.create(config(ds, backbone="gru4rec", n_layers=1), seed=3)
    src.tags = list(ds.tag_vocab)
    write_checkpoint(src, ds, shared_encoder(), tmp_path / "gru")
    model = DPR.create(config(ds, backbone="gru4rec", n_layers=1), seed=4)
    report = warm_start(model, ds, tmp_path / "gru")
    assert (report.shared, report.new, report.dropped) == (ds.n_items, 0, 0)
    for part in ("backbone", "head"):
        mine, theirs = getattr(model, part).state_dict(), getattr(src, part).state_dict()
        assert mine.keys() == theirs.keys()
        for k, v in theirs.items():
            assert torch.equal(mine[k], v), k
