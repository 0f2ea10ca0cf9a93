"""Evaluation: standard next-item, positive steering, negative suppression, compound prompts;
baselines and DPR's three constraint modes; paired significance tests.

Protocol: leave-one-out, full ranking over all items except the case's history, K = 10.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from steer_train.clauses import TagMapper
from steer_train.data import Dataset, EvalCase
from steer_train.minilm import MiniLM
from steer_train.models import DPR
from steer_train.prompts import TEMPLATES, PromptBank, fill
from steer_train.train import user_vectors

log = logging.getLogger("steer_train.evaluate")
K = 10
TOP = 100

METHODS = [
    "backbone", "filter_full", "filter_top100", "semantic_top100",
    "dpr_soft", "dpr_hybrid", "dpr_hard",
]  # fmt: skip


@dataclass
class Task:
    name: str
    cases: list[EvalCase]
    prompts: list[str | None]
    pos_tag: list[int]  # -1: none
    neg_tag: list[int]


def build_tasks(ds: Dataset, cases: list[EvalCase], prompt_tags: list[str], seed: int) -> dict[str, Task]:
    """Evaluation prompts from the evaluation templates (seeded).

    positive: the target's prompt-eligible tag that is least frequent in the history (an intent
    shift); negative: the tag the target lacks that is most frequent in the history (the user's
    dominant one; ties broken at random); compound: both in one prompt.
    """
    rng = random.Random(seed)
    tm = ds.tag_matrix()
    ok = np.array([t in set(prompt_tags) for t in ds.tag_vocab])
    tasks = {k: Task(k, [], [], [], []) for k in ("standard", "positive", "negative", "compound")}
    for c in cases:
        tasks["standard"].cases.append(c)
        tasks["standard"].prompts.append(None)
        tasks["standard"].pos_tag.append(-1)
        tasks["standard"].neg_tag.append(-1)
        counts = tm[c.history].sum(0) if c.history else np.zeros(tm.shape[1])
        has = tm[c.target] & ok
        lacks = (~tm[c.target]) & ok & (counts > 0)
        a = b = -1
        if has.any():
            cand = np.flatnonzero(has)
            low = counts[cand].min()
            a = int(rng.choice([int(j) for j in cand if counts[j] == low]))
        if lacks.any():
            cand = np.flatnonzero(lacks)
            high = counts[cand].max()
            b = int(rng.choice([int(j) for j in cand if counts[j] == high]))
        for kind, name, pa, pb in (
            ("pos", "positive", a, -1),
            ("neg", "negative", -1, b),
            ("compound", "compound", a, b),
        ):
            if (kind != "neg" and pa < 0) or (kind != "pos" and pb < 0):
                continue
            t = tasks[name]
            tpl = rng.choice(TEMPLATES["eval"][kind])
            t.cases.append(c)
            t.prompts.append(
                fill(tpl, ds.tag_vocab[pa] if pa >= 0 else "", ds.tag_vocab[pb] if pb >= 0 else "")
            )
            t.pos_tag.append(pa)
            t.neg_tag.append(pb)
    return tasks


def per_case_metrics(
    scores: torch.Tensor, target: torch.Tensor, banned: torch.Tensor | None
) -> dict[str, np.ndarray]:
    """``scores`` with ``-inf`` for items not returned. Returns per-case NDCG@10, Recall@10 and the
    violation rate (share of the returned top 10 carrying a banned tag)."""
    ar = torch.arange(scores.shape[0])
    ts = scores[ar, target]
    rank = (scores > ts[:, None]).sum(1)
    hit = torch.isfinite(ts) & (rank < K)
    out = {
        "ndcg@10": torch.where(hit, 1.0 / torch.log2(rank.float() + 2), 0.0).numpy(),
        "recall@10": hit.float().numpy(),
    }
    if banned is not None:
        vals, idx = torch.topk(scores, K, dim=1)
        valid = torch.isfinite(vals)
        bad = (banned.gather(1, idx) & valid).sum(1).float()
        out["violation@10"] = (bad / valid.sum(1).clamp(min=1)).numpy()
    return out


def paired_test(a: np.ndarray, b: np.ndarray, n_perm: int = 10000, seed: int = 0) -> dict[str, float]:
    """Paired comparison of per-case metrics ``a`` vs ``b``: mean difference, paired t statistic
    and a two-sided sign-flip permutation p-value."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = len(d)
    mean = float(d.mean()) if n else 0.0
    sd = float(d.std(ddof=1)) if n > 1 else 0.0
    t = mean / (sd / math.sqrt(n)) if sd > 0 else 0.0
    rng = np.random.default_rng(seed)
    if n == 0 or sd == 0:
        p = 1.0
    else:
        signs = rng.choice([-1.0, 1.0], size=(n_perm, n))
        perm = np.abs((signs * d).mean(1))
        p = float((np.sum(perm >= abs(mean) - 1e-12) + 1) / (n_perm + 1))
    return {"diff": mean, "t": t, "p_perm": p, "n": float(n)}


class Evaluator:
    def __init__(self, model: DPR, ds: Dataset, encoder: MiniLM, prompt_tags: list[str]) -> None:
        self.model = model
        self.ds = ds
        self.bank = PromptBank(encoder)
        self.encoder = encoder
        self.tagmat_t = torch.from_numpy(ds.tag_matrix()).T.contiguous()  # [T, N]
        self.mapper = TagMapper(ds.tag_vocab, encoder.encode(ds.tag_vocab))
        self.prompt_tags = prompt_tags
        self._item_emb: torch.Tensor | None = None

    def item_text_embeddings(self) -> torch.Tensor:
        if self._item_emb is None:
            texts = [f"{it.title}. {', '.join(it.tags)}" for it in self.ds.items]
            self._item_emb = self.encoder.encode(texts, batch_size=256)
        return self._item_emb

    @torch.no_grad()
    def scores(self, task: Task) -> dict[str, torch.Tensor]:
        m = self.model
        m.eval()
        V = m.backbone.item_table()
        V0 = m.backbone.base_table()
        h = user_vectors(m, [c.history for c in task.cases])
        cb = self.bank.batch(task.prompts)
        q = m.head.query(h, cb.emb, cb.negative, cb.owner)
        s0 = h @ V0.T  # the plain (stage-1) backbone: every baseline starts from this ranking
        sh = m.backbone.pad(h) @ V.T  # DPR without a prompt (= s0: the user vector is 0 in aux dims)
        sq = q @ V.T
        for i, c in enumerate(task.cases):
            s0[i, c.history] = -math.inf
            sh[i, c.history] = -math.inf
            sq[i, c.history] = -math.inf
        b = len(task.cases)
        n = V.shape[0]
        # the baselines' filters use the prompted tags directly
        keep = torch.ones((b, n), dtype=torch.bool)
        for i in range(b):
            if task.pos_tag[i] >= 0:
                keep[i] &= self.tagmat_t[task.pos_tag[i]]
            if task.neg_tag[i] >= 0:
                keep[i] &= ~self.tagmat_t[task.neg_tag[i]]
        # DPR's hybrid/hard filters come from the clause → tag mapping, as the server does it
        mkeep = torch.ones((b, n), dtype=torch.bool)
        ci = 0
        for i, clauses in enumerate(cb.clauses):
            for cl in clauses:
                tags = self.mapper.map(cl.text, cb.emb[ci])
                ci += 1
                if not tags:
                    continue
                carries = self.tagmat_t[tags].any(0)
                mkeep[i] &= carries if cl.polarity == "+" else ~carries
        top_vals, top_idx = torch.topk(s0, min(TOP, n), dim=1)
        top = torch.full_like(s0, -math.inf).scatter(1, top_idx, top_vals)
        neg_inf = torch.tensor(-math.inf)
        out = {
            "backbone": s0,
            "filter_full": torch.where(keep, s0, neg_inf),
            "filter_top100": torch.where(keep, top, neg_inf),
            "dpr_soft": sq,
            "dpr_hybrid": torch.where(mkeep, sq, neg_inf),
            "dpr_hard": torch.where(mkeep, sh, neg_inf),
        }
        if task.name != "standard":
            # semantic re-ranking of the backbone's top 100: Σ_c sign(c) · cos(clause, item text)
            items = self.item_text_embeddings()
            sem = torch.zeros((b, n))
            sign = torch.where(cb.negative, -1.0, 1.0)
            if cb.emb.shape[0]:
                sem.index_add_(0, cb.owner, sign[:, None] * (cb.emb @ items.T))
            # ties keep the backbone's order (a tiny rank-based tie-break)
            out["semantic_top100"] = torch.where(
                torch.isfinite(top), sem + 1e-6 * top.clamp(min=-1e6), neg_inf
            )
        return out

    def run(self, tasks: dict[str, Task], seed: int = 0) -> dict[str, Any]:
        results: dict[str, Any] = {}
        per_case: dict[str, dict[str, dict[str, np.ndarray]]] = {}
        for name, task in tasks.items():
            if not task.cases:
                continue
            sc = self.scores(task)
            tgt = torch.tensor([c.target for c in task.cases])
            banned = None
            if any(t >= 0 for t in task.neg_tag):
                none = torch.zeros(self.tagmat_t.shape[1], dtype=torch.bool)
                banned = torch.stack([self.tagmat_t[t] if t >= 0 else none for t in task.neg_tag])
            per_case[name] = {m: per_case_metrics(s, tgt, banned) for m, s in sc.items()}
            results[name] = {
                "n": len(task.cases),
                "example_prompts": task.prompts[:5],
                "methods": {
                    m: {k: float(v.mean()) for k, v in met.items()} for m, met in per_case[name].items()
                },
            }
            log.info(
                "%s (n=%d): %s",
                name,
                len(task.cases),
                ", ".join(f"{m} {results[name]['methods'][m]['ndcg@10']:.4f}" for m in sc),
            )
        results["comparisons"] = comparisons(per_case, seed)
        return results


# claims checked with a paired test: (task, metric, method, baseline)
CLAIMS = [
    ("standard", "ndcg@10", "dpr_soft", "backbone"),
    ("positive", "ndcg@10", "dpr_soft", "filter_top100"),
    ("positive", "ndcg@10", "dpr_soft", "filter_full"),
    ("positive", "ndcg@10", "dpr_hybrid", "filter_full"),
    ("positive", "ndcg@10", "dpr_soft", "semantic_top100"),
    ("negative", "recall@10", "dpr_soft", "filter_full"),
    ("negative", "recall@10", "dpr_hybrid", "filter_full"),
    ("negative", "ndcg@10", "dpr_hybrid", "filter_full"),
    ("compound", "ndcg@10", "dpr_soft", "filter_full"),
    ("compound", "ndcg@10", "dpr_hybrid", "filter_full"),
]


def comparisons(per_case: dict[str, dict[str, dict[str, np.ndarray]]], seed: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for task, metric, a, b in CLAIMS:
        if task not in per_case or a not in per_case[task] or b not in per_case[task]:
            continue
        res = paired_test(per_case[task][a][metric], per_case[task][b][metric], seed=seed)
        out.append({"task": task, "metric": metric, "method": a, "baseline": b, **res})
    return out


def tag_share_top10(
    model: DPR, ds: Dataset, encoder: MiniLM, cases: list[EvalCase], prompt: str | None, tag: str
) -> float:
    """Share of the top-10 (soft mode, history excluded) that carries ``tag``; for CI checks."""
    ev = Evaluator(model, ds, encoder, ds.tag_vocab)
    task = Task("probe", cases, [prompt] * len(cases), [-1] * len(cases), [-1] * len(cases))
    s = ev.scores(task)["dpr_soft"]
    idx = torch.topk(s, K, dim=1).indices
    carries = ev.tagmat_t[ds.tag_vocab.index(tag)]
    return float(carries[idx].float().mean())


# ---------------------------------------------------------------------------- backbone only


def sample_negatives(
    n_items: int, excluded: set[int], k: int, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    """``k`` distinct item rows drawn uniformly from the rows not in ``excluded`` (all of them, in
    order, when fewer than ``k`` are left)."""
    left = n_items - len(excluded)
    if left <= k:
        return np.array([i for i in range(n_items) if i not in excluded], dtype=np.int64)
    chosen: dict[int, None] = {}
    while len(chosen) < k:
        for x in rng.integers(0, n_items, size=2 * k).tolist():
            if x not in excluded and x not in chosen:
                chosen[x] = None
                if len(chosen) == k:
                    break
    return np.fromiter(chosen, dtype=np.int64, count=k)


@torch.no_grad()
def evaluate_backbone(
    model: DPR, cases: list[EvalCase], seed: int = 0, negatives: int = 100, batch: int = 1024
) -> dict[str, Any]:
    """The standard next-item task for the plain backbone, for data sets without tags (no prompts).

    ``standard``: full ranking over every item except the case's history (the protocol of every
    other result). ``standard_sampled``: the target ranked against ``negatives`` items drawn
    uniformly (seeded, without replacement) from the items the user never interacted with — the
    protocol of the SASRec paper, reported only as a sanity anchor against published numbers.
    Both score by ``h · E`` in batches, so no ``[cases, items]`` matrix is held at once.
    """
    rng = np.random.default_rng(seed)
    table = model.backbone.base_table()
    n = table.shape[0]
    full: dict[str, list[np.ndarray]] = {"ndcg@10": [], "recall@10": []}
    samp: dict[str, list[np.ndarray]] = {"ndcg@10": [], "recall@10": []}
    n_neg: list[int] = []
    for s in range(0, len(cases), batch):
        part = cases[s : s + batch]
        h = user_vectors(model, [c.history for c in part])
        scores = h @ table.T
        cand = []
        for i, c in enumerate(part):
            scores[i, c.history] = -math.inf
            neg = sample_negatives(n, set(c.history) | {c.target}, negatives, rng)
            n_neg.append(len(neg))
            cand.append(torch.from_numpy(np.concatenate([[c.target], neg])))
        tgt = torch.tensor([c.target for c in part])
        for k, v in per_case_metrics(scores, tgt, None).items():
            full[k].append(v)
        # sampled: column 0 is the target; pad short candidate lists with -inf
        width = max(len(x) for x in cand)
        sampled = torch.full((len(part), width), -math.inf)
        for i, x in enumerate(cand):
            sampled[i, : len(x)] = scores[i, x]
        for k, v in per_case_metrics(sampled, torch.zeros(len(part), dtype=torch.long), None).items():
            samp[k].append(v)

    def mean(d: dict[str, list[np.ndarray]]) -> dict[str, float]:
        return {k: float(np.concatenate(v).mean()) if v else 0.0 for k, v in d.items()}

    res: dict[str, Any] = {
        "standard": {"n": len(cases), "example_prompts": [], "methods": {"backbone": mean(full)}},
        "standard_sampled": {
            "n": len(cases),
            "negatives": negatives,
            "negatives_min": min(n_neg) if n_neg else 0,
            "protocol": "target + uniformly sampled non-interacted items (seeded, without replacement)",
            "methods": {"backbone": mean(samp)},
        },
        "comparisons": [],
    }
    for name in ("standard", "standard_sampled"):
        m = res[name]["methods"]["backbone"]
        log.info("%s (n=%d): NDCG@10 %.4f, Recall@10 %.4f", name, len(cases), m["ndcg@10"], m["recall@10"])
    return res
