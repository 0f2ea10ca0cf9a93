"""The clause parser (prompt → clauses with polarity) and the clause → catalog tag mapping.

The rules are specified in docs/clause-parser.md and tested by spec/clause_cases.json, which the
Swift implementation reads too. Change all three together.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import torch

#: characters that end a chunk (a chunk always starts a new positive clause)
SEPARATORS = frozenset(",;.!?:()[]{}<>|/\\\n\r\t")
#: characters trimmed from both ends of every word
TRIM = "'\"\u201c\u201d\u00ab\u00bb-_*~`#"
MAX_CLAUSES = 8

FILLER = frozenset(
    [
        "a",
        "an",
        "the",
        "some",
        "something",
        "anything",
        "everything",
        "stuff",
        "things",
        "thing",
        "please",
        "pls",
        "movies",
        "movie",
        "films",
        "film",
        "shows",
        "show",
        "ones",
        "one",
        "really",
        "very",
        "just",
        "maybe",
        "i",
        "me",
        "my",
        "us",
        "we",
    ]
)
#: word sequences → action; the longest match at a position wins
_SPLIT = ["but", "and", "or", "nor", "&", "+", "plus", "yet", "though", "although", "however",
          "while", "whereas", "then"]  # fmt: skip
_NEG = ["no", "not", "without", "except", "excluding", "exclude", "avoid", "never", "less", "fewer",
        "minus", "skip", "none", "neither", "nothing", "hate", "dont", "don't", "anything but",
        "everything but", "all but", "anything except", "everything except", "other than",
        "rather than", "instead of", "no more", "don't want", "dont want", "do not want",
        "stay away from", "nothing like", "less of"]  # fmt: skip
_POS = ["more", "with", "want", "like", "love", "prefer", "give", "show me", "give me",
        "recommend", "i want", "i'd like", "i would like", "in the mood for", "i'm in the mood for",
        "looking for", "i'm looking for", "more of"]  # fmt: skip
_INHERIT = frozenset({"or", "nor"})
PHRASES: dict[tuple[str, ...], str] = {}
for _p in _SPLIT:
    PHRASES[tuple(_p.split())] = "split"
for _p in _NEG:
    PHRASES[tuple(_p.split())] = "neg"
for _p in _POS:
    PHRASES[tuple(_p.split())] = "pos"
MAX_PHRASE = max(len(k) for k in PHRASES)


@dataclass(frozen=True)
class Clause:
    text: str
    polarity: str  # "+" or "-"

    def to_json(self) -> dict[str, str]:
        return {"text": self.text, "polarity": self.polarity}


def normalize(prompt: str) -> str:
    """NFKC, lowercase, typographic apostrophes → ``'``."""
    s = unicodedata.normalize("NFKC", prompt).lower()
    return s.replace("\u2019", "'").replace("\u2018", "'").replace("\u02bc", "'")


def _chunks(s: str) -> list[list[str]]:
    chunks: list[list[str]] = []
    cur: list[str] = []
    for ch in s:
        if ch in SEPARATORS:
            chunks.append(cur)
            cur = []
        else:
            cur.append(ch)
    chunks.append(cur)
    out: list[list[str]] = []
    for c in chunks:
        words = []
        for raw in "".join(c).split():
            w = raw if raw in ("&", "+") else raw.strip(TRIM)
            if w:
                words.append(w)
        out.append(words)
    return out


def _parse_chunk(words: list[str], clauses: list[Clause]) -> None:
    """Step 4 of docs/clause-parser.md for one chunk; appends to ``clauses``."""
    pol = "+"
    prev_pol = "+"
    content: list[str] = []
    i = 0
    while i < len(words):
        action = None
        n = 0
        for k in range(min(MAX_PHRASE, len(words) - i), 0, -1):
            found = PHRASES.get(tuple(words[i : i + k]))
            if found is not None:
                action, n = found, k
                break
        if action is None:
            if words[i] not in FILLER:
                content.append(words[i])
            i += 1
            continue
        phrase = " ".join(words[i : i + n])
        i += n
        had_content = bool(content)
        if content:  # close (an affirm cue closes only after content, which is this case too)
            clauses.append(Clause(" ".join(content), pol))
            prev_pol = pol
            content = []
        if action == "split":
            pol = "-" if phrase == "nor" else prev_pol if phrase in _INHERIT else "+"
        elif action == "neg":
            pol = "-"
        elif had_content:  # an affirm cue after content opens a new positive clause
            pol = "+"
    if content:
        clauses.append(Clause(" ".join(content), pol))


def parse(prompt: str | None) -> list[Clause]:
    """Split a prompt into at most ``MAX_CLAUSES`` clauses, each with a polarity."""
    if not prompt:
        return []
    clauses: list[Clause] = []
    for words in _chunks(normalize(prompt)):
        _parse_chunk(words, clauses)
    return clauses[:MAX_CLAUSES]


# ---------------------------------------------------------------------------- tags


def stem(word: str) -> str:
    """Crude singular form used only for tag matching (see docs/clause-parser.md)."""
    if word.endswith("'s"):
        word = word[:-2]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def match_words(text: str) -> list[str]:
    """Words for matching: normalise, split on whitespace and ``-``, trim, stem."""
    out: list[str] = []
    for w in normalize(text).replace("-", " ").split():
        w = w.strip(TRIM)
        if w:
            out.append(stem(w))
    return out


#: a clause with no exact tag match maps to the most similar tag name at or above this cosine
TAG_MATCH_THRESHOLD = 0.45


class TagMapper:
    """Clause → catalog tags: exact (stemmed, contiguous word sequence) matches, else the single
    nearest tag name by MiniLM cosine if it reaches :data:`TAG_MATCH_THRESHOLD`."""

    def __init__(
        self,
        tags: list[str],
        tag_embeddings: torch.Tensor | None,
        threshold: float = TAG_MATCH_THRESHOLD,
    ) -> None:
        self.tags = tags
        self.tag_words = [match_words(t) for t in tags]
        self.emb = tag_embeddings
        self.threshold = threshold

    def exact(self, clause_text: str) -> list[int]:
        words = match_words(clause_text)
        hits: list[int] = []
        for j, tw in enumerate(self.tag_words):
            k = len(tw)
            if k and any(words[s : s + k] == tw for s in range(len(words) - k + 1)):
                hits.append(j)
        return hits

    def map(self, clause_text: str, clause_embedding: torch.Tensor | None) -> list[int]:
        """Tag indices (ascending) for one clause."""
        hits = self.exact(clause_text)
        if hits or self.emb is None or clause_embedding is None or not self.tags:
            return hits
        sims = self.emb @ clause_embedding
        j = int(torch.argmax(sims))
        return [j] if float(sims[j]) >= self.threshold else []
