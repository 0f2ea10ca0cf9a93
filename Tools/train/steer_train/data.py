"""Datasets: loaders with line-numbered validation, the leave-one-out split.

Every loader returns a :class:`Dataset`: a catalog of items (row ``i`` of every item table is
``items[i]``), one chronological sequence of item rows per user, and the tag vocabulary used for
prompts and filters. Item ids are kept exactly as the source gives them (``int`` for MovieLens,
``str`` or ``int`` for the generic JSONL format).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

ItemId = str | int

# MovieLens genre labels as they appear in the files → the tag name we use (lowercase, readable).
_GENRE_NAME = {
    "children's": "children",
    "(no genres listed)": "",
}
#: Tags that never become prompts (they describe the data, not the content).
PROMPT_STOP_TAGS = frozenset(
    {"unknown", "in netflix queue", "imdb top 250", "bd-r", "bd-video", "dvd-video", "clv"}
)


class DataError(ValueError):
    """Invalid input data; the message starts with ``path:line:``."""


@dataclass
class Item:
    id: ItemId
    title: str
    tags: list[str]


@dataclass
class Dataset:
    name: str
    items: list[Item]
    user_ids: list[ItemId]
    sequences: list[list[int]]
    tag_vocab: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.tag_vocab:
            seen: dict[str, None] = {}
            for it in self.items:
                for t in it.tags:
                    seen.setdefault(t, None)
            self.tag_vocab = sorted(seen)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def tag_matrix(self) -> npt.NDArray[np.bool_]:
        """``[n_items, n_tags]``: item ``i`` carries tag ``tag_vocab[j]``."""
        index = {t: j for j, t in enumerate(self.tag_vocab)}
        m = np.zeros((self.n_items, len(self.tag_vocab)), dtype=np.bool_)
        for i, it in enumerate(self.items):
            for t in it.tags:
                j = index.get(t)
                if j is not None:
                    m[i, j] = True
        return m

    def prompt_tags(self, min_items: int = 1) -> list[str]:
        """Tags usable in prompts: not a stop tag, carried by at least ``min_items`` items."""
        counts = self.tag_matrix().sum(axis=0)
        return [
            t
            for t, c in zip(self.tag_vocab, counts, strict=True)
            if t not in PROMPT_STOP_TAGS and int(c) >= min_items
        ]

    def summary(self) -> str:
        n = sum(len(s) for s in self.sequences)
        return (
            f"{self.name}: {len(self.sequences)} users, {self.n_items} items, {n} interactions, "
            f"{len(self.tag_vocab)} tags"
        )


# ---------------------------------------------------------------------------- helpers


def _norm_tag(raw: str) -> str:
    t = " ".join(raw.strip().lower().split())
    return _GENRE_NAME.get(t, t)


def _lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with path.open(encoding=encoding, newline="") as fh:
        for n, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield n, line


def _int(path: Path, n: int, what: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataError(f"{path}:{n}: {what} must be an integer, got {value!r}") from None


def _float(path: Path, n: int, what: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise DataError(f"{path}:{n}: {what} must be a number, got {value!r}") from None


#: how interactions with the same timestamp are ordered: ``item`` (by item id, the default and the
#: common reference order) or ``file`` (source order, what results files written before the change used)
TIE_ORDERS = ("item", "file")


def id_key(item_id: ItemId) -> tuple[int, int, str]:
    """Sort key of an item id: integers (and strings of decimal digits, as CSV gives them) in numeric
    order, before every other string, which sort as text."""
    if isinstance(item_id, int):
        return (0, item_id, "")
    if item_id.isascii() and item_id.isdigit():
        return (0, int(item_id), "")
    return (1, 0, item_id)


def _build(
    name: str,
    items: list[Item],
    events: list[tuple[ItemId, ItemId, float, int]],
    tag_vocab: Sequence[str] = (),
    ties: str = "item",
) -> Dataset:
    """``events``: (user, item id, timestamp, source order); unknown item ids must be checked.

    Per user, interactions are ordered by timestamp; same-timestamp interactions by item id
    (:func:`id_key`) when ``ties == "item"``, by source order when ``ties == "file"``.
    """
    if ties not in TIE_ORDERS:
        raise ValueError(f"ties must be one of {TIE_ORDERS}, got {ties!r}")
    row = {str(it.id): i for i, it in enumerate(items)}
    per_user: dict[ItemId, list[tuple[float, tuple[int, int, str], int, int]]] = {}
    no_key = (0, 0, "")
    for user, item, ts, order in events:
        key = id_key(item) if ties == "item" else no_key
        per_user.setdefault(user, []).append((ts, key, order, row[str(item)]))
    users = sorted(per_user, key=lambda u: (isinstance(u, str), u if isinstance(u, int) else 0, str(u)))
    seqs: list[list[int]] = []
    for u in users:
        evs = sorted(per_user[u])
        seen: set[int] = set()
        seq: list[int] = []
        for _, _, _, r in evs:  # keep the first interaction with an item (re-ratings are rare)
            if r not in seen:
                seen.add(r)
                seq.append(r)
        seqs.append(seq)
    return Dataset(name=name, items=items, user_ids=users, sequences=seqs, tag_vocab=list(tag_vocab))


# ---------------------------------------------------------------------------- MovieLens


def load_ml100k(directory: str | Path, ties: str = "item") -> Dataset:
    """MovieLens-100K: ``u.item`` (Latin-1, ``|``-separated, 19 genre flags) and ``u.data``;
    ``ties``: see :func:`_build`."""
    d = Path(directory)
    genres_path = d / "u.genre"
    genres: list[str] = []
    if genres_path.is_file():
        for n, line in _lines(genres_path, "latin-1"):
            parts = line.split("|")
            if len(parts) != 2:
                raise DataError(f"{genres_path}:{n}: expected 'name|index'")
            genres.append(_norm_tag(parts[0]))
    else:
        genres = [
            _norm_tag(g)
            for g in [
                "unknown",
                "Action",
                "Adventure",
                "Animation",
                "Children's",
                "Comedy",
                "Crime",
                "Documentary",
                "Drama",
                "Fantasy",
                "Film-Noir",
                "Horror",
                "Musical",
                "Mystery",
                "Romance",
                "Sci-Fi",
                "Thriller",
                "War",
                "Western",
            ]
        ]
    items: list[Item] = []
    item_path = d / "u.item"
    for n, line in _lines(item_path, "latin-1"):
        f = line.split("|")
        if len(f) != 5 + len(genres):
            raise DataError(f"{item_path}:{n}: expected {5 + len(genres)} fields, got {len(f)}")
        iid = _int(item_path, n, "movie id", f[0])
        flags = f[5:]
        if any(x not in ("0", "1") for x in flags):
            raise DataError(f"{item_path}:{n}: genre flags must be 0 or 1")
        tags = [g for g, x in zip(genres, flags, strict=True) if x == "1" and g]
        items.append(Item(id=iid, title=f[1], tags=tags))
    known = {it.id for it in items}
    if len(known) != len(items):
        raise DataError(f"{item_path}: duplicate movie ids")
    events: list[tuple[ItemId, ItemId, float, int]] = []
    data_path = d / "u.data"
    for n, line in _lines(data_path, "latin-1"):
        f = line.split("\t")
        if len(f) != 4:
            raise DataError(f"{data_path}:{n}: expected 4 tab-separated fields, got {len(f)}")
        u = _int(data_path, n, "user id", f[0])
        i = _int(data_path, n, "item id", f[1])
        _float(data_path, n, "rating", f[2])
        ts = _int(data_path, n, "timestamp", f[3])
        if i not in known:
            raise DataError(f"{data_path}:{n}: unknown item id {i}")
        events.append((u, i, float(ts), n))
    vocab = [g for g in genres if g]
    return _build("ml-100k", items, events, vocab, ties=ties)


def _ml_latest_movies(path: Path) -> list[Item]:
    items: list[Item] = []
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header != ["movieId", "title", "genres"]:
            raise DataError(f"{path}:1: expected header movieId,title,genres, got {header}")
        for f in reader:
            n = reader.line_num
            if len(f) != 3:
                raise DataError(f"{path}:{n}: expected 3 fields, got {len(f)}")
            tags = [t for t in (_norm_tag(g) for g in f[2].split("|")) if t]
            items.append(Item(id=_int(path, n, "movieId", f[0]), title=f[1], tags=tags))
    return items


def load_ml_latest_small(
    directory: str | Path, tags: str = "genres", min_tag_items: int = 5, ties: str = "item"
) -> Dataset:
    """MovieLens latest-small: ``movies.csv`` (20 genres), ``ratings.csv``, ``tags.csv``.

    ``tags``: ``genres`` (item tags = genres), ``user`` (free-text user tags applied to at least
    ``min_tag_items`` movies, case-folded) or ``both``.
    """
    if tags not in ("genres", "user", "both"):
        raise ValueError("tags must be genres, user or both")
    d = Path(directory)
    items = _ml_latest_movies(d / "movies.csv")
    row = {it.id: i for i, it in enumerate(items)}
    genre_vocab = sorted({t for it in items for t in it.tags})
    user_tags: dict[int, set[str]] = {}
    if tags != "genres":
        tpath = d / "tags.csv"
        per_tag: dict[str, set[int]] = {}
        with tpath.open(encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header != ["userId", "movieId", "tag", "timestamp"]:
                raise DataError(f"{tpath}:1: expected header userId,movieId,tag,timestamp")
            for f in reader:
                n = reader.line_num
                if len(f) != 4:
                    raise DataError(f"{tpath}:{n}: expected 4 fields, got {len(f)}")
                mid = _int(tpath, n, "movieId", f[1])
                if mid not in row:
                    raise DataError(f"{tpath}:{n}: unknown movieId {mid}")
                t = _norm_tag(f[2])
                if t:
                    per_tag.setdefault(t, set()).add(mid)
        kept = sorted(t for t, ms in per_tag.items() if len(ms) >= min_tag_items)
        for t in kept:
            for mid in per_tag[t]:
                user_tags.setdefault(mid, set()).add(t)
        if tags == "user":
            for it in items:
                it.tags = sorted(user_tags.get(int(it.id), set()))
            vocab = kept
        else:
            for it in items:
                extra = sorted(user_tags.get(int(it.id), set()) - set(it.tags))
                it.tags = it.tags + extra
            vocab = genre_vocab + [t for t in kept if t not in genre_vocab]
    else:
        vocab = genre_vocab
    rpath = d / "ratings.csv"
    events: list[tuple[ItemId, ItemId, float, int]] = []
    with rpath.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header != ["userId", "movieId", "rating", "timestamp"]:
            raise DataError(f"{rpath}:1: expected header userId,movieId,rating,timestamp")
        for f in reader:
            n = reader.line_num
            if len(f) != 4:
                raise DataError(f"{rpath}:{n}: expected 4 fields, got {len(f)}")
            u = _int(rpath, n, "userId", f[0])
            mid = _int(rpath, n, "movieId", f[1])
            _float(rpath, n, "rating", f[2])
            ts = _int(rpath, n, "timestamp", f[3])
            if mid not in row:
                raise DataError(f"{rpath}:{n}: unknown movieId {mid}")
            events.append((u, mid, float(ts), n))
    suffix = "" if tags == "genres" else f"-{tags}tags"
    return _build("ml-latest-small" + suffix, items, events, vocab, ties=ties)


def load_ml1m(directory: str | Path, ties: str = "item") -> Dataset:
    """MovieLens-1M: ``movies.dat`` and ``ratings.dat`` (``::``-separated, Latin-1)."""
    d = Path(directory)
    mpath = d / "movies.dat"
    items: list[Item] = []
    for n, line in _lines(mpath, "latin-1"):
        f = line.split("::")
        if len(f) != 3:
            raise DataError(f"{mpath}:{n}: expected MovieID::Title::Genres")
        tags = [t for t in (_norm_tag(g) for g in f[2].split("|")) if t]
        items.append(Item(id=_int(mpath, n, "MovieID", f[0]), title=f[1], tags=tags))
    known = {it.id for it in items}
    rpath = d / "ratings.dat"
    events: list[tuple[ItemId, ItemId, float, int]] = []
    for n, line in _lines(rpath, "latin-1"):
        f = line.split("::")
        if len(f) != 4:
            raise DataError(f"{rpath}:{n}: expected UserID::MovieID::Rating::Timestamp")
        u = _int(rpath, n, "UserID", f[0])
        mid = _int(rpath, n, "MovieID", f[1])
        _float(rpath, n, "Rating", f[2])
        ts = _int(rpath, n, "Timestamp", f[3])
        if mid not in known:
            raise DataError(f"{rpath}:{n}: unknown MovieID {mid}")
        events.append((u, mid, float(ts), n))
    return _build("ml-1m", items, events, ties=ties)


# ---------------------------------------------------------------------------- generic format


def _json_id(path: Path, n: int, what: str, v: object) -> ItemId:
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise DataError(f"{path}:{n}: {what} must be a string or an integer")
    return v


def load_items_jsonl(path: str | Path) -> list[Item]:
    """One JSON object per line: ``{"id": str|int, "title": str, "tags": [str, ...]}``."""
    p = Path(path)
    items: list[Item] = []
    seen: set[str] = set()
    for n, line in _lines(p, "utf-8"):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{p}:{n}: invalid JSON: {e.msg}") from None
        if not isinstance(obj, dict):
            raise DataError(f"{p}:{n}: expected a JSON object")
        if "id" not in obj:
            raise DataError(f"{p}:{n}: missing field 'id'")
        iid = _json_id(p, n, "id", obj["id"])
        if str(iid) in seen:
            raise DataError(f"{p}:{n}: duplicate item id {iid!r}")
        seen.add(str(iid))
        title = obj.get("title", "")
        if not isinstance(title, str):
            raise DataError(f"{p}:{n}: title must be a string")
        raw_tags = obj.get("tags", [])
        if not isinstance(raw_tags, list) or not all(isinstance(t, str) for t in raw_tags):
            raise DataError(f"{p}:{n}: tags must be a list of strings")
        tags = list(dict.fromkeys(t for t in (_norm_tag(x) for x in raw_tags) if t))
        items.append(Item(id=iid, title=title, tags=tags))
    if not items:
        raise DataError(f"{p}: no items")
    return items


def _interactions(path: Path) -> Iterator[tuple[int, ItemId, ItemId, float]]:
    if path.suffix == ".jsonl":
        for n, line in _lines(path, "utf-8"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: invalid JSON: {e.msg}") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{n}: expected a JSON object")
            for k in ("user", "item", "timestamp"):
                if k not in obj:
                    raise DataError(f"{path}:{n}: missing field {k!r}")
            ts = obj["timestamp"]
            if isinstance(ts, bool) or not isinstance(ts, (int, float)):
                raise DataError(f"{path}:{n}: timestamp must be a number")
            yield (
                n,
                _json_id(path, n, "user", obj["user"]),
                _json_id(path, n, "item", obj["item"]),
                float(ts),
            )
    else:
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None or [h.strip() for h in header[:3]] != ["user", "item", "timestamp"]:
                raise DataError(f"{path}:1: expected header user,item,timestamp")
            for f in reader:
                n = reader.line_num
                if not f or not any(x.strip() for x in f):
                    continue
                if len(f) < 3:
                    raise DataError(f"{path}:{n}: expected user,item,timestamp")
                yield n, f[0].strip(), f[1].strip(), _float(path, n, "timestamp", f[2])


def load_generic(
    interactions: str | Path, items: str | Path, name: str = "generic", ties: str = "item"
) -> Dataset:
    """The generic format (docs in Tools/train/README.md).

    ``interactions``: ``.csv`` with header ``user,item,timestamp`` or ``.jsonl`` with objects
    ``{"user", "item", "timestamp"}``; ``items``: JSONL ``{"id", "title", "tags"}``.
    Item ids are matched as strings (CSV has no types).
    """
    cat = load_items_jsonl(items)
    known = {str(it.id) for it in cat}
    p = Path(interactions)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    events: list[tuple[ItemId, ItemId, float, int]] = []
    for n, u, i, ts in _interactions(p):
        if str(i) not in known:
            raise DataError(f"{p}:{n}: unknown item id {i!r}")
        events.append((str(u), str(i), ts, n))
    if not events:
        raise DataError(f"{p}: no interactions")
    return _build(name, cat, events, ties=ties)


# ---------------------------------------------------------------------------- SASRec's plain format


def load_sasrec_txt(path: str | Path, name: str = "amazon-video-games") -> Dataset:
    """SASRec's preprocessed files (e.g. ``Video.txt``): one ``user item`` pair per line, ids
    1-based and contiguous, each user's lines together and in time order. No item metadata: items
    get the title ``item N`` and no tags, so only the standard next-item task applies.
    """
    p = Path(path)
    seqs: list[list[int]] = []
    users: list[ItemId] = []
    first_line: dict[int, int] = {}  # user -> line of their first interaction
    pos: dict[tuple[int, int], int] = {}  # (user, item) -> line, for repeats
    max_item = 0
    seen_items: set[int] = set()
    current = -1
    for n, line in _lines(p, "utf-8"):
        f = line.split()
        if len(f) != 2:
            raise DataError(f"{p}:{n}: expected 2 whitespace-separated fields 'user item', got {len(f)}")
        u = _int(p, n, "user id", f[0])
        i = _int(p, n, "item id", f[1])
        if u < 1:
            raise DataError(f"{p}:{n}: user id must be positive, got {u}")
        if i < 1:
            raise DataError(f"{p}:{n}: item id must be positive, got {i}")
        if u != current:
            if u in first_line:
                raise DataError(
                    f"{p}:{n}: user {u} appears again; their lines must be contiguous "
                    f"(first seen on line {first_line[u]})"
                )
            first_line[u] = n
            current = u
            users.append(u)
            seqs.append([])
        if (u, i) in pos:
            continue  # a repeated (user, item) keeps the first occurrence, as _build does
        pos[(u, i)] = n
        seqs[-1].append(i - 1)
        seen_items.add(i)
        max_item = max(max_item, i)
    if not seqs:
        raise DataError(f"{p}: no interactions")
    if len(seen_items) != max_item:
        missing = min(set(range(1, max_item + 1)) - seen_items)
        raise DataError(
            f"{p}: item ids must be contiguous 1..{max_item}, but {len(seen_items)} distinct ids "
            f"appear (first missing: {missing})"
        )
    items = [Item(id=k, title=f"item {k}", tags=[]) for k in range(1, max_item + 1)]
    order = sorted(range(len(users)), key=lambda k: int(users[k]))
    return Dataset(
        name=name,
        items=items,
        user_ids=[users[k] for k in order],
        sequences=[seqs[k] for k in order],
    )


# ---------------------------------------------------------------------------- registry


def shared_data_dir() -> Path:
    """``$STEER_SHARED_DATA`` or ``<repo>/../shared/data``."""
    env = os.environ.get("STEER_SHARED_DATA")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[3]
    return repo.parent / "shared" / "data"


def load_dataset(spec: str, ties: str = "item") -> Dataset:
    """``ml-100k``, ``ml-latest-small``, ``ml-latest-small-tags`` (user tags), ``ml-1m``,
    ``amazon-video-games`` (SASRec's ``Video.txt``, no item metadata), ``synth[:seed]`` or
    ``generic:INTERACTIONS,ITEMS``; named data sets may be ``name=PATH`` (a directory for MovieLens,
    the file for ``amazon-video-games``). ``ties``: the order of same-timestamp interactions
    (:data:`TIE_ORDERS`; files without timestamps keep their order)."""
    from steer_train.synth import SynthConfig, generate

    name, _, arg = spec.partition("=")
    if name.startswith("synth"):
        seed = int(name.split(":")[1]) if ":" in name else 0
        return generate(SynthConfig(seed=seed))
    if name.startswith("generic:"):
        inter, _, items = name[len("generic:") :].partition(",")
        return load_generic(inter, items, ties=ties)
    base = shared_data_dir()
    if name == "ml-100k":
        return load_ml100k(arg or base / "ml-100k", ties=ties)
    if name == "ml-latest-small":
        return load_ml_latest_small(arg or base / "ml-latest-small", tags="genres", ties=ties)
    if name == "ml-latest-small-tags":
        return load_ml_latest_small(arg or base / "ml-latest-small", tags="user", ties=ties)
    if name == "ml-1m":
        return load_ml1m(arg or base / "ml-1m", ties=ties)
    if name == "amazon-video-games":
        return load_sasrec_txt(arg or base / "amazon-video-games-sasrec" / "Video.txt")
    raise ValueError(f"unknown dataset {spec!r}")


# ---------------------------------------------------------------------------- split


@dataclass
class EvalCase:
    user: int
    history: list[int]
    target: int


@dataclass
class Split:
    """Leave-one-out: train on ``seq[:-2]``, validate on ``seq[-2]``, test on ``seq[-1]``.

    Users with fewer than 3 interactions contribute to training only. At evaluation every item is
    ranked, except the items of the case's history.
    """

    train: list[list[int]]
    valid: list[EvalCase]
    test: list[EvalCase]


def leave_one_out(ds: Dataset) -> Split:
    train: list[list[int]] = []
    valid: list[EvalCase] = []
    test: list[EvalCase] = []
    for u, seq in enumerate(ds.sequences):
        if len(seq) < 3:
            train.append(list(seq))
            continue
        train.append(seq[:-2])
        valid.append(EvalCase(u, seq[:-2], seq[-2]))
        test.append(EvalCase(u, seq[:-1], seq[-1]))
    return Split(train=train, valid=valid, test=test)
