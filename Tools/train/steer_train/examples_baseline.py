"""The ``examples`` steering baseline: recommend from example items, as the Steer server does.

What a user of another database would do instead of writing a prompt (Qdrant's Recommend API, which
``recommend`` with ``positive``/``negative`` mirrors; docs/protocol.md, "Recommend from examples"):
give a few items of the wanted tag as positive examples, or of the unwanted tag as negative ones,
beside the user's history.

**The examples** of a case (the rule; it uses only what a user could know): for each tag of the
task's intent (``pos_tag`` → positive examples, ``neg_tag`` → negative examples), the
:data:`N_EXAMPLES` most popular items carrying the tag (visible tags; popularity = interactions in
the training part of the leave-one-out split; ties by item row) that are not in the case's history.
The held-out target is never chosen because it is the target: only when it is among those by
popularity, and then, as on the server, an example never appears in the hits, so that case scores 0.

**The score** mirrors ``RetrievalEngine.recommendFromExamples`` with the ``average_vector`` strategy
(Sources/SteerEngine/ExampleRecommend.swift): the encoder's query of the history without a prompt
(``[h ; 0]``, the base vector) is one more positive, ``q = mean(positives)`` without negatives and
``q = 2·mean(positives) − mean(negatives)`` with them, items are ranked by ``q · V`` (the served
checkpoints' inner product) over the scoring table ``V``, and the history and the examples are
excluded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from steer_train.data import Dataset, leave_one_out

#: Example items per tag of the intent.
N_EXAMPLES = 3


def training_popularity(ds: Dataset) -> torch.Tensor:
    """``[n_items]`` interaction counts in the training part of ``ds``'s leave-one-out split."""
    counts = torch.zeros(ds.n_items)
    for seq in leave_one_out(ds).train:
        counts.index_add_(0, torch.tensor(seq, dtype=torch.long), torch.ones(len(seq)))
    return counts


def pick_examples(
    carries: torch.Tensor, popularity: torch.Tensor, history: Sequence[int], n: int = N_EXAMPLES
) -> list[int]:
    """The ``n`` most popular items with ``carries[item]`` not in ``history`` (ties: lower row first)."""
    allowed = carries.clone()
    if history:
        allowed[list(history)] = False
    rows = torch.nonzero(allowed).flatten()
    if rows.numel() == 0:
        return []
    # a stable sort by descending popularity keeps the row order among equals
    order = torch.sort(-popularity[rows], stable=True).indices
    return [int(r) for r in rows[order[:n]]]


def average_vector(positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """``2·mean(positives) − mean(negatives)``, or ``mean(positives)`` without negatives."""
    p = positives.mean(0)
    return p if negatives.shape[0] == 0 else 2 * p - negatives.mean(0)


@torch.no_grad()
def examples_scores(
    table: torch.Tensor,
    base_queries: torch.Tensor,
    tagmat_t: torch.Tensor,
    popularity: torch.Tensor,
    history: Sequence[Sequence[int]],
    pos_tag: Sequence[int],
    neg_tag: Sequence[int],
) -> torch.Tensor:
    """Scores ``[cases, items]`` (``-inf``: not returned) of the examples baseline (module docstring).

    ``table``: ``V`` ``[N, D]``; ``base_queries``: ``[cases, D]`` the history queries ``[h ; 0]``;
    ``tagmat_t``: ``[T, N]`` visible tags."""
    out = torch.empty(len(history), table.shape[0])
    empty = table.new_zeros(0, table.shape[1])
    for i, hist in enumerate(history):
        pos = pick_examples(tagmat_t[pos_tag[i]], popularity, hist) if pos_tag[i] >= 0 else []
        neg = pick_examples(tagmat_t[neg_tag[i]], popularity, hist) if neg_tag[i] >= 0 else []
        positives = torch.cat([base_queries[i : i + 1], table[pos]])
        q = average_vector(positives, table[neg] if neg else empty)
        s = table @ q
        s[list(hist) + pos + neg] = -math.inf
        out[i] = s
    return out
