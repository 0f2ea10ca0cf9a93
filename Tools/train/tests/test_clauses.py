from __future__ import annotations

import json

import pytest

from steer_train.clauses import TagMapper, parse, stem
from steer_train.minilm import shared_encoder

from .conftest import REPO

CASES = json.loads((REPO / "spec" / "clause_cases.json").read_text(encoding="utf-8"))


def test_spec_file_has_enough_cases() -> None:
    assert len(CASES) >= 40
    prompts = " ".join(c["prompt"].lower() for c in CASES)
    for word in ("but", "and", "no", "not", "without", "except", "avoid", "less", "more"):
        assert f" {word} " in f" {prompts} "
    assert any(c["prompt"] == "" and c["clauses"] == [] for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[repr(c["prompt"])[:40] for c in CASES])
def test_clause_cases(case: dict[str, object]) -> None:
    got = [c.to_json() for c in parse(str(case["prompt"]))]
    assert got == case["clauses"]


def test_none_prompt() -> None:
    assert parse(None) == []


def test_stem() -> None:
    assert [stem(w) for w in ["comedies", "westerns", "children's", "class", "sci", "dramas"]] == [
        "comedy", "western", "children", "class", "sci", "drama"
    ]  # fmt: skip


def test_tag_mapping() -> None:
    tags = ["action", "children", "comedy", "film-noir", "horror", "romance", "sci-fi", "war"]
    enc = shared_encoder()
    mapper = TagMapper(tags, enc.encode(tags))

    def m(text: str) -> list[str]:
        return [tags[j] for j in mapper.map(text, enc.encode([text])[0])]

    assert m("romantic comedies") == ["comedy"]
    assert m("film noir") == ["film-noir"]
    assert m("children's") == ["children"]
    assert m("sci-fi war") == ["sci-fi", "war"]
    assert m("scary") == ["horror"]
    assert m("twist ending") == []
