"""SASRec's plain ``user item`` format (the Amazon Video Games file), on tiny files written here:
the real file may not be redistributed and CI machines need not have ../shared."""

from __future__ import annotations

from pathlib import Path

import pytest

from steer_train.data import DataError, leave_one_out, load_dataset, load_sasrec_txt


def test_parses_users_in_file_order_and_time_order(tmp_path: Path) -> None:
    f = tmp_path / "Video.txt"
    # user 2 before user 1 in the file; a blank line and CRLF are tolerated; item 3 repeated by user 1
    f.write_text("2 3\n2 1\n\n1 2\r\n1 3\n1 4\n1 3\n1 1\n")
    ds = load_sasrec_txt(f)
    assert ds.name == "amazon-video-games"
    assert ds.n_items == 4 and [it.id for it in ds.items] == [1, 2, 3, 4]
    assert ds.items[1].title == "item 2" and all(it.tags == [] for it in ds.items)
    assert ds.tag_vocab == [] and ds.prompt_tags() == [] and ds.tag_matrix().shape == (4, 0)
    assert ds.user_ids == [1, 2]
    assert ds.sequences == [[1, 2, 3, 0], [2, 0]]  # rows = id - 1, file order, first repeat kept
    sp = leave_one_out(ds)
    assert [(c.history, c.target) for c in sp.test] == [([1, 2, 3], 0)]
    assert sp.train == [[1, 2], [2, 0]]


def test_registered_name_takes_a_path(tmp_path: Path) -> None:
    f = tmp_path / "v.txt"
    f.write_text("1 1\n1 2\n1 3\n")
    ds = load_dataset(f"amazon-video-games={f}")
    assert ds.summary() == "amazon-video-games: 1 users, 3 items, 3 interactions, 0 tags"


def test_default_path_is_under_shared_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEER_SHARED_DATA", str(tmp_path))
    with pytest.raises(DataError, match=r"amazon-video-games-sasrec/Video.txt: file not found"):
        load_dataset("amazon-video-games")
    (tmp_path / "amazon-video-games-sasrec").mkdir()
    (tmp_path / "amazon-video-games-sasrec" / "Video.txt").write_text("1 1\n2 1\n")
    assert load_dataset("amazon-video-games").sequences == [[0], [0]]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("1 1\n1 x\n", r"Video.txt:2: item id must be an integer, got 'x'"),
        ("1 1\n1.5 2\n", r"Video.txt:2: user id must be an integer, got '1.5'"),
        ("1 1\n1 2 3\n", r"Video.txt:2: expected 2 whitespace-separated fields 'user item', got 3"),
        ("1 1\n\n7\n", r"Video.txt:3: expected 2 whitespace-separated fields 'user item', got 1"),
        ("1 1\n0 2\n", r"Video.txt:2: user id must be positive, got 0"),
        ("1 1\n2 -3\n", r"Video.txt:2: item id must be positive, got -3"),
        (
            "1 1\n2 1\n2 2\n1 2\n",
            r"Video.txt:4: user 1 appears again; their lines must be contiguous \(first seen on line 1\)",
        ),
        ("1 1\n1 3\n", r"Video.txt: item ids must be contiguous 1..3, but 2 distinct ids appear "
                       r"\(first missing: 2\)"),
        ("\n\n", r"Video.txt: no interactions"),
    ],
)  # fmt: skip
def test_errors_name_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "Video.txt"
    f.write_text(content)
    with pytest.raises(DataError, match=message):
        load_sasrec_txt(f)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope.txt: file not found"):
        load_sasrec_txt(tmp_path / "nope.txt")
