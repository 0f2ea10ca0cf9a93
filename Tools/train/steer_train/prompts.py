"""Prompt templates (separate sets for training and evaluation) and the prompt bank that turns a
prompt string into clause embeddings and polarities."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from steer_train.clauses import Clause, parse
from steer_train.minilm import MiniLM

TRAIN_POS = [
    "{a}", "more {a}", "i want {a}", "{a} please", "something {a}", "give me {a} movies",
    "show me some {a}", "{a} films", "i'd like {a}", "more {a} movies please",
]  # fmt: skip
TRAIN_NEG = [
    "no {b}", "not {b}", "without {b}", "avoid {b}", "less {b}", "no {b} please",
    "don't want {b}", "no more {b}",
]  # fmt: skip
TRAIN_COMPOUND = [
    "{a} but no {b}", "{a}, not {b}", "{a} without {b}", "more {a}, less {b}",
    "i want {a} and no {b}", "avoid {b}, give me {a}",
]  # fmt: skip

# Evaluation wordings never appear in training: the clause texts they leave differ ("how about
# comedy", "comedy tonight") and the negation cues differ ("anything but", "skip", "except").
EVAL_POS = [
    "in the mood for {a}", "how about {a}", "{a} tonight", "{a} would be great",
    "looking for {a} stuff", "recommend {a}",
]  # fmt: skip
EVAL_NEG = [
    "anything but {b}", "skip {b}", "except {b}", "stay away from {b}", "excluding {b}",
    "minus {b}",
]  # fmt: skip
EVAL_COMPOUND = [
    "{a} tonight, anything but {b}", "how about {a}, skip {b}", "{a} except {b}",
    "in the mood for {a}; stay away from {b}",
]  # fmt: skip

TEMPLATES = {
    "train": {"pos": TRAIN_POS, "neg": TRAIN_NEG, "compound": TRAIN_COMPOUND},
    "eval": {"pos": EVAL_POS, "neg": EVAL_NEG, "compound": EVAL_COMPOUND},
}


def fill(template: str, a: str = "", b: str = "") -> str:
    return template.replace("{a}", a).replace("{b}", b)


@dataclass
class ClauseBatch:
    """Flattened clauses of a batch of prompts."""

    emb: torch.Tensor  # [C, 384]
    negative: torch.Tensor  # [C] bool
    owner: torch.Tensor  # [C] long: the prompt each clause belongs to
    clauses: list[list[Clause]]


class PromptBank:
    """Parses prompts (memoised) and embeds clause texts with the frozen encoder (memoised)."""

    def __init__(self, encoder: MiniLM) -> None:
        self.encoder = encoder
        self._parsed: dict[str, list[Clause]] = {}

    def parse(self, prompt: str | None) -> list[Clause]:
        if not prompt:
            return []
        got = self._parsed.get(prompt)
        if got is None:
            got = parse(prompt)
            self._parsed[prompt] = got
        return got

    def batch(self, prompts: list[str | None]) -> ClauseBatch:
        texts: list[str] = []
        neg: list[bool] = []
        owner: list[int] = []
        all_clauses: list[list[Clause]] = []
        for i, p in enumerate(prompts):
            cl = self.parse(p)
            all_clauses.append(cl)
            for c in cl:
                texts.append(c.text)
                neg.append(c.polarity == "-")
                owner.append(i)
        return ClauseBatch(
            emb=self.encoder.encode(texts),
            negative=torch.tensor(neg, dtype=torch.bool),
            owner=torch.tensor(owner, dtype=torch.long),
            clauses=all_clauses,
        )
