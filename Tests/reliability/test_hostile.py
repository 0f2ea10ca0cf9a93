"""The hostile-client suite (Benchmarks/reliability/hostile.py) under pytest: every attack case against a
live `steer serve` and a live `steer route` over two shards, with a well-behaved client running beside
it; see docs/security.md. Each case fails on a wrong or late answer to the attacker, a failed or slow
answer to the well-behaved client, a process over the memory bound or a dead process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hostile import CASES, GoodClient, Target, acknowledged_writes_present, attacked, run_case

KINDS = ["server", "router"]


@pytest.fixture(scope="module", params=KINDS)
def attacked_target(request: pytest.FixtureRequest, binary: str) -> Iterator[tuple[Target, GoodClient]]:
    with attacked(binary, request.param) as pair:
        yield pair
        target, good = pair
        count, missing = acknowledged_writes_present(target, good)
        assert count > 0, "the well-behaved client had no upsert acknowledged"
        assert missing == [], f"acknowledged writes lost on the {target.kind}: {missing[:10]}"


def test_catalogue_has_at_least_30_cases() -> None:
    assert len({case.name for case in CASES}) == len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_attack(attacked_target: tuple[Target, GoodClient], case) -> None:
    target, good = attacked_target
    result = run_case(case, target, good)
    assert result.problems == [], f"{target.kind} / {case.name}: {result.problems}"
