"""Warm start: a new model's weights initialised from an existing checkpoint (``--init-from CKPT``).

Used by ``steer-train run/train --init-from`` and by ``scripts/retrain.py --warm-start`` (which
passes the live checkpoint). Every weight of the checkpoint is copied into the freshly created model
except the item rows, which are matched **by item id** (as text, as the trainer matches ids
everywhere): an item of the new catalog that the checkpoint knows gets the checkpoint's row (its
backbone embedding and its prompt-only dimensions), an item new to the catalog keeps its fresh
random row, and checkpoint items no longer in the catalog are dropped. The head is tag-agnostic (it
reads clause embeddings), so it carries over whatever tags the new catalog has.

The checkpoint is hostile input (docs/checkpoint-format.md describes the layout). Before anything is
copied it is checked completely, and each failure raises :class:`WarmStartError` naming the file
and the problem:

- ``config.json``: at most :data:`MAX_CONFIG_BYTES`, a ``steer-dpr`` v1 object whose
  ``model_config`` names exactly the :class:`ModelConfig` fields with values of their types; the
  architecture (every field but ``n_items`` and ``dropout``) must equal the new run's, else the
  message lists the differing fields;
- ``items.jsonl``: exactly ``n_items`` lines of at most :data:`MAX_ITEM_LINE_BYTES`, each an
  object with an integer or string ``id``, no id twice;
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

from steer_train.data import Dataset
from steer_train.export import FORMAT, VERSION, _backbone_name
from steer_train.models import DPR, PROMPT_DIM, DPRHead, ModelConfig, make_backbone

#: Largest ``config.json`` read, in bytes (a real one is a few KiB plus its tag list).
MAX_CONFIG_BYTES = 4 << 20
#: Longest ``items.jsonl`` line read, in bytes (an id, a title and tags).
MAX_ITEM_LINE_BYTES = 64 << 10
#: Fields that may differ between the checkpoint and the new run (no weight depends on them).
FREE_FIELDS = frozenset({"n_items", "dropout"})


class WarmStartError(ValueError):
    """The checkpoint cannot initialise this run; the message names the file and the reason."""


@dataclass
class WarmStartReport:
    """What a warm start copied (recorded in the results file as ``warm_start``)."""

    checkpoint: str
    #: items of the new catalog initialised from the checkpoint
    shared: int
    #: items of the new catalog the checkpoint does not know (fresh rows)
    new: int
    #: checkpoint items not in the new catalog (their rows are dropped)
    dropped: int

    def to_json(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "shared": self.shared,
            "new": self.new,
            "dropped": self.dropped,
        }


def _read_config(d: Path, cfg: ModelConfig) -> tuple[dict[str, Any], int, int]:
    """The checked ``config.json``, its ``n_items`` and its tag count."""
    path = d / "config.json"
    if not path.is_file():
        raise WarmStartError(f"{path}: missing")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise WarmStartError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WarmStartError(f"{path}: not JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise WarmStartError(f"{path}: not a {FORMAT} v{VERSION} checkpoint")
    mc = doc.get("model_config")
    names = {f.name: f for f in fields(ModelConfig)}
    if not isinstance(mc, dict) or set(mc) != set(names):
        raise WarmStartError(f"{path}: model_config must name exactly the fields {sorted(names)}")
    mine = cfg.to_json()
    for name, value in mc.items():
        want = type(mine[name])
        ok = isinstance(value, want) and not isinstance(value, bool)
        if want is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not ok:
            article = "an" if want is int else "a"
            raise WarmStartError(f"{path}: model_config.{name} must be {article} {want.__name__}")
    differ = [
        f"{k} {mc[k]!r} (this run {mine[k]!r})"
        for k in sorted(names)
        if k not in FREE_FIELDS and mc[k] != mine[k]
    ]
    if differ:
        raise WarmStartError(
            f"{path}: the checkpoint's architecture differs from this run's: {', '.join(differ)}; "
            "train with the checkpoint's model options"
        )
    n_items = mc["n_items"]
    if n_items < 1:
        raise WarmStartError(f"{path}: model_config.n_items must be at least 1")
    tags = doc.get("tags")
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise WarmStartError(f"{path}: tags must be a list of strings")
    return doc, int(n_items), len(tags)


def _read_item_ids(d: Path, n_items: int) -> list[str]:
    """The checkpoint's item ids as text, in row order."""
    path = d / "items.jsonl"
    if not path.is_file():
        raise WarmStartError(f"{path}: missing")
    ids: list[str] = []
    seen: set[str] = set()
    with path.open("rb") as fh:
        while True:
            line = fh.readline(MAX_ITEM_LINE_BYTES + 1)
            if not line:
                break
            n = len(ids) + 1
            if len(line) > MAX_ITEM_LINE_BYTES:
                raise WarmStartError(f"{path}:{n}: line longer than {MAX_ITEM_LINE_BYTES} bytes")
            if n > n_items:
                raise WarmStartError(f"{path}: more than n_items = {n_items} lines")
            try:
                o = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise WarmStartError(f"{path}:{n}: not JSON") from None
            raw = o.get("id") if isinstance(o, dict) else None
            if isinstance(raw, bool) or not isinstance(raw, int | str):
                raise WarmStartError(f"{path}:{n}: id must be an integer or a string")
            key = str(raw)
            if key in seen:
                raise WarmStartError(f"{path}:{n}: id {key!r} appears twice")
            seen.add(key)
            ids.append(key)
    if len(ids) != n_items:
        raise WarmStartError(f"{path}: {len(ids)} items, config.json says n_items = {n_items}")
    return ids


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


def _read_tensors(d: Path, shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    path = d / "model.safetensors"
    if not path.is_file():
        raise WarmStartError(f"{path}: missing")
    out: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt") as f:  # reads and checks the header only
            names = set(f.keys())
            if names != set(shapes):
                missing, extra = sorted(set(shapes) - names), sorted(names - set(shapes))
                raise WarmStartError(f"{path}: tensors missing {missing}, unexpected {extra}")
            for name, shape in shapes.items():
                sl = f.get_slice(name)
                dtype, got = sl.get_dtype(), list(sl.get_shape())
                if dtype != "F32" or tuple(got) != shape:
                    raise WarmStartError(f"{path}: {name} is {dtype} {got}, expected F32 {list(shape)}")
            for name in shapes:
                t = f.get_tensor(name)
                if not bool(torch.isfinite(t).all()):
                    raise WarmStartError(f"{path}: {name} has a value that is not finite")
                out[name] = t
    except (SafetensorError, OSError, RuntimeError) as e:
        raise WarmStartError(f"{path}: unreadable ({e})") from None
    return out


def warm_start(model: DPR, ds: Dataset, checkpoint: str | Path) -> WarmStartReport:
    """Copies ``checkpoint``'s weights into ``model`` (just created for ``ds``; module docstring).

    - Throws: :class:`WarmStartError` when the checkpoint is unreadable, malformed, or of another
      architecture; ``model`` is unchanged then (everything is checked before the first copy).
    """
    d = Path(checkpoint)
    cfg = model.cfg
    if cfg.n_items != ds.n_items:
        raise ValueError(f"the model has {cfg.n_items} items, the data set {ds.n_items}")
    _, n_ckpt, n_tags = _read_config(d, cfg)
    ids = _read_item_ids(d, n_ckpt)
    w = _read_tensors(d, expected_shapes(cfg, n_ckpt, n_tags))
    base = w["backbone.input_embeddings"]
    if not torch.equal(w["item_embeddings"][:, : cfg.d], base):
        raise WarmStartError(
            f"{d / 'model.safetensors'}: item_embeddings[:, :d] differs from backbone.input_embeddings"
        )
    row = {key: j for j, key in enumerate(ids)}
    pairs = [(i, row[str(it.id)]) for i, it in enumerate(ds.items) if str(it.id) in row]
    bb = model.backbone
    with torch.no_grad():
        for k, v in bb.state_dict().items():
            name = _backbone_name(k)
            if name is not None:
                v.copy_(w[name])
        if pairs:
            new_rows = torch.tensor([i for i, _ in pairs])
            old_rows = torch.tensor([j for _, j in pairs])
            bb.item_emb.weight[new_rows + 1] = base[old_rows]
            if bb.aux_emb is not None:
                bb.aux_emb[new_rows] = w["item_embeddings"][old_rows, cfg.d :]
        for k, v in model.head.state_dict().items():
            v.copy_(w["head." + k])
    return WarmStartReport(
        checkpoint=str(d), shared=len(pairs), new=ds.n_items - len(pairs), dropped=n_ckpt - len(pairs)
    )
