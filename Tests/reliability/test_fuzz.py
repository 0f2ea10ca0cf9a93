"""The protocol fuzzer (Benchmarks/reliability/fuzz.py) in a short CI version, plus checks of its
response checks."""

from __future__ import annotations

import random

import pytest

from fuzz import CASES, CaseFailure, Context, check_line, run
from harness import unused_log


def test_short_fuzz_run_finds_no_crash_hang_or_bad_answer(binary: str) -> None:
    result = run(binary, seconds=60, cases=400, seed=5, scale=0.2, max_rss_mib=512, log=unused_log)
    assert result["violations"] == []
    assert result["crashes"] == 0 and result["hangs"] == 0
    assert result["cases"] == 400
    assert set(result["cases_by_kind"]) == set(CASES)
    assert result["answers"].get("parse_error", 0) > 0 and result["answers"].get("ok", 0) > 0
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
    context = Context(
        port=0, rng=random.Random(1), max_line_bytes=1024, hang_timeout=1.0, scale=1.0, max_connections=16
    )
    with pytest.raises(CaseFailure) as caught:
        check_line(context, line)
    assert caught.value.kind == kind


def test_documented_errors_are_counted() -> None:
    context = Context(
        port=0, rng=random.Random(1), max_line_bytes=1024, hang_timeout=1.0, scale=1.0, max_connections=16
    )
    check_line(context, b'{"ok":false,"error":{"code":"too_large","message":"x"}}')
    check_line(context, b'{"id":2,"ok":true}')
    assert context.responses == {"too_large": 1, "ok": 1}
