"""Seeded synthetic data: a readable catalog with multi-label tags and Zipf popularity, and users
whose sequences follow their tag preferences with occasional intent shifts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from steer_train.data import Dataset, Item

TAGS = [
    "comedy", "horror", "sci-fi", "romance", "thriller", "drama", "action", "animation",
    "documentary", "fantasy", "mystery", "western", "musical", "crime", "war", "adventure",
]  # fmt: skip

_ADJ = [
    "Silent", "Crimson", "Hidden", "Last", "Broken", "Golden", "Midnight", "Frozen", "Wild",
    "Lonely", "Electric", "Forgotten", "Burning", "Distant", "Secret", "Velvet", "Iron", "Hollow",
    "Restless", "Bright", "Dark", "Lucky", "Savage", "Quiet", "Endless", "Paper", "Glass", "Rusty",
    "Wandering", "Stolen", "Falling", "Northern", "Sunken", "Painted", "Bitter", "Gentle",
]  # fmt: skip
_NOUN = [
    "Harbor", "Kingdom", "Signal", "Garden", "Horizon", "Mirror", "Station", "River", "Empire",
    "Dream", "Shadow", "Voyage", "Orchard", "Machine", "Letter", "Island", "Engine", "Forest",
    "Crown", "Circus", "Planet", "Witness", "Highway", "Lantern", "Canyon", "Tide", "Citadel",
    "Melody", "Frontier", "Promise", "Storm", "Village", "Labyrinth", "Comet", "Bridge", "Secret",
]  # fmt: skip


@dataclass
class SynthConfig:
    seed: int = 0
    n_items: int = 400
    n_users: int = 600
    min_len: int = 12
    max_len: int = 60
    zipf_a: float = 0.9
    #: probability per step of an intent shift to a tag outside the user's preferences
    shift_prob: float = 0.08
    #: probability per step of moving to another of the user's preferred tags
    drift_prob: float = 0.15
    pref_alpha: float = 0.25


def generate(cfg: SynthConfig) -> Dataset:
    rng = np.random.default_rng(cfg.seed)
    n_tags = len(TAGS)
    tag_weight = rng.dirichlet(np.full(n_tags, 6.0))
    titles: list[str] = []
    used: set[str] = set()
    combos = [(a, b) for a in _ADJ for b in _NOUN if a != b]
    order = rng.permutation(len(combos))
    k = 0
    while len(titles) < cfg.n_items:
        a, b = combos[int(order[k % len(combos)])]
        suffix = "" if k < len(combos) else f" {k // len(combos) + 1}"
        t = f"The {a} {b}{suffix}"
        k += 1
        if t not in used:
            used.add(t)
            titles.append(t)
    items: list[Item] = []
    item_tags: list[set[int]] = []
    for i in range(cfg.n_items):
        n_t = 1 + int(rng.random() < 0.55) + int(rng.random() < 0.2)
        tags = rng.choice(n_tags, size=n_t, replace=False, p=tag_weight)
        tset = {int(x) for x in tags}
        item_tags.append(tset)
        items.append(Item(id=i + 1, title=titles[i], tags=[TAGS[t] for t in sorted(tset)]))
    ranks = rng.permutation(cfg.n_items) + 1
    pop = 1.0 / ranks.astype(np.float64) ** cfg.zipf_a
    by_tag = [np.array([i for i in range(cfg.n_items) if t in item_tags[i]]) for t in range(n_tags)]

    seqs: list[list[int]] = []
    for _ in range(cfg.n_users):
        prefs = rng.dirichlet(np.full(n_tags, cfg.pref_alpha))
        length = min(int(rng.integers(cfg.min_len, cfg.max_len + 1)), cfg.n_items // 2)
        cur = int(rng.choice(n_tags, p=prefs))
        seen: set[int] = set()
        seq: list[int] = []
        while len(seq) < length:
            r = rng.random()
            if r < cfg.shift_prob:
                cur = int(rng.integers(n_tags))
            elif r < cfg.shift_prob + cfg.drift_prob:
                cur = int(rng.choice(n_tags, p=prefs))
            cands = np.array([i for i in by_tag[cur] if int(i) not in seen], dtype=np.int64)
            if len(cands) == 0:
                cur = int(rng.integers(n_tags))
                continue
            w = pop[cands]
            pick = int(cands[int(rng.choice(len(cands), p=w / w.sum()))])
            seen.add(pick)
            seq.append(pick)
        seqs.append(seq)
    return Dataset(
        name=f"synth-{cfg.seed}",
        items=items,
        user_ids=[f"u{u + 1}" for u in range(cfg.n_users)],
        sequences=seqs,
        tag_vocab=list(TAGS),
    )


def write_generic(ds: Dataset, out: str | Path) -> tuple[Path, Path]:
    """Write ``interactions.csv`` (user,item,timestamp) and ``items.jsonl`` in the generic format."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    inter = d / "interactions.csv"
    with inter.open("w", encoding="utf-8") as fh:
        fh.write("user,item,timestamp\n")
        for u, seq in zip(ds.user_ids, ds.sequences, strict=True):
            for t, r in enumerate(seq):
                fh.write(f"{u},{ds.items[r].id},{1_700_000_000 + 60 * t}\n")
    items = d / "items.jsonl"
    with items.open("w", encoding="utf-8") as fh:
        for it in ds.items:
            fh.write(json.dumps({"id": it.id, "title": it.title, "tags": it.tags}) + "\n")
    return inter, items
