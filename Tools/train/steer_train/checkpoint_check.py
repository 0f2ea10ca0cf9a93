"""Checked reading of a DPR checkpoint directory (docs/checkpoint-format.md), for every command that
loads one: ``steer-train evaluate``/``compare``/``export``/``set-steering`` (``export.load_checkpoint``)
and the warm start (``--init-from``, ``warmstart.py``).

A checkpoint is hostile input. Everything is checked before any model is built or any tensor copied,
and each failure raises :class:`CheckpointError` naming the file and the problem:

- ``config.json``: at most :data:`MAX_CONFIG_BYTES`, a ``steer-dpr`` v1 object whose
  ``model_config`` names exactly the :class:`ModelConfig` fields with values of their types. A warm
  start compares the architecture with its run's; a checkpoint read on its own must keep every size
  within :data:`LIMITS` (so a forged configuration cannot make the reader build a huge model), name a
  known backbone and the MiniLM prompt dimension; at most :data:`MAX_TAGS` tags, all strings;
- ``items.jsonl``: exactly ``n_items`` lines of at most :data:`MAX_ITEM_LINE_BYTES`, each an
  object with an integer or string ``id`` (no id twice), a string ``title`` and a list of string
  ``tags``;
- ``model.safetensors``: exactly the tensors the format lists, each float32 of the shape the
  configuration implies (read from the header before any tensor is loaded), every value finite,
  and ``item_embeddings[:, :d]`` equal to ``backbone.input_embeddings`` (the format stores the
  backbone table twice).

No package does this: the checks are of this project's checkpoint format.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from steer_train.data import Item
from steer_train.export import FORMAT, VERSION, _backbone_name
from steer_train.models import PROMPT_DIM, DPRHead, ModelConfig, make_backbone

#: Largest ``config.json`` read, in bytes (a real one is a few KiB plus its tag list).
MAX_CONFIG_BYTES = 4 << 20
#: Longest ``items.jsonl`` line read, in bytes (an id, a title and tags).
MAX_ITEM_LINE_BYTES = 64 << 10
#: Most tags a checkpoint may name.
MAX_TAGS = 1 << 16
#: Backbones a checkpoint may name.
BACKBONES = frozenset({"sasrec", "gru4rec"})
#: Inclusive bounds of every size in ``model_config`` for a checkpoint read without a run to compare
#: with (a real one is far inside them; the item count is bounded again by the tensors' shapes).
LIMITS: dict[str, tuple[int, int]] = {
    "n_items": (1, 50_000_000),
    "d": (1, 4096),
    "max_len": (1, 4096),
    "n_layers": (1, 64),
    "n_heads": (1, 64),
    "d_ff": (1, 1 << 16),
    "fusion_hidden": (1, 1 << 16),
    "n_experts": (1, 64),
    "expert_hidden": (1, 1 << 16),
    "d_aux": (0, 4096),
}
#: Fields that may differ between the checkpoint and the new run (no weight depends on them).
FREE_FIELDS = frozenset({"n_items", "dropout"})


class CheckpointError(ValueError):
    """The checkpoint cannot be read; the message names the file and the reason."""


@dataclass
class Checked:
    """A checkpoint that passed every check."""

    doc: dict[str, Any]
    cfg: ModelConfig
    items: list[Item]
    tensors: dict[str, torch.Tensor]


def read_config(d: Path, cfg: ModelConfig | None) -> tuple[dict[str, Any], ModelConfig, int]:
    """The checked ``config.json``: the document, its model configuration and its tag count.

    With ``cfg`` (a warm start) the architecture must equal it (every field but :data:`FREE_FIELDS`);
    without, every size must lie within :data:`LIMITS` before anything of that size is built.
    """
    path = d / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise CheckpointError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise CheckpointError(f"{path}: not a {FORMAT} v{VERSION} checkpoint")
    mc = doc.get("model_config")
    names = {f.name: f for f in fields(ModelConfig)}
    if not isinstance(mc, dict) or set(mc) != set(names):
        raise CheckpointError(f"{path}: model_config must name exactly the fields {sorted(names)}")
    types = (cfg or ModelConfig()).to_json()
    for name, value in mc.items():
        want = type(types[name])
        ok = isinstance(value, want) and not isinstance(value, bool)
        if want is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not ok:
            article = "an" if want is int else "a"
            raise CheckpointError(f"{path}: model_config.{name} must be {article} {want.__name__}")
    if cfg is not None:
        mine = cfg.to_json()
        differ = [
            f"{k} {mc[k]!r} (this run {mine[k]!r})"
            for k in sorted(names)
            if k not in FREE_FIELDS and mc[k] != mine[k]
        ]
        if differ:
            raise CheckpointError(
                f"{path}: the checkpoint's architecture differs from this run's: {', '.join(differ)}; "
                "train with the checkpoint's model options"
            )
    else:
        for name, (low, high) in LIMITS.items():
            if not low <= mc[name] <= high:
                raise CheckpointError(f"{path}: model_config.{name} = {mc[name]} is outside [{low}, {high}]")
        if mc["backbone"] not in BACKBONES:
            raise CheckpointError(f"{path}: model_config.backbone must be one of {sorted(BACKBONES)}")
        if mc["prompt_dim"] != PROMPT_DIM:
            raise CheckpointError(f"{path}: model_config.prompt_dim must be {PROMPT_DIM}")
        if not 0 <= mc["dropout"] < 1:
            raise CheckpointError(f"{path}: model_config.dropout must be in [0, 1)")
        if mc["d"] % mc["n_heads"] != 0:
            raise CheckpointError(f"{path}: model_config.d must be a multiple of n_heads")
    if mc["n_items"] < 1:
        raise CheckpointError(f"{path}: model_config.n_items must be at least 1")
    tags = doc.get("tags")
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise CheckpointError(f"{path}: tags must be a list of strings")
    if len(tags) > MAX_TAGS:
        raise CheckpointError(f"{path}: more than {MAX_TAGS} tags")
    return doc, ModelConfig(**mc), len(tags)


def read_items(d: Path, n_items: int) -> list[Item]:
    """The checkpoint's items in row order, ids as written (no two alike as text: the trainer
    matches ids as text)."""
    path = d / "items.jsonl"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    items: list[Item] = []
    seen: set[str] = set()
    with path.open("rb") as fh:
        while True:
            line = fh.readline(MAX_ITEM_LINE_BYTES + 1)
            if not line:
                break
            n = len(items) + 1
            if len(line) > MAX_ITEM_LINE_BYTES:
                raise CheckpointError(f"{path}:{n}: line longer than {MAX_ITEM_LINE_BYTES} bytes")
            if n > n_items:
                raise CheckpointError(f"{path}: more than n_items = {n_items} lines")
            try:
                o = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise CheckpointError(f"{path}:{n}: not JSON") from None
            raw = o.get("id") if isinstance(o, dict) else None
            if isinstance(raw, bool) or not isinstance(raw, int | str):
                raise CheckpointError(f"{path}:{n}: id must be an integer or a string")
            key = str(raw)
            if key in seen:
                raise CheckpointError(f"{path}:{n}: id {key!r} appears twice")
            seen.add(key)
            title, tags = o.get("title", ""), o.get("tags", [])
            if (
                not isinstance(title, str)
                or not isinstance(tags, list)
                or not all(isinstance(t, str) for t in tags)
            ):
                raise CheckpointError(f"{path}:{n}: title must be a string and tags a list of strings")
            items.append(Item(id=raw, title=title, tags=list(tags)))
    if len(items) != n_items:
        raise CheckpointError(f"{path}: {len(items)} items, config.json says n_items = {n_items}")
    return items


def expected_shapes(cfg: ModelConfig, n_items: int, n_tags: int) -> dict[str, tuple[int, ...]]:
    """The tensors of a checkpoint of ``cfg`` with ``n_items`` items and ``n_tags`` tags, by name."""
    small = ModelConfig(**{**cfg.to_json(), "n_items": 1})  # item tables are sized below
    shapes: dict[str, tuple[int, ...]] = {
        "item_embeddings": (n_items, cfg.d + max(cfg.d_aux, 0)),
        "backbone.input_embeddings": (n_items, cfg.d),
        "tag_embeddings": (n_tags, PROMPT_DIM),
    }
    for k, v in make_backbone(small).state_dict().items():
        name = _backbone_name(k)
        if name is not None:
            shapes[name] = tuple(v.shape)
    for k, v in DPRHead(small).state_dict().items():
        shapes["head." + k] = tuple(v.shape)
    return shapes


def read_tensors(d: Path, shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    path = d / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    out: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt") as f:  # reads and checks the header only
            names = set(f.keys())
            if names != set(shapes):
                missing, extra = sorted(set(shapes) - names), sorted(names - set(shapes))
                raise CheckpointError(f"{path}: tensors missing {missing}, unexpected {extra}")
            for name, shape in shapes.items():
                sl = f.get_slice(name)
                dtype, got = sl.get_dtype(), list(sl.get_shape())
                if dtype != "F32" or tuple(got) != shape:
                    raise CheckpointError(f"{path}: {name} is {dtype} {got}, expected F32 {list(shape)}")
            for name in shapes:
                t = f.get_tensor(name)
                if not bool(torch.isfinite(t).all()):
                    raise CheckpointError(f"{path}: {name} has a value that is not finite")
                out[name] = t
    except (SafetensorError, OSError, RuntimeError) as e:
        raise CheckpointError(f"{path}: unreadable ({e})") from None
    return out


def read_checkpoint(directory: str | Path, cfg: ModelConfig | None = None) -> Checked:
    """Reads and checks a whole checkpoint directory (module docstring) before any model is built.

    - Throws: :class:`CheckpointError` naming the file and the problem.
    """
    d = Path(directory)
    doc, ckpt_cfg, n_tags = read_config(d, cfg)
    items = read_items(d, ckpt_cfg.n_items)
    shape_cfg = cfg if cfg is not None else ckpt_cfg
    w = read_tensors(d, expected_shapes(shape_cfg, ckpt_cfg.n_items, n_tags))
    if not torch.equal(w["item_embeddings"][:, : shape_cfg.d], w["backbone.input_embeddings"]):
        raise CheckpointError(
            f"{d / 'model.safetensors'}: item_embeddings[:, :d] differs from backbone.input_embeddings"
        )
    return Checked(doc=doc, cfg=ckpt_cfg, items=items, tensors=w)
