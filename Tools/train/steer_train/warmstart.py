"""Warm start: a new model's weights initialised from an existing checkpoint (``--init-from CKPT``).

Used by ``steer-train run/train --init-from`` and by ``scripts/retrain.py --warm-start`` (which
passes the live checkpoint). Every weight of the checkpoint is copied into the freshly created model
except the item rows, which are matched **by item id** (as text, as the trainer matches ids
everywhere): an item of the new catalog that the checkpoint knows gets the checkpoint's row (its
backbone embedding and its prompt-only dimensions), an item new to the catalog keeps its fresh
random row, and checkpoint items no longer in the catalog are dropped. The head is tag-agnostic (it
reads clause embeddings), so it carries over whatever tags the new catalog has.

The checkpoint is hostile input: it is read with ``checkpoint_check.read_checkpoint`` against this
run's configuration (its architecture must equal the run's but for ``n_items`` and ``dropout``), so it
is checked completely before anything is copied; each failure raises :class:`WarmStartError` naming
the file and the problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from steer_train.checkpoint_check import CheckpointError, read_checkpoint
from steer_train.data import Dataset
from steer_train.export import _backbone_name
from steer_train.models import DPR


class WarmStartError(CheckpointError):
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


def warm_start(model: DPR, ds: Dataset, checkpoint: str | Path) -> WarmStartReport:
    """Copies ``checkpoint``'s weights into ``model`` (just created for ``ds``; module docstring).

    - Throws: :class:`WarmStartError` when the checkpoint is unreadable, malformed, or of another
      architecture; ``model`` is unchanged then (everything is checked before the first copy).
    """
    d = Path(checkpoint)
    cfg = model.cfg
    if cfg.n_items != ds.n_items:
        raise ValueError(f"the model has {cfg.n_items} items, the data set {ds.n_items}")
    try:
        checked = read_checkpoint(d, cfg)
    except CheckpointError as e:
        raise WarmStartError(str(e)) from None
    n_ckpt = checked.cfg.n_items
    ids = [str(it.id) for it in checked.items]
    w = checked.tensors
    base = w["backbone.input_embeddings"]
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
