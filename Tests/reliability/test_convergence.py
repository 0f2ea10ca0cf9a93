"""The convergence harness (Benchmarks/reliability/convergence.py) in a short version: a 3-node NATS
cluster, 2 shards x 2 `steer serve --follow` replicas and 2 `steer route --follow` routers, writers on
the same ids through both routers, 2 rounds of SIGKILL (one replica per shard and one NATS node); plus
checks that its verification detects what it must."""

from __future__ import annotations

from convergence import ID_SPACE, SHARDS, Ledger, run, shard_of, vector_for, verify_ids


def test_short_convergence_run(binary: str) -> None:
    result = run(binary, rounds=2, seed=3, writers=3, round_seconds=4.0)
    assert result["ok"], result
    assert result["acknowledged_writes"] > 50, result
    assert len(result["kills"]) == 2 and all(len(k["killed"]) == 3 for k in result["kills"])


def test_sharding_matches_the_servers_function() -> None:
    owners = [shard_of(item) for item in range(ID_SPACE)]
    assert set(owners) == set(range(SHARDS))
    assert abs(owners.count(0) - owners.count(1)) < ID_SPACE // 3


def test_verification_detects_lost_and_foreign_writes() -> None:
    ledger = Ledger()
    ledger.acked = {1: [(5, "a"), (9, "b")], 2: [(3, "c"), (4, None)], 3: [(7, "d")]}
    ledger.unknown_titles = {3: {"x"}}

    def item(title: str) -> dict[str, object]:
        return {"title": title, "vector": vector_for(title)}

    good = {1: item("b"), 3: item("x")}
    assert verify_ids(good, [1, 2, 3, 4], ledger) == []
    lost = verify_ids({1: item("a"), 3: item("d")}, [1, 2, 3], ledger)
    assert len(lost) == 1 and "lost the acknowledged sequence 9" in lost[0]
    missing = verify_ids({3: item("d")}, [1, 3], ledger)
    assert len(missing) == 1 and "id 1: missing" in missing[0]
    revived = verify_ids({1: item("b"), 2: item("c"), 3: item("d")}, [1, 2, 3], ledger)
    assert len(revived) == 1 and "id 2" in revived[0]
    foreign = verify_ids({4: item("zz")}, [4], ledger)
    assert len(foreign) == 1 and "no writer sent" in foreign[0]
    wrong_vector = verify_ids({1: {"title": "b", "vector": vector_for("a")}, 3: item("d")}, [1, 3], ledger)
    assert len(wrong_vector) == 1 and "vector of b" in wrong_vector[0]


def test_verification_accepts_any_write_of_one_batch_message() -> None:
    """Writes acknowledged with one sequence share a batch message; any of them may be the last."""
    ledger = Ledger()
    ledger.acked = {1: [(5, "a"), (5, None), (2, "old")], 2: [(7, "b"), (7, "c")]}

    def item(title: str) -> dict[str, object]:
        return {"title": title, "vector": vector_for(title)}

    assert verify_ids({1: item("a"), 2: item("b")}, [1, 2], ledger) == []
    assert verify_ids({2: item("c")}, [1, 2], ledger) == []
    assert len(verify_ids({1: item("old"), 2: item("c")}, [1, 2], ledger)) == 1
    missing = verify_ids({1: item("a")}, [1, 2], ledger)
    assert len(missing) == 1 and missing[0].startswith("id 2: missing")
