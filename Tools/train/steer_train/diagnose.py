"""Why soft steering does not reach hidden tag members (``--hide-tags``): measurements on a checkpoint.

- **Separability**: per prompt tag, the AUC with which a score separates the items that carry the tag
  only in the full metadata (*hidden members*) from the items that do not carry it at all. Scores: a
  logistic probe on the collaborative item table ``E`` fitted to the *visible* labels (what a
  collaborative notion of the tag could know), the same probe on the prompt-only dimensions ``A``,
  the model's own prompt direction (``Δ · V`` for "recommend <tag>" with an empty history), and a
  co-occurrence label propagation (the visible tag share among an item's nearest items by user
  co-occurrence). For comparison the prompt direction's AUC on *visible* members.
- **A bound**: the positive task ranked by the backbone times a membership weight — 1 for items
  with the visible tag, ``min(1, c · propagation)`` for the others — for a grid of ``c`` (``c = 0`` is
  the visible-tag filter). The best ``c`` is chosen on the test cases themselves, so the bound is
  optimistic; it says how far a collaborative tag estimate of this quality can carry any method.

No package computes these for our data structures; the AUC and the probe are a few lines each.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from steer_train.data import Dataset, Split
from steer_train.evaluate import Task, per_case_metrics
from steer_train.models import DPR
from steer_train.prompts import PromptBank
from steer_train.train import propagation, user_vectors

#: the membership weights' scale grid of the bound (0: the visible-tag filter)
BOUND_SCALES = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def auc(labels: npt.NDArray[np.bool_], scores: npt.NDArray[np.floating[Any]]) -> float:
    """Area under the ROC curve (ties count one half); NaN when a class is empty."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def probe(x: torch.Tensor, y: npt.NDArray[np.bool_], l2: float = 1e-3, steps: int = 200) -> np.ndarray:
    """Decision values of an L2-regularised logistic regression of ``y`` on standardised ``x``,
    fitted on all rows (LBFGS)."""
    x = x.detach().float()
    xs = (x - x.mean(0)) / (x.std(0) + 1e-6)
    t = torch.from_numpy(np.asarray(y, dtype=np.float32))
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(xs @ w + b, t) + l2 * (w * w).sum()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    opt.step(closure)  # type: ignore[no-untyped-call]
    out: np.ndarray = (xs @ w + b).detach().numpy()
    return out


@torch.no_grad()
def prompt_scores(model: DPR, bank: PromptBank, tags: list[str]) -> np.ndarray:
    """``[N, T']``: ``q · V`` for the prompt "recommend <tag>" and an empty history (``h = 0``), so
    only the prompt's direction ranks; one column per tag of ``tags``."""
    model.eval()
    cb = bank.batch([f"recommend {t}" for t in tags])
    h = torch.zeros(len(tags), model.cfg.d)
    q = model.head.query(h, cb.emb, cb.negative, cb.owner)
    out: np.ndarray = (q @ model.backbone.item_table().T).T.numpy()
    return out


def separability(
    model: DPR, visible: Dataset, truth: Dataset, split: Split, bank: PromptBank, min_items: int = 5
) -> dict[str, Any]:
    """Per prompt tag (with at least ``min_items`` visible and hidden members) the AUCs described in
    the module docstring, and their means."""
    vis = visible.tag_matrix()
    full = truth.tag_matrix()
    tags = [t for t in truth.prompt_tags() if t in set(truth.tag_vocab)]
    cols = [truth.tag_vocab.index(t) for t in tags]
    E = model.backbone.base_table()
    A = model.backbone.aux_emb
    ps = prompt_scores(model, bank, tags)
    prop = propagation(split.train, vis)
    rows: dict[str, dict[str, float]] = {}
    for n, j in enumerate(cols):
        hidden = full[:, j] & ~vis[:, j]
        lacks = ~full[:, j]
        if hidden.sum() < min_items or vis[:, j].sum() < min_items:
            continue
        sel = hidden | lacks
        row = {
            "visible_members": float(vis[:, j].sum()),
            "hidden_members": float(hidden.sum()),
            "probe_E": auc(hidden[sel], probe(E, vis[:, j])[sel]),
            "prompt_direction": auc(hidden[sel], ps[sel, n]),
            "propagation": auc(hidden[sel], prop[sel, j]),
            "prompt_direction_visible": auc(vis[:, j][vis[:, j] | lacks], ps[vis[:, j] | lacks, n]),
        }
        if A is not None:
            row["probe_A"] = auc(hidden[sel], probe(A, vis[:, j])[sel])
        rows[tags[n]] = row
    keys = sorted({k for r in rows.values() for k in r if not k.endswith("_members")})
    mean = {k: float(np.mean([r[k] for r in rows.values() if k in r])) for k in keys}
    return {"per_tag": rows, "mean": mean}


@torch.no_grad()
def membership_bound(
    model: DPR,
    visible: Dataset,
    split: Split,
    task: Task,
    prop: np.ndarray,
    scales: tuple[float, ...] = BOUND_SCALES,
) -> dict[str, Any]:
    """NDCG@10 on ``task`` (positive cases) of ``backbone + log(weight)`` with weight 1 for the
    items with the visible prompted tag and ``min(1, c · prop)`` otherwise, per ``c`` in ``scales``,
    overall and split by whether the target's prompted tag is visible."""
    history = [c.history for c in task.cases]
    h = user_vectors(model, history)
    s0 = h @ model.backbone.base_table().T
    for i, hist in enumerate(history):
        s0[i, hist] = -math.inf
    target = torch.tensor([c.target for c in task.cases])
    pos = torch.tensor(task.pos_tag)
    vis_t = torch.from_numpy(visible.tag_matrix()).T  # [T, N]
    member = vis_t[pos]  # [C, N]
    p = torch.from_numpy(prop).float().T[pos]  # [C, N]
    seen = member[torch.arange(len(target)), target].numpy()
    out: dict[str, Any] = {"n": len(target), "visible_cases": int(seen.sum()), "by_scale": {}}
    for c in scales:
        weight = torch.where(member, torch.ones_like(p), (c * p).clamp(max=1.0))
        scores = s0 + torch.log(weight.clamp(min=1e-30))
        scores = torch.where(weight > 0, scores, torch.tensor(-math.inf))
        nd = per_case_metrics(scores, target, None)["ndcg@10"]
        out["by_scale"][str(c)] = {
            "ndcg@10": float(nd.mean()),
            "visible": float(nd[seen].mean()) if seen.any() else math.nan,
            "hidden": float(nd[~seen].mean()) if (~seen).any() else math.nan,
        }
    best = max(out["by_scale"], key=lambda k: out["by_scale"][k]["ndcg@10"])
    out["best_scale"] = float(best)
    out["best_over_filter"] = out["by_scale"][best]["ndcg@10"] / max(out["by_scale"]["0.0"]["ndcg@10"], 1e-12)
    return out
