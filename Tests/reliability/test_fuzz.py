"""The protocol fuzzer (Benchmarks/reliability/fuzz.py) in a short CI version, plus checks of its
response checks."""

from __future__ import annotations

import random

import pytest

from fuzz import (
    CASES,
    DIMENSION,
    CaseFailure,
    Context,
    catalog_tags,
    check_get_answer,
    check_hits,
    check_line,
    run,
    search_codes,
)
from harness import unused_log

HEAVY_KINDS = {"large_k", "heavy_filter", "long_array", "wide_object", "timeouts"}


def test_short_fuzz_run_finds_no_crash_hang_or_bad_answer(binary: str) -> None:
    result = run(binary, seconds=75, cases=600, seed=5, scale=0.2, max_rss_mib=512, log=unused_log)
    assert result["violations"] == []
    assert result["crashes"] == 0 and result["hangs"] == 0
    assert result["cases"] == 600
    assert set(result["cases_by_kind"]) == set(CASES)
    assert set(CASES) >= HEAVY_KINDS
    assert all(result["cases_by_kind"][kind] >= 5 for kind in HEAVY_KINDS), result["cases_by_kind"]
    assert result["catalog"]["items"] >= 10_000 and result["catalog"]["dimension"] == 64
    assert result["largest_answer_bytes"] > 100_000 and result["answers_over_100kb"] > 0
    answers = result["answers"]
    assert answers.get("parse_error", 0) > 0 and answers.get("ok", 0) > 0
    assert answers.get("too_large", 0) > 0 and "internal" not in answers
    assert result["rss"]["max_kib"] is not None and result["rss"]["max_kib"] < 512 * 1024


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (b"not json", "unreadable_response"),
        (b"[1]", "malformed_response"),
        (b'{"id":1}', "malformed_response"),
        (b'{"ok":false,"error":{"code":"internal","message":"boom"}}', "internal_error"),
        (b'{"ok":false,"error":{"code":"oops","message":"?"}}', "unknown_error_code"),
    ],
)
def test_bad_answers_are_violations(line: bytes, kind: str) -> None:
    with pytest.raises(CaseFailure) as caught:
        check_line(offline_context(), line)
    assert caught.value.kind == kind


def offline_context(catalog: int = 0, **limits: int) -> Context:
    return Context(
        port=0,
        rng=random.Random(1),
        max_line_bytes=1024,
        hang_timeout=1.0,
        scale=1.0,
        max_connections=16,
        catalog=catalog,
        limits=dict(limits),
    )


def test_answers_over_max_response_bytes_are_violations_and_sizes_are_recorded() -> None:
    context = offline_context(max_response_bytes=200)
    check_line(context, b'{"ok":true,"pad":"' + b"x" * 150 + b'"}')
    assert context.largest_answer == 170
    with pytest.raises(CaseFailure) as caught:
        check_line(context, b'{"ok":true,"pad":"' + b"x" * 200 + b'"}')
    assert caught.value.kind == "answer_too_long"


def hit(ident: str, score: float, tags: list[str]) -> dict[str, object]:
    return {"id": ident, "score": score, "tags": tags}


@pytest.mark.parametrize(
    ("hits", "k", "search_filter", "kind"),
    [
        ([hit("c1", 2, ["all"]), hit("c2", 1, ["all"])], 1, None, "bad_hits"),
        ([hit("c1", 2, ["all"]), hit("c1", 1, ["all"])], 5, None, "duplicate_hits"),
        ([hit("c1", 1, ["all"]), hit("c2", 2, ["all"])], 5, None, "hit_order"),
        ([hit("c1", 2, ["g1"])], 5, {"tags_any": ["g2"]}, "filter_violated"),
        ([hit("c1", 2, ["g1"])], 5, {"tags_none": ["g1"]}, "filter_violated"),
        ([hit("c1", 2, ["g1"])], 5, {"tag_groups": [["g1"], ["h2"]]}, "filter_violated"),
        ([hit("c1", 2, catalog_tags(1))], 5, {"tags_any": ["g1"]}, "filter_hit_count"),  # 10 items match
    ],
)
def test_wrong_hit_lists_are_violations(
    hits: list[dict[str, object]], k: int, search_filter: dict[str, list[object]] | None, kind: str
) -> None:
    with pytest.raises(CaseFailure) as caught:
        check_hits(offline_context(catalog=100), hits, k, search_filter, "query 0")
    assert caught.value.kind == kind


def test_right_hit_lists_pass() -> None:
    context = offline_context(catalog=100)
    matching = [hit(f"c{n}", 100 - n, catalog_tags(n)) for n in range(100) if n % 10 == 1]
    check_hits(context, matching, 10, {"tags_any": ["g1"]}, "query 0")
    check_hits(context, matching[:2], 5, {"tags_any": ["g1"], "tag_groups": [["h1", "h11"]]}, "query 0")
    check_hits(context, [], 5, {"tags_any": ["zz1"]}, "query 0")


def test_get_answers_are_checked() -> None:
    context = offline_context(catalog=100)
    item = {"id": "c3", "tags": catalog_tags(3), "vector": [0.0] * DIMENSION}
    check_get_answer(context, {"ok": True, "items": [item], "missing": ["x"]}, ["c3", "x", "c3"])
    for response, kind in [
        ({"ok": True, "items": [], "missing": ["x"]}, "bad_get"),
        ({"ok": True, "items": [], "missing": ["c3", "x"]}, "catalog_item_missing"),
        ({"ok": True, "items": [dict(item, tags=["all"])], "missing": ["x"]}, "bad_get"),
        ({"ok": True, "items": [dict(item, vector=[0.0])], "missing": ["x"]}, "bad_get"),
    ]:
        with pytest.raises(CaseFailure) as caught:
            check_get_answer(context, response, ["c3", "x", "c3"])
        assert caught.value.kind == kind


def test_search_codes_follow_the_cost_model() -> None:
    context = offline_context(catalog=10_000)
    assert search_codes(context, 262, 1000, None, None, None) == {"ok", "too_large", "deadline_exceeded"}
    assert search_codes(context, 263, 1000, None, None, None) == {"too_large"}  # 263 000 work units
    assert search_codes(context, 64, 10, 4097, None, None) == {"too_large"}
    assert search_codes(context, 65, 10, 4096, None, None) == {"too_large"}  # 266 240 work units
    assert search_codes(context, 1, 10, 0, None, None) == {"invalid_request"}
    assert search_codes(context, 1, 1001, None, None, None) == {"too_large"}
    assert search_codes(context, 1, 10, None, None, 2**63) == {"invalid_request"}
    assert search_codes(context, 1, 10, None, None, 60_001) == {"too_large"}
    assert search_codes(context, 1, 10, None, None, 1) == {"ok", "deadline_exceeded"}
    small = offline_context(catalog=10_000, max_response_bytes=1 << 20)
    assert search_codes(small, 20, 1000, None, None, None) == {"too_large", "deadline_exceeded"}


def test_documented_errors_are_counted() -> None:
    context = offline_context()
    check_line(context, b'{"ok":false,"error":{"code":"too_large","message":"x"}}')
    check_line(context, b'{"ok":false,"error":{"code":"deadline_exceeded","message":"x"}}')
    check_line(context, b'{"id":2,"ok":true}')
    assert context.responses == {"too_large": 1, "deadline_exceeded": 1, "ok": 1}
