"""The three training stages.

1. Backbone next-item training with full-softmax cross-entropy at every position.
2. Backbone frozen; projection + fusion + positive experts on positive prompts naming a tag of the
   target item, weighted towards intent shifts (tags rare in the recent history).
3. Negative experts and compound prompts added: cross-entropy on the true next item plus a
   suppression term ``-log(1 - P(items carrying the negated tag))``. The backbone stays frozen, so
   the no-prompt query ``q = h`` (and the standard accuracy) is exactly the backbone's.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from tqdm import tqdm

from steer_train.data import Dataset, EvalCase, Split
from steer_train.models import DPR
from steer_train.prompts import CARRIERS, TEMPLATES, Phrases, PromptBank, fill

log = logging.getLogger("steer_train.train")

RECENT = 10


@dataclass
class TrainConfig:
    seed: int = 0
    epochs1: int = 200
    lr1: float = 1e-3
    batch1: int = 128
    weight_decay1: float = 0.0
    eval_every: int = 10
    patience: int = 3
    epochs2: int = 6
    epochs3: int = 8
    lr23: float = 1e-3
    batch23: int = 256
    sup_weight: float = 1.0
    max_samples: int = 0
    progress: bool = True
    #: stage 1 stops after the epoch in which this many minutes have passed (0: no limit); the
    #: stopping epoch is validated so the best checked weights are kept
    max_minutes1: float = 0.0
    #: the checkpoint the model was warm-started from (``--init-from``; steer_train/warmstart.py):
    #: stage 1 then validates the starting weights too, so it keeps them unless an epoch beats them
    init_from: str | None = None
    #: with a phrase file (``train_all(phrases=...)``): the probability that a clause of a training
    #: prompt is a phrase of its tag (when the file has one) instead of a template
    phrase_prob: float = 0.5
    #: with a phrase file: the probability that a positive phrase is wrapped in a carrier
    #: (``prompts.CARRIERS``, e.g. "something to <phrase>")
    carrier_prob: float = 0.0
    #: hold out the last ``holdout`` transitions of every training user from stage 1; stages 2–3
    #: then learn from those transitions only, on user states the backbone never fitted (0: stages
    #: 2–3 learn from stage 1's own training windows)
    holdout: int = 0
    #: with ``holdout``: stages 2–3 learn from stage 1's own windows (in-sample states) too, the
    #: held-out transitions appended (``max_samples`` applies to the in-sample part)
    holdout_mix: bool = False
    #: weight of the within-tag ranking term: cross-entropy of the target among the items carrying
    #: the prompt's positive tag (0: off)
    rank_weight: float = 0.0
    #: relative standard deviation of the Gaussian noise added to training clause embeddings
    #: (which are then re-normalised to unit length; 0: off)
    clause_noise: float = 0.0
    #: > 0: stages 2–3 are validated after every epoch on validation prompts (training templates,
    #: the validation targets); the best head is kept and a stage stops after this many epochs
    #: without a gain
    head_patience: int = 0
    #: tune the soft scale λ and the hybrid blend β on validation after stage 3
    tune: bool = False
    #: > 0: the prompt-only item dimensions ``A`` are computed from the frozen collaborative item
    #: vectors by an MLP with this hidden width, ``A = g(E)``, trained in stages 2–3 (then written
    #: into the item table, so checkpoints and the server are unchanged); 0: ``A`` is a free
    #: per-item table. A free table can memorise which items carry a *visible* tag, so under
    #: ``--hide-tags`` it ranks the hidden members of a tag down; ``g(E)`` can only give items with
    #: similar collaborative vectors similar prompt-only coordinates (docs/results.md, "Incomplete
    #: metadata")
    aux_net: int = 0
    #: with ``aux_net``: the net also reads each item's visible tags and their co-occurrence
    #: propagation (:func:`propagation`), fixed features of the catalog
    aux_features: bool = False
    #: with ``aux_features``: the probability that a visible tag indicator is zeroed in a training
    #: step (simulates missing tags, so tag members without the tag are learnt from the other inputs)
    tag_dropout: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pad_left(seqs: list[list[int]], max_len: int) -> torch.Tensor:
    """Item rows → left-padded tokens (row + 1), keeping the last ``max_len`` items."""
    out = torch.zeros((len(seqs), max_len), dtype=torch.long)
    for i, s in enumerate(seqs):
        s = s[-max_len:]
        if s:
            out[i, max_len - len(s) :] = torch.tensor(s, dtype=torch.long) + 1
    return out


def windows(train: list[list[int]], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training rows: input tokens and next-item target tokens, both ``[R, max_len]``,
    left-padded; long sequences are cut into consecutive windows from the end."""
    ins: list[list[int]] = []
    outs: list[list[int]] = []
    for s in train:
        if len(s) < 2:
            continue
        x, y = s[:-1], s[1:]
        end = len(x)
        while end > 0:
            start = max(0, end - max_len)
            ins.append(x[start:end])
            outs.append(y[start:end])
            end = start
    return pad_left(ins, max_len), pad_left(outs, max_len)


@torch.no_grad()
def user_vectors(model: DPR, histories: list[list[int]], batch: int = 512) -> torch.Tensor:
    model.backbone.eval()
    out = []
    for s in range(0, len(histories), batch):
        out.append(model.backbone.user_vector(pad_left(histories[s : s + batch], model.cfg.max_len)))
    return torch.cat(out) if out else torch.zeros((0, model.cfg.d))


@torch.no_grad()
def quick_ndcg(model: DPR, cases: list[EvalCase], n_items: int, batch: int = 2048) -> float:
    """NDCG@10 of the plain backbone over ``cases`` (full ranking, history excluded); scored in
    batches of ``batch`` cases so large catalogs do not need a ``[cases, items]`` matrix."""
    if not cases:
        return 0.0
    table = model.backbone.base_table()
    total = 0.0
    for s in range(0, len(cases), batch):
        part = cases[s : s + batch]
        h = user_vectors(model, [c.history for c in part])
        scores = h @ table.T
        for i, c in enumerate(part):
            scores[i, c.history] = -math.inf
        tgt = torch.tensor([c.target for c in part])
        ts = scores[torch.arange(len(part)), tgt]
        rank = (scores > ts[:, None]).sum(1)
        total += float(torch.where(rank < 10, 1.0 / torch.log2(rank.float() + 2), 0.0).sum())
    return total / len(cases)


def train_stage1(
    model: DPR,
    split: Split,
    tc: TrainConfig,
    on_epoch: Callable[[int, float], None] | None = None,
    valid_log: list[tuple[int, float]] | None = None,
) -> list[float]:
    """Backbone next-item training; keeps the weights with the best validation NDCG@10.
    ``valid_log`` receives (epoch, validation NDCG@10) for every check."""
    seed_all(tc.seed)
    t0 = time.time()
    bb = model.backbone
    inp, tgt = windows(split.train, model.cfg.max_len)
    opt = torch.optim.Adam(bb.parameters(), lr=tc.lr1, weight_decay=tc.weight_decay1)
    losses: list[float] = []
    best = (-1.0, copy.deepcopy(bb.state_dict()))
    bad = 0
    valid = split.valid
    if tc.init_from and valid and tc.eval_every > 0:
        best = (quick_ndcg(model, valid, model.cfg.n_items), best[1])
        if valid_log is not None:
            valid_log.append((0, best[0]))
        log.info("stage 1: warm-started from %s, valid NDCG@10 %.4f", tc.init_from, best[0])
    bar = tqdm(range(tc.epochs1), desc="stage 1", disable=not tc.progress, unit="epoch")
    for epoch in bar:
        bb.train()
        perm = torch.randperm(inp.shape[0])
        tot = 0.0
        n = 0
        for s in range(0, len(perm), tc.batch1):
            idx = perm[s : s + tc.batch1]
            x, y = inp[idx], tgt[idx]
            mask = y > 0
            out = bb.encode_all(x)[mask]
            logits = out @ bb.base_table().T
            loss = F.cross_entropy(logits, y[mask] - 1)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            tot += loss.item() * int(mask.sum())
            n += int(mask.sum())
        losses.append(tot / max(n, 1))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
        out_of_time = tc.max_minutes1 > 0 and time.time() - t0 >= 60 * tc.max_minutes1
        if out_of_time:
            log.info("stage 1: time budget of %g minutes reached after epoch %d", tc.max_minutes1, epoch + 1)
        if (
            valid
            and tc.eval_every > 0
            and ((epoch + 1) % tc.eval_every == 0 or epoch + 1 == tc.epochs1 or out_of_time)
        ):
            nd = quick_ndcg(model, valid, model.cfg.n_items)
            if valid_log is not None:
                valid_log.append((epoch + 1, nd))
            log.info("stage 1 epoch %d: loss %.4f, valid NDCG@10 %.4f", epoch + 1, losses[-1], nd)
            if nd > best[0]:
                best = (nd, copy.deepcopy(bb.state_dict()))
                bad = 0
            else:
                bad += 1
                if bad >= tc.patience:
                    log.info(
                        "stage 1: early stop at epoch %d (best valid NDCG@10 %.4f)",
                        epoch + 1,
                        best[0],
                    )
                    break
        if out_of_time:
            break
    if best[0] >= 0:
        bb.load_state_dict(best[1])
    bb.eval()
    for p in bb.parameters():
        p.requires_grad_(False)
    return losses


# ---------------------------------------------------------------------------- stages 2 and 3


def holdout_split(train: list[list[int]], n: int) -> tuple[list[list[int]], list[EvalCase]]:
    """Stage 1's sequences without each user's last ``n`` transitions, and those transitions as
    (history, target) cases: sequence ``s`` keeps ``s[:len(s) − m]`` with ``m = min(n, len(s) − 2)``
    (at least two items stay, so every user still trains stage 1), and case ``j`` is
    ``(s[:j], s[j])`` for the ``m`` held-out positions ``j``."""
    if n < 0:
        raise ValueError(f"holdout must be >= 0, got {n}")
    kept: list[list[int]] = []
    cases: list[EvalCase] = []
    for u, seq in enumerate(train):
        m = max(0, min(n, len(seq) - 2))
        kept.append(list(seq[: len(seq) - m]))
        for j in range(len(seq) - m, len(seq)):
            cases.append(EvalCase(u, list(seq[:j]), seq[j]))
    return kept, cases


@dataclass
class Samples:
    """Training examples for the head, computed once with the frozen backbone."""

    h: torch.Tensor  # [S, d]
    target: torch.Tensor  # [S] item rows
    hist: torch.Tensor  # [S, T] tag counts over the history (in the window)
    recent: torch.Tensor  # [S, T] tag counts over the last RECENT items


@torch.no_grad()
def build_samples(
    model: DPR, split: Split, tagmat: npt.NDArray[np.bool_], max_samples: int, seed: int
) -> Samples:
    """Every position of stage 1's training windows (in-sample states)."""
    inp, tgt = windows(split.train, model.cfg.max_len)
    tm = torch.from_numpy(np.concatenate([np.zeros((1, tagmat.shape[1]), bool), tagmat])).float()
    hs, ts, hi, re = [], [], [], []
    model.backbone.eval()
    for s in range(0, inp.shape[0], 256):
        x, y = inp[s : s + 256], tgt[s : s + 256]
        out = model.backbone.encode_all(x)
        counts = tm[x].cumsum(1)  # [B, L, T]
        prev = torch.cat([torch.zeros_like(counts[:, :RECENT]), counts[:, :-RECENT]], dim=1)
        mask = y > 0
        hs.append(out[mask])
        ts.append(y[mask] - 1)
        hi.append(counts[mask])
        re.append((counts - prev)[mask])
    return _subsample(Samples(torch.cat(hs), torch.cat(ts), torch.cat(hi), torch.cat(re)), max_samples, seed)


@torch.no_grad()
def case_samples(
    model: DPR, cases: list[EvalCase], tagmat: npt.NDArray[np.bool_], max_samples: int, seed: int
) -> Samples:
    """One sample per case (e.g. :func:`holdout_split`'s out-of-sample transitions): ``h`` of the
    history (its last ``max_len`` items, as at evaluation), tag counts over those items and over
    the last :data:`RECENT` of them."""
    tm = torch.from_numpy(tagmat).float()
    T = tagmat.shape[1]
    hist = torch.zeros((len(cases), T))
    recent = torch.zeros((len(cases), T))
    for i, c in enumerate(cases):
        window = c.history[-model.cfg.max_len :]
        if window:
            hist[i] = tm[window].sum(0)
            recent[i] = tm[window[-RECENT:]].sum(0)
    h = user_vectors(model, [c.history for c in cases])
    target = torch.tensor([c.target for c in cases], dtype=torch.long)
    return _subsample(Samples(h, target, hist, recent), max_samples, seed)


def concat_samples(a: Samples, b: Samples) -> Samples:
    """``a``'s samples followed by ``b``'s."""
    return Samples(
        torch.cat([a.h, b.h]),
        torch.cat([a.target, b.target]),
        torch.cat([a.hist, b.hist]),
        torch.cat([a.recent, b.recent]),
    )


def _subsample(smp: Samples, max_samples: int, seed: int) -> Samples:
    if max_samples and smp.h.shape[0] > max_samples:
        g = torch.Generator().manual_seed(seed)
        keep = torch.randperm(smp.h.shape[0], generator=g)[:max_samples]
        smp = Samples(smp.h[keep], smp.target[keep], smp.hist[keep], smp.recent[keep])
    return smp


class PromptSampler:
    """Chooses training prompts for samples: the tags (weighted towards intent shifts for positive
    clauses, towards the user's frequent tags for negative ones) and their wording — a training
    template, or with ``phrases`` and probability ``phrase_prob`` per clause, a phrase of the tag
    (a positive phrase wrapped, with probability ``carrier_prob``, in one of :data:`CARRIERS`)
    (compound prompts then join the two clauses as ``"<positive>, <negative>"``). Without phrases the
    random stream is the one of earlier versions (no extra draws)."""

    def __init__(
        self,
        ds: Dataset,
        prompt_tags: list[str],
        smp: Samples,
        seed: int,
        phrases: Phrases | None = None,
        phrase_prob: float = 0.0,
        carrier_prob: float = 0.0,
    ) -> None:
        self.phrases = phrases if phrases is not None and phrase_prob > 0 else None
        self.phrase_prob = phrase_prob
        self.carrier_prob = carrier_prob
        self.vocab = ds.tag_vocab
        tagmat = torch.from_numpy(ds.tag_matrix())
        eligible = torch.tensor([t in set(prompt_tags) for t in ds.tag_vocab])
        has = tagmat[smp.target] & eligible[None]  # target carries the tag
        self.pos_w = has.float() / (1.0 + smp.recent) ** 1.5
        lacks = (~tagmat[smp.target]) & eligible[None]
        self.neg_w = lacks.float() * (smp.hist + 0.1) ** 2
        self.pos_ok = torch.nonzero(self.pos_w.sum(1) > 0).squeeze(1)
        self.neg_ok = torch.nonzero(self.neg_w.sum(1) > 0).squeeze(1)
        both = (self.pos_w.sum(1) > 0) & (self.neg_w.sum(1) > 0)
        self.both_ok = torch.nonzero(both).squeeze(1)
        self.tagmat_t = tagmat.T.contiguous()  # [T, N]
        self.gen = torch.Generator().manual_seed(seed)
        self.rng = random.Random(seed)

    def pick(self, w: torch.Tensor) -> torch.Tensor:
        return torch.multinomial(w, 1, generator=self.gen).squeeze(1)

    def draw(self, pool: torch.Tensor, n: int) -> torch.Tensor:
        return pool[torch.randint(len(pool), (n,), generator=self.gen)]

    def prompts(
        self, kind: str, idx: torch.Tensor, split: str = "train"
    ) -> tuple[list[str | None], torch.Tensor | None]:
        """Prompt strings and, for prompts with a negation, the negated tag per sample."""
        out, _, b = self.prompts_tags(kind, idx, split)
        return out, b

    def prompts_tags(
        self, kind: str, idx: torch.Tensor, split: str = "train"
    ) -> tuple[list[str | None], torch.Tensor | None, torch.Tensor | None]:
        """Prompt strings, the positive tag per sample (``pos``/``compound``, else None) and the
        negated tag per sample (``neg``/``compound``, else None)."""
        tpl = TEMPLATES[split][kind]
        a = self.pick(self.pos_w[idx]) if kind in ("pos", "compound") else None
        b = self.pick(self.neg_w[idx]) if kind in ("neg", "compound") else None
        out: list[str | None] = []
        for i in range(len(idx)):
            ta = self.vocab[int(a[i])] if a is not None else ""
            tb = self.vocab[int(b[i])] if b is not None else ""
            t = self.rng.choice(tpl)
            if self.phrases is None:
                out.append(fill(t, ta, tb))
                continue
            pa = self._phrase(self.phrases.positive, ta) if a is not None else None
            if pa is not None and self.carrier_prob > 0 and self.rng.random() < self.carrier_prob:
                pa = self.rng.choice(CARRIERS).format(p=pa)
            pb = self._phrase(self.phrases.negative, tb) if b is not None else None
            if pa is None and pb is None:
                out.append(fill(t, ta, tb))
            elif kind != "compound":
                out.append(pa if pa is not None else pb)
            else:
                pos = pa if pa is not None else fill(self.rng.choice(TEMPLATES[split]["pos"]), ta)
                neg = pb if pb is not None else fill(self.rng.choice(TEMPLATES[split]["neg"]), "", tb)
                out.append(f"{pos}, {neg}")
        return out, a, b

    def _phrase(self, group: dict[str, list[str]], tag: str) -> str | None:
        """A phrase of ``tag`` with probability ``phrase_prob`` (when ``group`` has one), else None."""
        options = group.get(tag)
        if not options or self.rng.random() >= self.phrase_prob:
            return None
        return self.rng.choice(options)


def _suppression(logits: torch.Tensor, banned: torch.Tensor) -> torch.Tensor:
    """``-log(1 - P(banned))`` per row = logsumexp(all) - logsumexp(allowed)."""
    allowed = logits.masked_fill(banned, -math.inf)
    return torch.logsumexp(logits, 1) - torch.logsumexp(allowed, 1)


#: the grids the soft scale λ and the hybrid blend β are tuned over (λ first, then β at that λ)
LAMBDAS = (1.0, 0.25, 0.35, 0.5, 0.75, 1.25, 1.5, 2.0, 3.0)
BETAS = (1.0, 0.0, 0.25, 0.5, 0.75)


@dataclass
class _ValidPart:
    h: torch.Tensor  # [C, d]
    emb: torch.Tensor  # [K, 384] clause embeddings
    negative: torch.Tensor  # [K]
    owner: torch.Tensor  # [K]
    hist_rows: torch.Tensor  # history mask (case, item) pairs
    hist_cols: torch.Tensor
    keep: torch.Tensor  # [C, N] the intended tags' filter (visible tags)
    target: torch.Tensor  # [C]


class HeadValidator:
    """Validation prompts for stages 2–3 and the λ/β tuning: the leak-free positive, negative and
    compound tag tasks (docs/results.md) built on validation cases (normally ``Split.valid``: targets
    that no stage trains on) but worded with the *training* templates, so the evaluation wordings
    stay unseen. A method's score is NDCG@10 over the whole catalog minus the history, averaged over
    the tasks asked for. The backbone is frozen, so user vectors and clause embeddings are computed
    once; the head is read at every call."""

    def __init__(
        self,
        model: DPR,
        ds: Dataset,
        cases: list[EvalCase],
        bank: PromptBank,
        prompt_tags: list[str],
        seed: int,
    ) -> None:
        from steer_train.evaluate import build_tasks, tag_filter

        self.model = model
        tasks = build_tasks(ds, cases, prompt_tags, seed, v1=False, templates="train")
        tm_t = torch.from_numpy(ds.tag_matrix()).T.contiguous()
        self.parts: dict[str, _ValidPart] = {}
        for kind in ("positive", "negative", "compound"):
            t = tasks[kind]
            if not t.cases:
                continue
            cb = bank.batch(t.prompts)
            rows = [i for i, c in enumerate(t.cases) for _ in c.history]
            cols = [j for c in t.cases for j in c.history]
            self.parts[kind] = _ValidPart(
                h=user_vectors(model, [c.history for c in t.cases]),
                emb=cb.emb,
                negative=cb.negative,
                owner=cb.owner,
                hist_rows=torch.tensor(rows, dtype=torch.long),
                hist_cols=torch.tensor(cols, dtype=torch.long),
                keep=tag_filter(tm_t, t.pos_tag, t.neg_tag),
                target=torch.tensor([c.target for c in t.cases], dtype=torch.long),
            )

    def sizes(self) -> dict[str, int]:
        return {k: int(p.target.shape[0]) for k, p in self.parts.items()}

    @torch.no_grad()
    def score(self, kinds: list[str], scale: float = 1.0, beta: float | None = None) -> float:
        """Mean over ``kinds`` (those with cases) of NDCG@10: soft with ``scale`` (λ), or with
        ``beta`` the hybrid ranking (the intended tags' filter over ``β · soft + (1 − β) · backbone``)."""
        from steer_train.evaluate import blend

        m = self.model
        V = m.backbone.item_table()
        V0 = m.backbone.base_table()
        vals = []
        for kind in kinds:
            p = self.parts.get(kind)
            if p is None:
                continue
            sc = m.head.query(p.h, p.emb, p.negative, p.owner, scale=scale) @ V.T
            sc[p.hist_rows, p.hist_cols] = -math.inf
            if beta is not None:
                s0 = p.h @ V0.T
                s0[p.hist_rows, p.hist_cols] = -math.inf
                sc = torch.where(p.keep, blend(sc, s0, beta), torch.tensor(-math.inf))
            ts = sc[torch.arange(sc.shape[0]), p.target]
            rank = (sc > ts[:, None]).sum(1)
            ok = torch.isfinite(ts) & (rank < 10)
            vals.append(float(torch.where(ok, 1.0 / torch.log2(rank.float() + 2), 0.0).mean()))
        return sum(vals) / len(vals) if vals else 0.0

    def tune(self) -> dict[str, Any]:
        """λ maximising soft's score over all three tasks, then β maximising hybrid's at that λ
        (ties keep the earlier grid value: λ = 1, β = 1 first, the checkpoint's own modes)."""
        kinds = ["positive", "negative", "compound"]
        soft = {lam: self.score(kinds, scale=lam) for lam in LAMBDAS}
        lam = max(LAMBDAS, key=lambda x: (soft[x], -LAMBDAS.index(x)))
        hyb = {b: self.score(kinds, scale=lam, beta=b) for b in BETAS}
        beta = max(BETAS, key=lambda x: (hyb[x], -BETAS.index(x)))
        return {
            "soft_scale": lam,
            "hybrid_blend": beta,
            "valid_cases": self.sizes(),
            "soft_ndcg@10": {str(k): v for k, v in sorted(soft.items())},
            "hybrid_ndcg@10": {str(k): v for k, v in sorted(hyb.items())},
        }


#: neighbours of the co-occurrence tag propagation (:func:`propagation`)
PROPAGATION_K = 100


def propagation(train: list[list[int]], visible: npt.NDArray[np.bool_], k: int = PROPAGATION_K) -> np.ndarray:
    """``[N, T]``: per item, the visible tag shares of its ``k`` most similar other items (cosine of
    their user columns over the training sequences), weighted by the similarity — a collaborative
    estimate of an item's tags that does not read the item's own tags. Memory: ``N × N`` floats."""
    n = visible.shape[0]
    x = np.zeros((len(train), n), np.float32)
    for u, seq in enumerate(train):
        x[u, seq] = 1.0
    xn = x / np.sqrt(x.sum(0, keepdims=True) + 1e-9)
    sim = xn.T @ xn
    np.fill_diagonal(sim, 0.0)
    k = max(1, min(k, n - 1))
    idx = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    w = np.take_along_axis(sim, idx, 1)
    out: np.ndarray = (w[:, :, None] * visible.astype(np.float32)[idx]).sum(1) / (
        w.sum(1, keepdims=True) + 1e-9
    )
    return out


class AuxNet(torch.nn.Module):
    """``A = g([E ; F])``: the prompt-only item dimensions as a function of the frozen collaborative
    item vectors ``E`` and, optionally, fixed item features ``F`` (``TrainConfig.aux_net`` /
    ``aux_features``): ``fc2(relu(fc1(·)))`` → ``[N, d_aux]``, initialised so that it starts small.

    ``F``'s first ``tag_cols`` columns are the item's visible tag indicators; with ``tag_dropout``
    and a generator (training) each indicator is zeroed with that probability, so the net also sees
    tag members whose tag is missing — the situation of a hidden tag — and must place them by ``E``
    and the other features (e.g. :func:`propagation`). Without a generator (validation, export) the
    full visible indicators are used."""

    features: torch.Tensor | None

    def __init__(
        self,
        d: int,
        hidden: int,
        d_aux: int,
        seed: int,
        features: torch.Tensor | None = None,
        tag_cols: int = 0,
        tag_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        d_in = d + (features.shape[1] if features is not None else 0)
        self.fc1 = torch.nn.Linear(d_in, hidden)
        self.fc2 = torch.nn.Linear(hidden, d_aux)
        self.register_buffer("features", features.float() if features is not None else None, persistent=False)
        self.tag_cols = tag_cols
        self.tag_dropout = tag_dropout
        with torch.no_grad():
            self.fc1.weight.copy_(torch.randn(hidden, d_in, generator=g) / math.sqrt(d_in))
            self.fc1.bias.zero_()
            self.fc2.weight.copy_(torch.randn(d_aux, hidden, generator=g) * (0.1 / math.sqrt(hidden)))
            self.fc2.bias.zero_()

    def forward(self, E: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        x = E
        if self.features is not None:
            f = self.features
            if gen is not None and self.tag_dropout > 0 and self.tag_cols > 0:
                keep = torch.rand((f.shape[0], self.tag_cols), generator=gen) >= self.tag_dropout
                f = torch.cat([f[:, : self.tag_cols] * keep, f[:, self.tag_cols :]], 1)
            x = torch.cat([E, f], 1)
        out: torch.Tensor = self.fc2(F.relu(self.fc1(x)))
        return out


def _within_tag(logits: torch.Tensor, carries: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per row: cross-entropy of ``target`` among the items ``carries`` marks (the prompt tag's
    items; the target must be one of them) — the order inside the tag, whatever the tag's mass."""
    return F.cross_entropy(logits.masked_fill(~carries, -math.inf), target, reduction="none")


def noisy(emb: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """Clause embeddings with relative Gaussian noise (``sigma · |e| / √D`` per dimension),
    re-normalised to the input rows' lengths; ``sigma = 0`` returns ``emb`` itself."""
    if sigma <= 0 or emb.shape[0] == 0:
        return emb
    norm = emb.norm(dim=1, keepdim=True)
    noise = torch.randn(emb.shape, generator=gen) * (sigma / math.sqrt(emb.shape[1]))
    out: torch.Tensor = F.normalize(emb + noise * norm, dim=1) * norm
    return out


def train_head(
    model: DPR,
    ds: Dataset,
    smp: Samples,
    bank: PromptBank,
    prompt_tags: list[str],
    tc: TrainConfig,
    stage: int,
    phrases: Phrases | None = None,
    validator: HeadValidator | None = None,
    valid_log: list[float] | None = None,
    aux_net: AuxNet | None = None,
) -> list[float]:
    """Stage 2 (``stage=2``: positive prompts, positive experts) or 3 (everything). With a
    ``validator`` and ``tc.head_patience > 0`` the head is validated after every epoch (scores go
    to ``valid_log``), the best validated head is kept and the stage stops early. With ``aux_net``
    the prompt-only dimensions are ``aux_net(E)`` (trained here) instead of the free table; the
    table then holds ``aux_net(E)`` of the kept head when the stage ends."""
    seed_all(tc.seed + stage)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: thread synchronisation costs more than it gains
    try:
        return _train_head(
            model, ds, smp, bank, prompt_tags, tc, stage, phrases, validator, valid_log, aux_net
        )
    finally:
        torch.set_num_threads(threads)


def _train_head(
    model: DPR,
    ds: Dataset,
    smp: Samples,
    bank: PromptBank,
    prompt_tags: list[str],
    tc: TrainConfig,
    stage: int,
    phrases: Phrases | None,
    validator: HeadValidator | None,
    valid_log: list[float] | None,
    aux_net: AuxNet | None = None,
) -> list[float]:
    head = model.head
    head.train()
    sampler = PromptSampler(ds, prompt_tags, smp, tc.seed + stage, phrases, tc.phrase_prob, tc.carrier_prob)
    if stage == 2:
        params = [p for n, p in head.named_parameters() if not n.startswith("neg.")]
        kinds = ["pos"]
        epochs = tc.epochs2
    else:
        params = list(head.parameters())
        kinds = ["pos", "neg", "compound"]
        epochs = tc.epochs3
    aux = model.backbone.aux_emb
    E = model.backbone.base_table().detach()
    if aux is not None and aux_net is not None:  # A = g(E): g trains with the head
        params.extend(aux_net.parameters())
    elif aux is not None:  # the prompt-only item dimensions train with the head
        aux.requires_grad_(True)
        params.append(aux)

    def sync_aux() -> None:
        """Write ``g(E)`` into the item table (what validation, export and the server read)."""
        if aux is not None and aux_net is not None:
            with torch.no_grad():
                aux.copy_(aux_net(E))

    pools = {"pos": sampler.pos_ok, "neg": sampler.neg_ok, "compound": sampler.both_ok}
    kinds = [k for k in kinds if len(pools[k]) > 0]
    if not kinds or epochs <= 0:
        return []
    opt = torch.optim.Adam(params, lr=tc.lr23)
    steps = max(1, len(pools["pos"]) // tc.batch23)
    per_kind = max(1, tc.batch23 // len(kinds))
    losses: list[float] = []
    check = validator is not None and tc.head_patience > 0
    vkinds = ["positive"] if stage == 2 else ["positive", "negative", "compound"]
    best: (
        tuple[float, dict[str, torch.Tensor], torch.Tensor | None, dict[str, torch.Tensor] | None] | None
    ) = None
    bad = 0
    noise_gen = torch.Generator().manual_seed(tc.seed + 100 + stage)
    drop_gen = torch.Generator().manual_seed(tc.seed + 300 + stage)
    bar = tqdm(range(epochs), desc=f"stage {stage}", disable=not tc.progress, unit="epoch")
    for _ in bar:
        tot = 0.0
        for _ in range(steps):
            loss = torch.zeros(())
            V = E if aux is None else torch.cat([E, aux_net(E, drop_gen) if aux_net is not None else aux], 1)
            for kind in kinds:
                idx = sampler.draw(pools[kind], per_kind)
                prompts, wanted, negated = sampler.prompts_tags(kind, idx)
                cb = bank.batch(prompts)
                emb = noisy(cb.emb, tc.clause_noise, noise_gen)
                q = head.query(smp.h[idx], emb, cb.negative, cb.owner)
                logits = q @ V.T
                part = F.cross_entropy(logits, smp.target[idx])
                if negated is not None and tc.sup_weight > 0:
                    banned = sampler.tagmat_t[negated]
                    part = part + tc.sup_weight * _suppression(logits, banned).mean()
                if wanted is not None and tc.rank_weight > 0:
                    carries = sampler.tagmat_t[wanted]
                    part = part + tc.rank_weight * _within_tag(logits, carries, smp.target[idx]).mean()
                loss = loss + part / len(kinds)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            tot += loss.item()
        losses.append(tot / steps)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        log.info("stage %d epoch %d: loss %.4f (%d steps)", stage, len(losses), losses[-1], steps)
        sync_aux()
        if check:
            assert validator is not None
            head.eval()
            v = validator.score(vkinds)
            head.train()
            if valid_log is not None:
                valid_log.append(v)
            log.info("stage %d epoch %d: validation NDCG@10 %.4f", stage, len(losses), v)
            if best is None or v > best[0]:
                best = (
                    v,
                    copy.deepcopy(head.state_dict()),
                    aux.detach().clone() if aux is not None else None,
                    copy.deepcopy(aux_net.state_dict()) if aux_net is not None else None,
                )
                bad = 0
            else:
                bad += 1
                if bad >= tc.head_patience:
                    log.info("stage %d: early stop at epoch %d (best %.4f)", stage, len(losses), best[0])
                    break
    if best is not None:
        head.load_state_dict(best[1])
        if aux is not None and best[2] is not None:
            with torch.no_grad():
                aux.copy_(best[2])
        if aux_net is not None and best[3] is not None:
            aux_net.load_state_dict(best[3])
    head.eval()
    if aux is not None:
        aux.requires_grad_(False)
    return losses


@dataclass
class TrainResult:
    losses: dict[str, list[float]]
    seconds: dict[str, float]
    #: validation curves of stages 2–3 (``stage2``, ``stage3``), head sample counts and, with
    #: ``tc.tune``, the λ/β tuning (:meth:`HeadValidator.tune`)
    valid: dict[str, Any] = field(default_factory=dict)


def train_all(
    model: DPR,
    ds: Dataset,
    split: Split,
    bank: PromptBank,
    tc: TrainConfig,
    prompt_tags: list[str],
    cache_dir: str | None = None,
    phrases: Phrases | None = None,
) -> TrainResult:
    """All three stages. With ``cache_dir``, the stage-1 backbone is stored there (keyed by data set,
    model and stage-1 settings) and reused by later runs. With ``phrases`` (a training phrase file),
    stages 2–3 word a clause with one of its tag's phrases with probability ``tc.phrase_prob``."""
    t0 = time.time()
    held: list[EvalCase] = []
    full_split = split
    if tc.holdout > 0:
        kept, held = holdout_split(split.train, tc.holdout)
        split = Split(train=kept, valid=split.valid, test=split.test)
        log.info("stage 1 without the last %d transitions of each user: %d held out", tc.holdout, len(held))
    cached = None
    if cache_dir:
        key = json.dumps(
            [hashlib.sha256(repr(split.train).encode()).hexdigest(), ds.n_items, len(split.train),
             {k: v for k, v in model.cfg.to_json().items() if k != "d_aux"},
             [tc.seed, tc.epochs1, tc.lr1, tc.batch1, tc.weight_decay1, tc.eval_every, tc.patience]],
            sort_keys=True,
        )  # fmt: skip
        cached = Path(cache_dir) / f"stage1-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"
    if cached is not None and cached.is_file():
        blob = torch.load(cached, weights_only=True)
        model.backbone.load_state_dict(blob["state"], strict=False)  # aux_emb is not stage 1's
        model.backbone.eval()
        for p in model.backbone.parameters():
            p.requires_grad_(False)
        l1 = [float(x) for x in blob["losses"]]
        log.info("stage 1: reusing the cached backbone %s", cached)
    else:
        l1 = train_stage1(model, split, tc)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            state = {k: v for k, v in model.backbone.state_dict().items() if k != "aux_emb"}
            torch.save({"state": state, "losses": torch.tensor(l1)}, cached)
    t1 = time.time()
    if held and tc.holdout_mix:
        smp = concat_samples(
            build_samples(model, split, ds.tag_matrix(), tc.max_samples, tc.seed),
            case_samples(model, held, ds.tag_matrix(), 0, tc.seed),
        )
    elif held:
        smp = case_samples(model, held, ds.tag_matrix(), tc.max_samples, tc.seed)
    else:
        smp = build_samples(model, split, ds.tag_matrix(), tc.max_samples, tc.seed)
    kind = ("in sample + held out" if tc.holdout_mix else "held out") if held else "in sample"
    log.info("head training samples: %d (%s)", smp.h.shape[0], kind)
    validator = None
    if (tc.head_patience > 0 or tc.tune) and full_split.valid:
        validator = HeadValidator(model, ds, full_split.valid, bank, prompt_tags, tc.seed)
    v2: list[float] = []
    v3: list[float] = []
    aux_net = None
    if tc.aux_net > 0 and model.backbone.aux_emb is not None:
        feats = None
        if tc.aux_features:
            vis = ds.tag_matrix()
            feats = torch.from_numpy(
                np.concatenate([vis.astype(np.float32), propagation(split.train, vis)], 1)
            )
        aux_net = AuxNet(model.cfg.d, tc.aux_net, model.cfg.d_aux, tc.seed + 200, feats,
                         tag_cols=ds.tag_matrix().shape[1] if feats is not None else 0,
                         tag_dropout=tc.tag_dropout)  # fmt: skip
        with torch.no_grad():
            model.backbone.aux_emb.copy_(aux_net(model.backbone.base_table()))
    l2 = train_head(model, ds, smp, bank, prompt_tags, tc, 2, phrases, validator, v2, aux_net)
    t2 = time.time()
    l3 = train_head(model, ds, smp, bank, prompt_tags, tc, 3, phrases, validator, v3, aux_net)
    t3 = time.time()
    model.tags = list(ds.tag_vocab)
    valid: dict[str, Any] = {"head_samples": int(smp.h.shape[0]), "held_out": bool(held), "samples": kind}
    if validator is not None:
        valid.update(valid_cases=validator.sizes(), stage2=v2, stage3=v3)
        if tc.tune:
            tuned = validator.tune()
            model.soft_scale = float(tuned["soft_scale"])
            model.hybrid_blend = float(tuned["hybrid_blend"])
            valid["tuning"] = tuned
            log.info(
                "validation tuning: soft scale %g, hybrid blend %g", model.soft_scale, model.hybrid_blend
            )
    return TrainResult(
        losses={"stage1": l1, "stage2": l2, "stage3": l3},
        seconds={"stage1": t1 - t0, "stage2": t2 - t1, "stage3": t3 - t2, "tune": time.time() - t3},
        valid=valid,
    )
