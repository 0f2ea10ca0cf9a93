from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from steer_train.data import (
    DataError,
    leave_one_out,
    load_generic,
    load_ml1m,
    load_ml100k,
    load_ml_latest_small,
)
from steer_train.synth import TAGS, SynthConfig, generate, write_generic


def test_synth_is_seeded_and_readable() -> None:
    a = generate(SynthConfig(seed=3, n_users=50, n_items=80))
    b = generate(SynthConfig(seed=3, n_users=50, n_items=80))
    c = generate(SynthConfig(seed=4, n_users=50, n_items=80))
    assert a.sequences == b.sequences and a.sequences != c.sequences
    assert all(it.title.startswith("The ") for it in a.items)
    assert len({it.title for it in a.items}) == len(a.items)
    assert all(1 <= len(it.tags) <= 3 and set(it.tags) <= set(TAGS) for it in a.items)
    assert all(len(set(s)) == len(s) for s in a.sequences)  # no repeats within a user


def test_synth_sequences_follow_tag_preferences() -> None:
    ds = generate(SynthConfig(seed=0, n_users=100))
    # consecutive items share a tag far more often than random pairs would
    share = tot = 0
    for s in ds.sequences:
        for a, b in itertools.pairwise(s):
            tot += 1
            share += bool(set(ds.items[a].tags) & set(ds.items[b].tags))
    assert share / tot > 0.6


def test_generic_roundtrip(tmp_path: Path) -> None:
    ds = generate(SynthConfig(seed=1, n_users=20, n_items=50))
    inter, items = write_generic(ds, tmp_path)
    back = load_generic(inter, items)
    assert [it.title for it in back.items] == [it.title for it in ds.items]
    assert sorted(map(len, back.sequences)) == sorted(map(len, ds.sequences))


def test_generic_jsonl_interactions(tmp_path: Path) -> None:
    (tmp_path / "items.jsonl").write_text(
        '{"id": "a", "title": "A", "tags": ["Comedy"]}\n{"id": 2, "title": "B", "tags": []}\n'
    )
    rows = [{"user": 1, "item": "a", "timestamp": 2}, {"user": 1, "item": 2, "timestamp": 1}]
    (tmp_path / "i.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = load_generic(tmp_path / "i.jsonl", tmp_path / "items.jsonl")
    assert ds.sequences == [[1, 0]]
    assert ds.items[0].tags == ["comedy"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"id": 1, "title": "A"}\n{"id": 1}\n', "items.jsonl:2: duplicate item id"),
        ('{"id": 1}\nnot json\n', "items.jsonl:2: invalid JSON"),
        ('{"id": 1, "tags": "x"}\n', "items.jsonl:1: tags must be a list"),
        ('{"title": "x"}\n', "items.jsonl:1: missing field 'id'"),
    ],
)
def test_items_errors_have_line_numbers(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "items.jsonl").write_text(content)
    (tmp_path / "i.csv").write_text("user,item,timestamp\n1,1,1\n")
    with pytest.raises(DataError, match=message):
        load_generic(tmp_path / "i.csv", tmp_path / "items.jsonl")


def test_interaction_errors_have_line_numbers(tmp_path: Path) -> None:
    (tmp_path / "items.jsonl").write_text('{"id": 1}\n')
    (tmp_path / "i.csv").write_text("user,item,timestamp\n1,1,1\n1,9,2\n")
    with pytest.raises(DataError, match=r"i.csv:3: unknown item id '9'"):
        load_generic(tmp_path / "i.csv", tmp_path / "items.jsonl")
    (tmp_path / "i.csv").write_text("user,item,timestamp\n1,1,soon\n")
    with pytest.raises(DataError, match=r"i.csv:2: timestamp must be a number"):
        load_generic(tmp_path / "i.csv", tmp_path / "items.jsonl")


def test_ml100k_bad_line(tmp_path: Path) -> None:
    (tmp_path / "u.item").write_text("1|T|d||u" + "|0" * 19 + "\n", encoding="latin-1")
    (tmp_path / "u.data").write_text("1\t1\t5\t10\n1\t2\t5\n", encoding="latin-1")
    with pytest.raises(DataError, match=r"u.data:2: expected 4 tab-separated fields"):
        load_ml100k(tmp_path)


def test_leave_one_out() -> None:
    ds = generate(SynthConfig(seed=0, n_users=10, n_items=60))
    ds.sequences.append([1, 2])
    sp = leave_one_out(ds)
    assert len(sp.test) == 10 and sp.train[-1] == [1, 2]
    for case, seq in zip(sp.test, ds.sequences, strict=False):
        assert case.history == seq[:-1] and case.target == seq[-1]
        assert sp.train[case.user] == seq[:-2]
        assert sp.valid[case.user].target == seq[-2]


def test_ml100k_format(tmp_path: Path) -> None:
    """The u.item / u.data / u.genre formats (Latin-1, '|' and tab separated), on a small file of the
    real layout: MovieLens itself may not be redistributed, and CI machines need not have ../shared."""
    genres = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
              "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
              "Romance", "Sci-Fi", "Thriller", "War", "Western"]  # fmt: skip
    (tmp_path / "u.genre").write_text(
        "".join(f"{g}|{i}\n" for i, g in enumerate(genres)) + "\n", encoding="latin-1"
    )

    CHILDREN = "Children's"

    def flags(*on: str) -> str:
        return "|".join("1" if g in on else "0" for g in genres)

    (tmp_path / "u.item").write_bytes(
        (
            f"1|Toy Story (1995)|01-Jan-1995||http://x|{flags('Animation', CHILDREN, 'Comedy')}\n"
            f"2|Caf\xe9 Noir (1996)|01-Jan-1996||http://y|{flags('Film-Noir', 'Horror')}\n"
            f"3|Nothing (1997)|01-Jan-1997||http://z|{flags('unknown')}\n"
        ).encode("latin-1")
    )
    (tmp_path / "u.data").write_text(
        "7\t2\t4\t200\n7\t1\t5\t100\n9\t3\t3\t50\n7\t3\t1\t300\n", encoding="latin-1"
    )
    ds = load_ml100k(tmp_path)
    assert ds.n_items == 3 and sum(map(len, ds.sequences)) == 4
    assert ds.items[0].title == "Toy Story (1995)" and ds.items[1].title == "Café Noir (1996)"
    assert ds.items[0].tags == ["animation", "children", "comedy"]
    assert len(ds.tag_vocab) == 19 and "unknown" not in ds.prompt_tags()
    assert sorted(len(s) for s in ds.sequences) == [1, 3]  # per user, ordered by timestamp
    assert [0, 1, 2] in ds.sequences


def test_ml_latest_small_format(tmp_path: Path) -> None:
    """movies.csv (genres, '(no genres listed)'), ratings.csv and tags.csv with free-text user tags kept
    when applied to at least `min_tag_items` movies."""
    movies = ["movieId,title,genres", '1,"Toy Story (1995)",Adventure|Animation|Children',
              "2,Heat (1995),Action|Crime|Thriller", "3,Unlisted (2001),(no genres listed)"]  # fmt: skip
    (tmp_path / "movies.csv").write_text("\n".join(movies) + "\n", encoding="utf-8")
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,2,4.0,20\n1,1,3.5,10\n2,3,5.0,30\n", encoding="utf-8"
    )
    (tmp_path / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n1,1,Dark Comedy,1\n1,2,dark comedy,2\n2,3,twist ending,3\n"
        "2,1,In Netflix queue,4\n2,2,in netflix queue,5\n",
        encoding="utf-8",
    )
    ds = load_ml_latest_small(tmp_path)
    assert len(ds.sequences) == 2 and ds.n_items == 3 and sum(map(len, ds.sequences)) == 3
    assert "children" in ds.tag_vocab and "(no genres listed)" not in ds.tag_vocab
    tagged = load_ml_latest_small(tmp_path, tags="user", min_tag_items=2)
    assert "dark comedy" in tagged.tag_vocab and "twist ending" not in tagged.tag_vocab
    assert "in netflix queue" not in tagged.prompt_tags()
    (tmp_path / "tags.csv").write_text("userId,movieId,tag,timestamp\n1,9,x,1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"tags.csv:2: unknown movieId 9"):
        load_ml_latest_small(tmp_path, tags="user")


def test_ml1m_format(tmp_path: Path) -> None:
    (tmp_path / "movies.dat").write_bytes(
        "1::Caf\xe9 (1995)::Comedy|Children's\n2::B (1996)::Horror\n".encode("latin-1")
    )
    (tmp_path / "ratings.dat").write_text("1::2::5::20\n1::1::4::10\n2::1::3::5\n")
    ds = load_ml1m(tmp_path)
    assert ds.items[0].title == "Café (1995)" and ds.items[0].tags == ["comedy", "children"]
    assert ds.sequences == [[0, 1], [0]]
    (tmp_path / "ratings.dat").write_text("1::2::5::20\n1::7::4::10\n")
    with pytest.raises(DataError, match=r"ratings.dat:2: unknown MovieID 7"):
        load_ml1m(tmp_path)


def test_same_second_interactions_are_ordered_by_item_id(tmp_path: Path) -> None:
    """Ties in time: (timestamp, item id), numeric for numeric ids; ``ties="file"`` keeps the source
    order (what the results files written before the change used)."""
    (tmp_path / "items.jsonl").write_text("".join(f'{{"id": {i}}}\n' for i in (10, 9, 2, 30)))
    # user 1: items 10, 9 and 2 at the same second, in file order 10, 9, 2; 30 earlier
    (tmp_path / "i.csv").write_text("user,item,timestamp\n1,10,5\n1,9,5\n1,30,1\n1,2,5\n")
    ds = load_generic(tmp_path / "i.csv", tmp_path / "items.jsonl")
    ids = [ds.items[r].id for r in ds.sequences[0]]
    assert ids == [30, 2, 9, 10]  # numeric, not text order ("10" < "2" < "9")
    by_file = load_generic(tmp_path / "i.csv", tmp_path / "items.jsonl", ties="file")
    assert [by_file.items[r].id for r in by_file.sequences[0]] == [30, 10, 9, 2]
    with pytest.raises(ValueError, match="ties must be one of"):
        load_generic(tmp_path / "i.csv", tmp_path / "items.jsonl", ties="random")
    # the MovieLens loaders too: u.data lists user 7's same-second items 3 then 1
    genres = "".join(f"g{i}|{i}\n" for i in range(19))
    (tmp_path / "u.genre").write_text(genres, encoding="latin-1")
    (tmp_path / "u.item").write_text(
        "".join(f"{i}|T{i}|d||u|" + "|".join(["0"] * 19) + "\n" for i in (1, 2, 3)), encoding="latin-1"
    )
    (tmp_path / "u.data").write_text("7\t3\t4\t100\n7\t1\t5\t100\n7\t2\t5\t50\n", encoding="latin-1")
    assert load_ml100k(tmp_path).sequences == [[1, 0, 2]]
    assert load_ml100k(tmp_path, ties="file").sequences == [[1, 2, 0]]
