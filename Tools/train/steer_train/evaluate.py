"""Evaluation: standard next-item, positive steering, negative suppression, compound prompts, prompts
in users' own words (phrase files), incomplete metadata (hidden tags) and retrieval budgets; baselines
and DPR's three constraint modes; paired significance tests with a Holm correction.

Protocol: leave-one-out, full ranking over all items except the case's history, K = 10. The tasks
and their rules are described in docs/results.md ("Protocol").
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from steer_train.clauses import TagMapper
from steer_train.data import Dataset, EvalCase, Item
from steer_train.examples_baseline import examples_scores, training_popularity
from steer_train.minilm import MiniLM
from steer_train.models import DPR
from steer_train.prompts import TEMPLATES, Phrases, PromptBank, fill
from steer_train.train import user_vectors

log = logging.getLogger("steer_train.evaluate")
K = 10
TOP = 100
#: the "recent history" of the intent-shift rule: the last RECENT items before the target
RECENT = 10
#: retrieve-then-filter budgets; with 1 % of the catalog and the whole ranking they make the curve
BUDGETS = (10, 20, 50, 100)

#: the tasks whose prompts name catalog tags; ``*_v1`` are the earlier (leaky) constructions, kept
#: for comparison
TAG_TASKS = ("positive", "negative", "compound", "positive_v1", "negative_v1", "compound_v1")
PHRASE_TASKS = ("positive_phrase", "negative_phrase", "compound_phrase")


@dataclass
class Task:
    """Evaluation cases of one task, with one prompt per case.

    ``pos_tag`` / ``neg_tag``: the intended tag index per case (-1: none); relevance-side metrics
    (violations, on-tag share) and the exact-tag filters use them. ``labels``: per-case labels for
    the breakdowns (e.g. ``template``, ``intent``); each list has one entry per case.
    ``exact_prompts``: phrase tasks only, the same intent written with an evaluation template and the
    exact tag (the "same model given the exact tag" reference).
    """

    name: str
    cases: list[EvalCase] = field(default_factory=list)
    prompts: list[str | None] = field(default_factory=list)
    pos_tag: list[int] = field(default_factory=list)
    neg_tag: list[int] = field(default_factory=list)
    labels: dict[str, list[str]] = field(default_factory=dict)
    exact_prompts: list[str | None] | None = None

    def add(
        self,
        case: EvalCase,
        prompt: str | None,
        pos: int = -1,
        neg: int = -1,
        exact: str | None = None,
        **labels: str,
    ) -> None:
        self.cases.append(case)
        self.prompts.append(prompt)
        self.pos_tag.append(pos)
        self.neg_tag.append(neg)
        if self.exact_prompts is not None:
            self.exact_prompts.append(exact)
        for k, v in labels.items():
            self.labels.setdefault(k, []).append(v)

    def part(self, start: int, end: int) -> Task:
        return Task(
            self.name,
            self.cases[start:end],
            self.prompts[start:end],
            self.pos_tag[start:end],
            self.neg_tag[start:end],
            {k: v[start:end] for k, v in self.labels.items()},
            None if self.exact_prompts is None else self.exact_prompts[start:end],
        )


# ---------------------------------------------------------------------------- task construction


def recent_shares(tm: npt.NDArray[np.bool_], history: Sequence[int], recent: int = RECENT) -> np.ndarray:
    """``[T]``: the share of the last ``recent`` history items that carry each tag (zeros for an
    empty history)."""
    last = list(history)[-recent:]
    if not last:
        return np.zeros(tm.shape[1])
    out: np.ndarray = tm[last].mean(0)
    return out


def intent(tm: npt.NDArray[np.bool_], history: Sequence[int], tag: int, recent: int = RECENT) -> str:
    """``"shift"`` when ``tag``'s share of the recent history is below the user's median, else
    ``"reinforce"``. The user's median: the median recent share over the tags the whole history
    carries (an empty history: every tag is a shift). Uses only the history and the tag."""
    hist = list(history)
    if not hist:
        return "shift"
    shares = recent_shares(tm, hist, recent)
    carried = tm[hist].any(0)
    median = float(np.median(shares[carried])) if carried.any() else 0.0
    return "shift" if float(shares[tag]) < median else "reinforce"


def dominant_tag(
    tm: npt.NDArray[np.bool_], history: Sequence[int], ok: npt.NDArray[np.bool_], rng: random.Random
) -> int:
    """The prompt-eligible tag carried by most history items (ties: seeded choice); -1 if none."""
    if not history:
        return -1
    counts = tm[list(history)].sum(0) * ok
    if counts.max(initial=0) <= 0:
        return -1
    best = np.flatnonzero(counts == counts.max())
    return int(rng.choice([int(j) for j in best]))


def build_tasks(
    ds: Dataset,
    cases: list[EvalCase],
    prompt_tags: list[str],
    seed: int,
    v1: bool = True,
    templates: str = "eval",
) -> dict[str, Task]:
    """Tag-prompt tasks with the evaluation templates (seeded); see docs/results.md.
    ``templates="train"`` words them with the training templates instead (validation prompts for
    stages 2–3, which must not see the evaluation wordings).

    - ``positive``: one case per (user, prompt-eligible tag of the target), labelled ``intent``
      (:func:`intent`) and ``template``; the tag choice never looks at other items.
    - ``negative``: the user's dominant history tag (:func:`dominant_tag`), negated; a case only
      when the target lacks it (the choice uses the history alone; the target only decides whether
      the case exists).
    - ``compound``: each positive case whose user has a negative case: both clauses in one prompt.
    - ``positive_v1`` / ``negative_v1`` / ``compound_v1`` (with ``v1``): the earlier construction —
      the target's tag least frequent in the history / the tag the target lacks most frequent in
      it. Both leak: the chosen tag tells which *other* tags the target can carry.
    """
    rng = random.Random(seed)
    tm = ds.tag_matrix()
    eligible = set(prompt_tags)
    ok = np.array([t in eligible for t in ds.tag_vocab], dtype=np.bool_)
    names = ["standard", "positive", "negative", "compound"]
    if v1:
        names += ["positive_v1", "negative_v1", "compound_v1"]
    tasks = {k: Task(k) for k in names}
    tpl = TEMPLATES[templates]
    vocab = ds.tag_vocab
    for c in cases:
        tasks["standard"].add(c, None)
        b = dominant_tag(tm, c.history, ok, rng)
        if b >= 0 and tm[c.target, b]:
            b = -1  # the target carries the user's dominant tag: no negative case
        if b >= 0:
            t = rng.choice(tpl["neg"])
            tasks["negative"].add(c, fill(t, "", vocab[b]), neg=b, template=t)
        for a in np.flatnonzero(tm[c.target] & ok).tolist():
            it = intent(tm, c.history, a)
            t = rng.choice(tpl["pos"])
            tasks["positive"].add(c, fill(t, vocab[a]), pos=a, template=t, intent=it)
            if b >= 0:
                t = rng.choice(tpl["compound"])
                tasks["compound"].add(c, fill(t, vocab[a], vocab[b]), a, b, template=t, intent=it)
        if v1:
            _add_v1(tasks, tm, ok, c, vocab, rng)
    return tasks


def _add_v1(
    tasks: dict[str, Task],
    tm: npt.NDArray[np.bool_],
    ok: npt.NDArray[np.bool_],
    c: EvalCase,
    vocab: list[str],
    rng: random.Random,
) -> None:
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
    tpl = TEMPLATES["eval"]
    for kind, name, pa, pb in (
        ("pos", "positive_v1", a, -1),
        ("neg", "negative_v1", -1, b),
        ("compound", "compound_v1", a, b),
    ):
        if (kind != "neg" and pa < 0) or (kind != "pos" and pb < 0):
            continue
        t = rng.choice(tpl[kind])
        prompt = fill(t, vocab[pa] if pa >= 0 else "", vocab[pb] if pb >= 0 else "")
        tasks[name].add(c, prompt, pa, pb, template=t)


# ---------------------------------------------------------------------------- phrase files


def build_phrase_tasks(
    tag_tasks: dict[str, Task], phrases: Phrases, vocab: list[str], seed: int
) -> dict[str, Task]:
    """``positive_phrase`` / ``negative_phrase`` / ``compound_phrase``: the cases of the leak-free
    tag tasks whose intended tag(s) have phrases, each prompt a seeded choice among them
    (compound: ``"<positive phrase>, <negative phrase>"``); ``exact_prompts`` keep the tag task's
    template prompt. Labels: ``phrase`` (the prompt), and ``intent`` where the tag task has it."""
    rng = random.Random(seed)
    out: dict[str, Task] = {}
    for src, name in zip(("positive", "negative", "compound"), PHRASE_TASKS, strict=True):
        task = Task(name, exact_prompts=[])
        base = tag_tasks.get(src)
        if base is not None:
            for i, c in enumerate(base.cases):
                a, b = base.pos_tag[i], base.neg_tag[i]
                pa = phrases.positive.get(vocab[a]) if a >= 0 else None
                pb = phrases.negative.get(vocab[b]) if b >= 0 else None
                if (a >= 0 and not pa) or (b >= 0 and not pb):
                    continue
                parts = [rng.choice(pa) if pa else "", rng.choice(pb) if pb else ""]
                prompt = ", ".join(x for x in parts if x)
                labels = {"phrase": prompt}
                if "intent" in base.labels:
                    labels["intent"] = base.labels["intent"][i]
                task.add(c, prompt, a, b, exact=base.prompts[i], **labels)
        out[name] = task
    return out


# ---------------------------------------------------------------------------- hidden tags


def hide_tags(ds: Dataset, fraction: float, seed: int) -> Dataset:
    """A copy of ``ds`` in which ``round(fraction · A)`` of its ``A`` item–tag assignments, chosen by a
    seeded permutation, are removed (same items, sequences and tag vocabulary). What the system
    sees under ``--hide-tags``; relevance keeps using ``ds``."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the hidden fraction must be in [0, 1), got {fraction}")
    pairs = [(i, t) for i, it in enumerate(ds.items) for t in it.tags]
    n_hide = round(fraction * len(pairs))
    order = np.random.default_rng(seed).permutation(len(pairs))
    hidden = {pairs[int(k)] for k in order[:n_hide]}
    items = [
        Item(it.id, it.title, [t for t in it.tags if (i, t) not in hidden]) for i, it in enumerate(ds.items)
    ]
    return Dataset(ds.name, items, list(ds.user_ids), [list(s) for s in ds.sequences], list(ds.tag_vocab))


def visibility_labels(tagmat_t: torch.Tensor, task: Task) -> list[str]:
    """Per case (under ``--hide-tags``; ``tagmat_t`` ``[T, N]`` the *visible* tags): whether the
    system sees the prompted (positive) tag on the target — ``visible``, ``hidden`` (the target
    carries it only in the full metadata, so no visible-tag filter can return it) or ``none`` (the
    case has no positive tag)."""
    return [
        "none" if t < 0 else "visible" if bool(tagmat_t[t, c.target]) else "hidden"
        for c, t in zip(task.cases, task.pos_tag, strict=True)
    ]


# ---------------------------------------------------------------------------- filters and metrics


def budget_sizes(n_items: int) -> dict[str, int]:
    """Retrieve-then-filter method name → K: :data:`BUDGETS`, then 1 % of the catalog (rounded up).
    The whole ranking is ``filter_full``."""
    out = {f"filter_top{k}": k for k in BUDGETS}
    out["filter_top1pct"] = max(1, math.ceil(0.01 * n_items))
    return out


def tag_filter(tagmat_t: torch.Tensor, pos: Sequence[int], neg: Sequence[int]) -> torch.Tensor:
    """``[B, N]`` bool: per case, the items carrying ``pos[i]`` (if ≥ 0) and not ``neg[i]`` (if ≥ 0)."""
    b, n = len(pos), tagmat_t.shape[1]
    keep = torch.ones((b, n), dtype=torch.bool)
    for i in range(b):
        if pos[i] >= 0:
            keep[i] &= tagmat_t[pos[i]]
        if neg[i] >= 0:
            keep[i] &= ~tagmat_t[neg[i]]
    return keep


def v1_rule_filter(
    tagmat_t: torch.Tensor, histories: Sequence[Sequence[int]], pos: Sequence[int], eligible: torch.Tensor
) -> torch.Tensor:
    """``[B, N]`` bool: the ``positive_v1`` leak as a filter. ``positive_v1`` prompts the target's
    eligible tag least frequent in the history, so the target carries ``pos[i]`` and no eligible tag
    that is rarer in the history; this keeps exactly those items. A diagnostic baseline
    (``filter_v1_rule``): how much a filter gains from the leak."""
    counts = torch.stack(
        [tagmat_t[:, list(h)].sum(1) if len(h) else torch.zeros(tagmat_t.shape[0], dtype=torch.long)
         for h in histories]
    )  # fmt: skip
    keep = tag_filter(tagmat_t, pos, [-1] * len(pos))
    for i, a in enumerate(pos):
        if a < 0:
            continue
        rarer = eligible & (counts[i] < counts[i, a])
        if bool(rarer.any()):
            keep[i] &= ~tagmat_t[rarer].any(0)
    return keep


def blend(soft: torch.Tensor, plain: torch.Tensor, beta: float) -> torch.Tensor:
    """``β · soft + (1 − β) · plain`` (the hybrid mode's ranking inside its filter); β = 1 and β = 0
    return ``soft`` / ``plain`` themselves, and ``-inf`` (history) stays ``-inf`` for every β."""
    if beta == 1.0:
        return soft
    if beta == 0.0:
        return plain
    out = beta * soft + (1.0 - beta) * plain
    return out.masked_fill(torch.isinf(soft) | torch.isinf(plain), -math.inf)


def top_k_only(scores: torch.Tensor, k: int) -> torch.Tensor:
    """``scores`` with everything outside each row's top ``k`` set to ``-inf``."""
    k = min(k, scores.shape[1])
    vals, idx = torch.topk(scores, k, dim=1)
    return torch.full_like(scores, -math.inf).scatter(1, idx, vals)


def retrieve_then_filter(scores: torch.Tensor, keep: torch.Tensor, k: int) -> torch.Tensor:
    """Retrieve the top ``k`` by ``scores``, then drop the items ``keep`` rejects (the list can be
    shorter than 10)."""
    return torch.where(keep, top_k_only(scores, k), torch.tensor(-math.inf))


def per_case_metrics(
    scores: torch.Tensor,
    target: torch.Tensor,
    banned: torch.Tensor | None,
    wanted: torch.Tensor | None = None,
) -> dict[str, np.ndarray]:
    """``scores`` with ``-inf`` for items not returned. Returns per-case NDCG@10, Recall@10, the
    violation rate (share of the returned top 10 carrying a banned tag; with ``banned``) and the
    on-tag rate (share of the returned top 10 carrying the wanted tag; with ``wanted``). Ties with the
    target count against it (rank = number of items scored strictly higher)."""
    ar = torch.arange(scores.shape[0])
    ts = scores[ar, target]
    rank = (scores > ts[:, None]).sum(1)
    hit = torch.isfinite(ts) & (rank < K)
    out = {
        "ndcg@10": torch.where(hit, 1.0 / torch.log2(rank.float() + 2), 0.0).numpy(),
        "recall@10": hit.float().numpy(),
    }
    if banned is not None or wanted is not None:
        vals, idx = torch.topk(scores, min(K, scores.shape[1]), dim=1)
        valid = torch.isfinite(vals)
        count = valid.sum(1).clamp(min=1).float()
        if banned is not None:
            out["violation@10"] = ((banned.gather(1, idx) & valid).sum(1).float() / count).numpy()
        if wanted is not None:
            out["on_tag@10"] = ((wanted.gather(1, idx) & valid).sum(1).float() / count).numpy()
    return out


# ---------------------------------------------------------------------------- significance


def paired_test(
    a: np.ndarray,
    b: np.ndarray,
    n_perm: int = 10000,
    seed: int = 0,
    groups: Sequence[int] | None = None,
) -> dict[str, float]:
    """Paired comparison of per-case metrics ``a`` vs ``b``: mean difference, paired t statistic and
    a two-sided sign-flip permutation p-value.

    With ``groups`` (e.g. the user of each case, when a user has several cases) the cases of a group
    are not independent: the test flips the sign of each group's summed difference (and the t
    statistic is computed over the group sums); the mean difference stays the per-case mean.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = len(d)
    mean = float(d.mean()) if n else 0.0
    units: np.ndarray
    if groups is not None and n:
        _, inv = np.unique(np.asarray(groups), return_inverse=True)
        units = np.bincount(inv, weights=d)
    else:
        units = d
    m = len(units)
    sd = float(units.std(ddof=1)) if m > 1 else 0.0
    t = float(units.mean()) / (sd / math.sqrt(m)) if sd > 0 else 0.0
    if m == 0 or sd == 0:
        p = 1.0
    else:
        rng = np.random.default_rng(seed)
        obs = abs(float(units.sum()))
        hits = 0
        for s in range(0, n_perm, 1000):  # 1000 permutations at a time bounds the memory
            signs = rng.choice([-1.0, 1.0], size=(min(1000, n_perm - s), m))
            hits += int(np.sum(np.abs(signs @ units) >= obs - 1e-9))
        p = float((hits + 1) / (n_perm + 1))
    return {"diff": mean, "t": t, "p_perm": p, "n": float(n), "units": float(m)}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (same order as given): the ``j``-th smallest p becomes
    ``max_{i <= j} min(1, (m - i) · p_(i))`` (0-based ``i``)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


# claims checked with a paired test: (task, metric, method, baseline, headline). All comparisons of a
# results file form one family for the Holm correction; "headline" marks the ones docs may quote.
CLAIMS: list[tuple[str, str, str, str, bool]] = [
    ("standard", "ndcg@10", "dpr_soft", "backbone", False),
    ("positive", "ndcg@10", "dpr_soft", "filter_full", True),
    ("positive", "ndcg@10", "dpr_hybrid", "filter_full", True),
    ("positive", "ndcg@10", "dpr_soft", "filter_top1pct", True),
    ("positive", "ndcg@10", "dpr_soft", "semantic_top100", False),
    ("negative", "recall@10", "dpr_soft", "filter_full", True),
    ("negative", "recall@10", "dpr_hybrid", "filter_full", True),
    ("compound", "ndcg@10", "dpr_soft", "filter_full", False),
    ("compound", "ndcg@10", "dpr_hybrid", "filter_full", False),
    ("positive_phrase", "ndcg@10", "dpr_soft", "dpr_soft_exact", True),
    ("positive_phrase", "ndcg@10", "dpr_soft", "semantic_top100", True),
    ("positive_phrase", "ndcg@10", "dpr_soft", "dpr_hard", True),
    ("positive_phrase", "ndcg@10", "dpr_hybrid", "dpr_hard", False),
    ("negative_phrase", "recall@10", "dpr_soft", "dpr_hard", False),
    ("compound_phrase", "ndcg@10", "dpr_soft", "dpr_hard", False),
]


def comparisons(
    per_case: dict[str, dict[str, dict[str, np.ndarray]]],
    groups: dict[str, list[int]],
    seed: int,
) -> list[dict[str, Any]]:
    """The paired tests of :data:`CLAIMS` present in ``per_case`` (task → method → metric → values),
    each with its Holm-adjusted p over all of them (``p_holm``) and the family size (``family``)."""
    out: list[dict[str, Any]] = []
    for task, metric, a, b, headline in CLAIMS:
        pc = per_case.get(task, {})
        if a not in pc or b not in pc:
            continue
        res = paired_test(pc[a][metric], pc[b][metric], seed=seed, groups=groups.get(task))
        out.append({"task": task, "metric": metric, "method": a, "baseline": b, "headline": headline, **res})
    for c, adj in zip(out, holm([c["p_perm"] for c in out]), strict=True):
        c["p_holm"] = adj
        c["family"] = len(out)
    return out


#: model-vs-model claims (``steer-train compare``): (task, metric, method); the same method of two
#: checkpoints on the same cases
MODEL_CLAIMS: list[tuple[str, str, str]] = [
    ("positive", "ndcg@10", "dpr_soft"),
    ("positive", "ndcg@10", "dpr_hybrid"),
    ("negative", "recall@10", "dpr_soft"),
    ("compound", "ndcg@10", "dpr_soft"),
    ("compound", "ndcg@10", "dpr_hybrid"),
    ("positive_phrase", "ndcg@10", "dpr_soft"),
    ("negative_phrase", "recall@10", "dpr_soft"),
    ("compound_phrase", "ndcg@10", "dpr_soft"),
]


def compare_models(
    a: dict[str, dict[str, dict[str, np.ndarray]]],
    b: dict[str, dict[str, dict[str, np.ndarray]]],
    groups: dict[str, list[int]],
    seed: int,
) -> list[dict[str, Any]]:
    """Paired tests of model ``a`` against model ``b`` (per-case values task → method → metric,
    scored on the same cases) for the :data:`MODEL_CLAIMS` both have, one Holm family."""
    out: list[dict[str, Any]] = []
    for task, metric, method in MODEL_CLAIMS:
        va = a.get(task, {}).get(method, {}).get(metric)
        vb = b.get(task, {}).get(method, {}).get(metric)
        if va is None or vb is None:
            continue
        if len(va) != len(vb):
            raise ValueError(f"{task}: the two models were scored on different cases")
        res = paired_test(va, vb, seed=seed, groups=groups.get(task))
        out.append({"task": task, "metric": metric, "method": method,
                    "mean_a": float(np.mean(va)), "mean_b": float(np.mean(vb)), **res})  # fmt: skip
    for c, adj in zip(out, holm([c["p_perm"] for c in out]), strict=True):
        c["p_holm"] = adj
        c["family"] = len(out)
    return out


# ---------------------------------------------------------------------------- evaluator


class Evaluator:
    """Scores tasks with a trained model and its baselines.

    ``ds``: what the system sees (catalog, filters, the clause → tag mapping, semantic item texts);
    ``truth`` (default ``ds``): the full metadata, used only for relevance-side metrics (violations,
    on-tag share). Under ``--hide-tags`` the two differ.
    """

    def __init__(
        self,
        model: DPR,
        ds: Dataset,
        encoder: MiniLM,
        prompt_tags: list[str],
        truth: Dataset | None = None,
        batch: int = 512,
    ) -> None:
        self.model = model
        self.ds = ds
        self.truth = truth if truth is not None else ds
        if self.truth.tag_vocab != ds.tag_vocab or self.truth.n_items != ds.n_items:
            raise ValueError("the visible and the full metadata must share items and tag vocabulary")
        self.bank = PromptBank(encoder)
        self.encoder = encoder
        self.tagmat_t = torch.from_numpy(ds.tag_matrix()).T.contiguous()  # [T, N] visible
        self.truth_t = torch.from_numpy(self.truth.tag_matrix()).T.contiguous()  # [T, N] full
        self.mapper = TagMapper(ds.tag_vocab, encoder.encode(ds.tag_vocab))
        self.prompt_tags = prompt_tags
        self.batch = batch
        self.budgets = budget_sizes(ds.n_items)
        eligible = set(prompt_tags)
        self.eligible = torch.tensor([t in eligible for t in ds.tag_vocab], dtype=torch.bool)
        self._item_emb: torch.Tensor | None = None
        self._popularity: torch.Tensor | None = None  # the examples baseline's (examples_baseline.py)

    def item_text_embeddings(self) -> torch.Tensor:
        if self._item_emb is None:
            texts = [f"{it.title}. {', '.join(it.tags)}" for it in self.ds.items]
            self._item_emb = self.encoder.encode(texts, batch_size=256)
        return self._item_emb

    def mapped(self, prompts: list[str | None]) -> list[list[tuple[str, list[int]]]]:
        """Per prompt: (polarity, tag indices) of every clause, as the server maps them."""
        cb = self.bank.batch(prompts)
        out: list[list[tuple[str, list[int]]]] = []
        ci = 0
        for clauses in cb.clauses:
            row = []
            for cl in clauses:
                row.append((cl.polarity, self.mapper.map(cl.text, cb.emb[ci])))
                ci += 1
            out.append(row)
        return out

    def _mapped_keep(self, prompts: list[str | None], n: int) -> torch.Tensor:
        keep = torch.ones((len(prompts), n), dtype=torch.bool)
        for i, row in enumerate(self.mapped(prompts)):
            for pol, tags in row:
                if tags:
                    carries = self.tagmat_t[tags].any(0)
                    keep[i] &= carries if pol == "+" else ~carries
        return keep

    @torch.no_grad()
    def _steered(
        self, h: torch.Tensor, prompts: list[str | None], history: list[list[int]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.model
        V = m.backbone.item_table()
        cb = self.bank.batch(prompts)
        sq = m.head.query(h, cb.emb, cb.negative, cb.owner, scale=m.soft_scale) @ V.T
        for i, hist in enumerate(history):
            sq[i, hist] = -math.inf
        mkeep = self._mapped_keep(prompts, V.shape[0])
        sem = torch.zeros_like(sq)
        if cb.emb.shape[0]:
            sign = torch.where(cb.negative, -1.0, 1.0)
            sem.index_add_(0, cb.owner, sign[:, None] * (cb.emb @ self.item_text_embeddings().T))
        return sq, mkeep, sem

    @torch.no_grad()
    def scores(self, task: Task) -> dict[str, torch.Tensor]:
        """Scores ``[cases, items]`` per method (``-inf``: not returned) for all of ``task``'s cases."""
        m = self.model
        m.eval()
        V0 = m.backbone.base_table()
        history = [c.history for c in task.cases]
        h = user_vectors(m, history)
        s0 = h @ V0.T  # the plain (stage-1) backbone: every baseline starts from this ranking
        for i, hist in enumerate(history):
            s0[i, hist] = -math.inf
        neg_inf = torch.tensor(-math.inf)
        out = {"backbone": s0}
        if task.name == "standard":
            sh = m.backbone.pad(h) @ m.backbone.item_table().T  # = s0: h is 0 in the aux dimensions
            for i, hist in enumerate(history):
                sh[i, hist] = -math.inf
            out["dpr_soft"] = sh
            return out
        keep = tag_filter(self.tagmat_t, task.pos_tag, task.neg_tag)  # the intended tags, visible
        out["filter_full"] = torch.where(keep, s0, neg_inf)
        for name, k in self.budgets.items():
            out[name] = retrieve_then_filter(s0, keep, k)
        if task.name == "positive_v1":
            rule = v1_rule_filter(self.tagmat_t, history, task.pos_tag, self.eligible)
            out["filter_v1_rule"] = torch.where(rule, s0, neg_inf)
        sq, mkeep, sem = self._steered(h, task.prompts, history)
        top = top_k_only(s0, TOP)
        out["dpr_soft"] = sq
        if self._popularity is None:
            self._popularity = training_popularity(self.ds)
        out["examples"] = examples_scores(m.backbone.item_table(), m.backbone.pad(h), self.tagmat_t,
                                          self._popularity, history, task.pos_tag, task.neg_tag)  # fmt: skip
        out["dpr_hybrid"] = torch.where(mkeep, blend(sq, s0, m.hybrid_blend), neg_inf)
        out["dpr_hard"] = torch.where(mkeep, s0, neg_inf)  # = the clause-mapper filter baseline
        # semantic re-ranking of the backbone's top 100: Σ_c sign(c) · cos(clause, item text); ties
        # keep the backbone's order (a tiny rank-based tie-break)
        out["semantic_top100"] = torch.where(torch.isfinite(top), sem + 1e-6 * top.clamp(min=-1e6), neg_inf)
        if task.exact_prompts is not None:
            sx, xkeep, _ = self._steered(h, task.exact_prompts, history)
            out["dpr_soft_exact"] = sx
            out["dpr_hybrid_exact"] = torch.where(xkeep, blend(sx, s0, m.hybrid_blend), neg_inf)
        return out

    def evaluate_task(self, task: Task) -> dict[str, dict[str, np.ndarray]]:
        """Per method, per metric: per-case values (scored in batches of ``self.batch`` cases)."""
        acc: dict[str, dict[str, list[np.ndarray]]] = {}
        none = torch.zeros(self.truth_t.shape[1], dtype=torch.bool)
        for s in range(0, len(task.cases), self.batch):
            part = task.part(s, s + self.batch)
            sc = self.scores(part)
            tgt = torch.tensor([c.target for c in part.cases])
            banned = wanted = None
            if any(t >= 0 for t in part.neg_tag):
                banned = torch.stack([self.truth_t[t] if t >= 0 else none for t in part.neg_tag])
            if any(t >= 0 for t in part.pos_tag):
                wanted = torch.stack([self.truth_t[t] if t >= 0 else none for t in part.pos_tag])
            for method, scores in sc.items():
                for k, v in per_case_metrics(scores, tgt, banned, wanted).items():
                    acc.setdefault(method, {}).setdefault(k, []).append(v)
        return {m: {k: np.concatenate(v) for k, v in met.items()} for m, met in acc.items()}

    def mapper_labels(self, task: Task) -> list[str]:
        """Per case of a phrase task: what the clause mapper recovers from the prompt, compared with
        the intended tags — ``exact`` (exactly them), ``partial`` (some of them, or with others),
        ``wrong`` (tags, none intended) or ``none`` (no tag)."""
        out = []
        for i, row in enumerate(self.mapped(task.prompts)):
            want = {("+", task.pos_tag[i])} if task.pos_tag[i] >= 0 else set()
            if task.neg_tag[i] >= 0:
                want.add(("-", task.neg_tag[i]))
            got = {(pol, t) for pol, tags in row for t in tags}
            out.append(
                "none" if not got else "exact" if got == want else "partial" if got & want else "wrong"
            )
        return out

    def run(self, tasks: dict[str, Task], seed: int = 0) -> dict[str, Any]:
        results: dict[str, Any] = {}
        per_case: dict[str, dict[str, dict[str, np.ndarray]]] = {}
        groups: dict[str, list[int]] = {}
        for name, task in tasks.items():
            if not task.cases:
                continue
            if task.exact_prompts is not None:
                task.labels["mapper"] = self.mapper_labels(task)
            if self.truth is not self.ds and any(t >= 0 for t in task.pos_tag):
                task.labels["tag_visibility"] = visibility_labels(self.tagmat_t, task)
            pc = self.evaluate_task(task)
            per_case[name] = pc
            groups[name] = [c.user for c in task.cases]
            entry: dict[str, Any] = {
                "n": len(task.cases),
                "users": len(set(groups[name])),
                "example_prompts": task.prompts[:5],
                "methods": _means(pc, None),
            }
            if name != "standard":
                entry["budget"] = [{"method": k, "k": v} for k, v in self.budgets.items()] + [
                    {"method": "filter_full", "k": self.ds.n_items}
                ]
            by: dict[str, Any] = {}
            for key, vals in task.labels.items():
                if key == "phrase" and len(set(vals)) > 200:
                    continue
                by[key] = {}
                for v in sorted(set(vals)):
                    sel = np.array([x == v for x in vals])
                    by[key][v] = {"n": int(sel.sum()), "methods": _means(pc, sel)}
            if by:
                entry["by"] = by
            results[name] = entry
            log.info(
                "%s (n=%d): %s",
                name,
                len(task.cases),
                ", ".join(f"{m} {entry['methods'][m]['ndcg@10']:.4f}" for m in pc),
            )
        results["comparisons"] = comparisons(per_case, groups, seed)
        return results


def _means(pc: dict[str, dict[str, np.ndarray]], sel: np.ndarray | None) -> dict[str, dict[str, float]]:
    return {
        m: {k: float(v[sel].mean() if sel is not None else v.mean()) for k, v in met.items()}
        for m, met in pc.items()
    }


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


# ---------------------------------------------------------------------------- tie order


def popularity_standard(ds: Dataset, cases: list[EvalCase], train: list[list[int]]) -> dict[str, float]:
    """The most-popular baseline on the standard task: items ranked by their interaction count in
    ``train`` (ties: lower row first), history excluded; mean NDCG@10 and Recall@10."""
    pop = torch.zeros(ds.n_items, dtype=torch.float64)
    for seq in train:
        pop.index_add_(0, torch.tensor(seq, dtype=torch.long), torch.ones(len(seq), dtype=torch.float64))
    # a row-based tie-break keeps the ranking strict (distinct scores)
    base = pop - torch.arange(ds.n_items, dtype=torch.float64) / (2 * ds.n_items)
    if not cases:
        return {"ndcg@10": 0.0, "recall@10": 0.0}
    scores = base.repeat(len(cases), 1)
    for i, c in enumerate(cases):
        scores[i, c.history] = -math.inf
    m = per_case_metrics(scores, torch.tensor([c.target for c in cases]), None)
    return {k: float(v.mean()) for k, v in m.items()}


def compare_tie_orders(item_order: Dataset, file_order: Dataset) -> dict[str, Any]:
    """How the order of same-second interactions changes the leave-one-out split: the number of test
    targets that differ and the popularity baseline under each order."""
    from steer_train.data import leave_one_out

    a, b = leave_one_out(item_order), leave_one_out(file_order)
    if len(a.test) != len(b.test):
        raise ValueError("the two orders must hold the same users")
    return {
        "test_cases": len(a.test),
        "test_targets_differ": sum(x.target != y.target for x, y in zip(a.test, b.test, strict=True)),
        "valid_targets_differ": sum(x.target != y.target for x, y in zip(a.valid, b.valid, strict=True)),
        "popularity": {
            "item": popularity_standard(item_order, a.test, a.train),
            "file": popularity_standard(file_order, b.test, b.train),
        },
    }
