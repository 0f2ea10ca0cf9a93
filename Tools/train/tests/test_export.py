"""Checkpoint export: round trip, and an independent NumPy forward pass written from
docs/checkpoint-format.md that must reproduce golden.json (what the Swift side does)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

from steer_train.clauses import parse
from steer_train.export import load_checkpoint, write_checkpoint
from steer_train.minilm import shared_encoder

from .helpers import tiny

Arr = np.ndarray


def _ln(x: Arr, w: Arr, b: Arr, eps: float) -> Arr:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    out: Arr = (x - mu) / np.sqrt(var + eps) * w + b
    return out


def _lin(x: Arr, t: dict[str, Arr], name: str) -> Arr:
    out: Arr = x @ t[name + ".weight"].T + t[name + ".bias"]
    return out


def _sigmoid(x: Arr) -> Arr:
    out: Arr = 1.0 / (1.0 + np.exp(-x))
    return out


def reference_user_vector(cfg: dict[str, Any], t: dict[str, Arr], rows: list[int]) -> Arr:
    d, max_len = cfg["d"], cfg["max_len"]
    rows = rows[-max_len:]
    if not rows:
        return np.zeros(d, dtype=np.float64)
    E = t["backbone.input_embeddings"].astype(np.float64)
    if cfg["backbone"] == "gru4rec":
        h = np.zeros(d)
        wi, wh = t["backbone.gru.weight_ih"], t["backbone.gru.weight_hh"]
        bi, bh = t["backbone.gru.bias_ih"], t["backbone.gru.bias_hh"]
        for r in rows:
            gi = wi @ E[r] + bi
            gh = wh @ h + bh
            rg = _sigmoid(gi[:d] + gh[:d])
            zg = _sigmoid(gi[d : 2 * d] + gh[d : 2 * d])
            n = np.tanh(gi[2 * d :] + rg * gh[2 * d :])
            h = (1 - zg) * n + zg * h
        return h
    L = len(rows)
    eps = cfg["layer_norm_eps"]
    x = E[rows] * cfg["input_scale"] + t["backbone.pos_emb.weight"][max_len - L :]
    nh = cfg["n_heads"]
    hd = d // nh
    causal = np.tril(np.ones((L, L), dtype=bool))
    for i in range(cfg["n_layers"]):
        p = f"backbone.blocks.{i}."
        y = _ln(x, t[p + "ln1.weight"], t[p + "ln1.bias"], eps)
        q, k, v = _lin(y, t, p + "q"), _lin(y, t, p + "k"), _lin(y, t, p + "v")
        ctx = np.zeros_like(x)
        for hh in range(nh):
            s = slice(hh * hd, (hh + 1) * hd)
            sc = q[:, s] @ k[:, s].T / math.sqrt(hd)
            sc = np.where(causal, sc, -np.inf)
            sc = np.exp(sc - sc.max(-1, keepdims=True))
            ctx[:, s] = (sc / sc.sum(-1, keepdims=True)) @ v[:, s]
        x = x + _lin(ctx, t, p + "out")
        y = _ln(x, t[p + "ln2.weight"], t[p + "ln2.bias"], eps)
        x = x + _lin(np.maximum(_lin(y, t, p + "fc1"), 0), t, p + "fc2")
    return _ln(x[-1], t["backbone.final_ln.weight"], t["backbone.final_ln.bias"], eps)


def reference_query(cfg: dict[str, Any], t: dict[str, Arr], h: Arr, clauses: list[dict[str, Any]]) -> Arr:
    q = np.concatenate([h, np.zeros(cfg["d_aux"])])
    for c in clauses:
        e = np.asarray(c["embedding"])
        z = _lin(e, t, "head.proj")
        f = _lin(
            np.maximum(_lin(np.concatenate([h, z, h * z]), t, "head.fusion.fc1"), 0),
            t,
            "head.fusion.fc2",
        )
        g = "head.pos" if c["polarity"] == "+" else "head.neg"
        key = "positive" if c["polarity"] == "+" else "negative"
        logits = _lin(f, t, g + ".gate")
        w = np.exp(logits - logits.max())
        w /= w.sum()
        for k in range(cfg["n_experts"][key]):
            ek = f"{g}.experts.{k}"
            q = q + w[k] * _lin(np.maximum(_lin(f, t, ek + ".fc1"), 0), t, ek + ".fc2")
    return q


@pytest.mark.parametrize("backbone", ["sasrec", "gru4rec"])
def test_golden_matches_reference_forward(backbone: str, tmp_path: Path) -> None:
    tn = tiny(backbone)
    d = write_checkpoint(tn.model, tn.ds, shared_encoder(), tmp_path / "ckpt")
    cfg = json.loads((d / "config.json").read_text())
    t = load_file(str(d / "model.safetensors"))
    assert all(v.dtype == np.float32 for v in t.values())
    assert t["item_embeddings"].shape == (tn.ds.n_items, cfg["d"] + cfg["d_aux"])
    assert np.array_equal(t["item_embeddings"][:, : cfg["d"]], t["backbone.input_embeddings"])
    assert t["tag_embeddings"].shape == (len(cfg["tags"]), 384)
    items = [json.loads(x) for x in (d / "items.jsonl").read_text().splitlines()]
    assert [i["id"] for i in items] == [it.id for it in tn.ds.items]
    row = {i["id"]: r for r, i in enumerate(items)}
    golden = json.loads((d / "golden.json").read_text())
    assert len(golden["cases"]) >= 8
    enc = shared_encoder()
    E = t["item_embeddings"].astype(np.float64)
    for case in golden["cases"]:
        rows = [row[i] for i in case["history"]]
        assert [c["text"] for c in case["clauses"]] == [c.text for c in parse(case["prompt"])]
        for c in case["clauses"]:
            assert np.allclose(enc.encode([c["text"]])[0].numpy(), c["embedding"], atol=1e-5)
        h = reference_user_vector(cfg, t, rows)
        assert np.allclose(h, case["user_vector"], atol=1e-4), case["prompt"]
        q = reference_query(cfg, t, h, case["clauses"])
        assert np.allclose(q, case["query"], atol=1e-4), case["prompt"]
        scores = E @ q
        scores[rows] = -np.inf
        top = [items[r]["id"] for r in np.argsort(-scores, kind="stable")[:10]]
        assert top == case["top10"]
    prompts = [c["prompt"] for c in golden["cases"]]
    assert None in prompts and any(c["clauses"] == [] and c["prompt"] for c in golden["cases"])
    assert any(len(c["history"]) > cfg["max_len"] for c in golden["cases"]) or backbone == "gru4rec"


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    tn = tiny("sasrec")
    d = write_checkpoint(tn.model, tn.ds, shared_encoder(), tmp_path / "ckpt")
    model, items = load_checkpoint(d)
    assert [i.id for i in items] == [i.id for i in tn.ds.items]
    a = tn.model.backbone.state_dict()
    for k, v in model.backbone.state_dict().items():
        assert (a[k] == v).all(), k
