"""Prompt templates (separate sets for training and evaluation), phrase files (prompts in users'
own words, per tag and polarity) and the prompt bank that turns a prompt string into clause
embeddings and polarities."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from steer_train.clauses import Clause, parse
from steer_train.data import _norm_tag
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


# ---------------------------------------------------------------------------- phrase files

#: limits on a phrase file (it is input: bounded before any work)
PHRASE_FILE_MAX_BYTES = 4 * 1024 * 1024
PHRASE_MAX_CHARS = 200
PHRASES_PER_TAG_MAX = 256
#: wrappers around a positive training phrase (``--carrier-prob``): the ways users embed a phrasing
#: in a request; none is an evaluation template (``EVAL_*``)
CARRIERS = (
    "something to {p}",
    "something that will {p}",
    "i want something to {p}",
    "anything to {p}",
    "i'd like {p}",
    "give me {p}",
    "{p} please",
    "show me {p}",
    "just {p}",
    "i feel like {p}",
)

#: the shipped training/validation phrase file (disjoint from ``phrases-test.json``); the default of
#: ``--train-phrases`` (docs/results.md, "Model and training changes")
TRAINVAL_PHRASES = Path(__file__).resolve().parent.parent / "phrases" / "phrases-trainval.json"


class PhraseError(ValueError):
    """An invalid phrase file; the message starts with the path."""


@dataclass
class Phrases:
    """``{"positive": {tag: [phrase, ...]}, "negative": {tag: [phrase, ...]}}`` with tags normalised
    as item tags are (lowercase, single spaces)."""

    positive: dict[str, list[str]]
    negative: dict[str, list[str]]

    def all(self) -> set[str]:
        return {
            " ".join(p.lower().split()) for d in (self.positive, self.negative) for v in d.values() for p in v
        }


def load_phrases(path: str | Path) -> Phrases:
    """Reads and validates a phrase file. Raises :class:`PhraseError` naming the file and the entry."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as e:
        raise PhraseError(f"{p}: cannot read: {e.strerror}") from None
    if size > PHRASE_FILE_MAX_BYTES:
        raise PhraseError(f"{p}: {size} bytes, more than the limit of {PHRASE_FILE_MAX_BYTES}")
    try:
        with p.open("rb") as fh:
            raw = fh.read(PHRASE_FILE_MAX_BYTES + 1)
        obj = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise PhraseError(f"{p}: cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise PhraseError(f"{p}:{e.lineno}: invalid JSON: {e.msg}") from None
    if not isinstance(obj, dict):
        raise PhraseError(f"{p}: expected a JSON object with 'positive' and/or 'negative'")
    extra = set(obj) - {"positive", "negative"}
    if extra:
        raise PhraseError(f"{p}: unknown key {sorted(extra)[0]!r} (expected 'positive', 'negative')")
    if not obj:
        raise PhraseError(f"{p}: no 'positive' or 'negative' phrases")
    out: dict[str, dict[str, list[str]]] = {"positive": {}, "negative": {}}
    for pol in ("positive", "negative"):
        group = obj.get(pol, {})
        if not isinstance(group, dict):
            raise PhraseError(f"{p}: {pol}: expected an object tag -> [phrase, ...]")
        for raw_tag, phrases in group.items():
            tag = _norm_tag(raw_tag)
            where = f"{p}: {pol}.{raw_tag}"
            if not tag:
                raise PhraseError(f"{where}: empty tag")
            if tag in out[pol]:
                raise PhraseError(f"{where}: tag given twice (after normalisation: {tag!r})")
            if not isinstance(phrases, list) or not phrases:
                raise PhraseError(f"{where}: expected a non-empty list of phrases")
            if len(phrases) > PHRASES_PER_TAG_MAX:
                raise PhraseError(f"{where}: {len(phrases)} phrases, more than {PHRASES_PER_TAG_MAX}")
            seen: set[str] = set()
            for i, ph in enumerate(phrases):
                if not isinstance(ph, str) or not ph.strip():
                    raise PhraseError(f"{where}[{i}]: expected a non-empty string")
                if len(ph) > PHRASE_MAX_CHARS:
                    raise PhraseError(f"{where}[{i}]: longer than {PHRASE_MAX_CHARS} characters")
                key = " ".join(ph.lower().split())
                if key in seen:
                    raise PhraseError(f"{where}[{i}]: duplicate phrase {ph!r}")
                seen.add(key)
            out[pol][tag] = [" ".join(ph.split()) for ph in phrases]
    return Phrases(out["positive"], out["negative"])


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
