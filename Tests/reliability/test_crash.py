"""The crash harness (Benchmarks/reliability/crash.py) in a short CI version, plus checks that its
verification does detect lost writes and half-applied batches."""

from __future__ import annotations

import random
import shutil
import tempfile
import threading
from pathlib import Path

import pytest
from swap_crash import check_restart as swap_check_restart
from swap_crash import run as swap_run
from swap_crash import server_arguments as swap_server_arguments

from builder_crash import run as builder_run
from crash import Item, PendingWrite, Shared, Writer, float32_vector, run, unpack, verify
from harness import DEFAULT_TOKEN, Connection, Server, unused_log

DIMENSION = 4


def test_short_crash_run_loses_nothing(binary: str) -> None:
    result = run(
        binary,
        rounds=8,
        writers=3,
        readers=1,
        keys_per_writer=32,
        dimension=DIMENSION,
        max_run=0.6,
        graceful_every=4,
        seed=8,
        log=unused_log,
    )
    assert result["violations"] == []
    assert result["sigkills"] == 6 and result["sigterms"] == 2
    assert result["acknowledged"]["upsert_batches"] > 0
    assert result["checks"]["stats"] == 8


def test_verification_detects_lost_and_half_applied_writes(binary: str) -> None:
    workdir = tempfile.mkdtemp(prefix="steer-crash-test-")
    server = Server(
        binary,
        str(Path(workdir) / "data"),
        [
            "--dimension",
            str(DIMENSION),
            "--metric",
            "l2",
            "--admin-token",
            DEFAULT_TOKEN,
            "--public-reads",
            "true",
        ],
    )
    try:
        rng = random.Random(3)
        writer = Writer(0, ["a", "b", "c", 4], DIMENSION, 4, seed=1)
        stored = Item("batch1", ("batch-batch1",), float32_vector(rng, DIMENSION))
        half = Item("batch2", ("batch-batch2",), float32_vector(rng, DIMENSION))
        with Connection(server.port) as connection:
            for key, item in (("a", stored), ("b", half)):
                response = connection.call(
                    {
                        "op": "upsert",
                        "token": DEFAULT_TOKEN,
                        "items": [
                            {
                                "id": key,
                                "vector": unpack(item.vector),
                                "title": item.title,
                                "tags": list(item.tags),
                            }
                        ],
                    }
                )
                assert response["ok"] is True
        # "a" is acknowledged and present; 4 is "acknowledged" but was never written (lost);
        # the pending batch2 covers "b" (present) and "c" (absent): half applied.
        writer.model = {"a": stored, 4: stored}
        writer.pending = PendingWrite("upsert", "batch2", {"b": half, "c": half})
        shared = Shared(port=server.port, stop=threading.Event())
        verify(server, [writer], shared, 1, DIMENSION, rng, exact_index=True)
        kinds = sorted(violation["kind"] for violation in shared.violations)
        assert kinds == ["half_applied_batch", "lost_acknowledged_write"], shared.violations
        lost = next(v for v in shared.violations if v["kind"] == "lost_acknowledged_write")
        assert lost["id"] == 4
    finally:
        server.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def test_killed_index_builds_leave_no_corrupt_generation(binary: str) -> None:
    index_binary = str(Path(binary).with_name("steer-index"))
    if not Path(index_binary).is_file():
        pytest.fail(
            f"steer-index not found beside {binary}: build every product (swift build)", pytrace=False
        )
    result = builder_run(binary, index_binary, rounds=8, items=4000, dimension=16, seed=3, log=unused_log)
    assert result["violations"] == []
    assert result["complete_generations"] >= 1  # the uninterrupted calibration build at least
    assert result["rounds"] == 8


def test_short_swap_crash_run_serves_no_damaged_generation_and_loses_nothing(binary: str) -> None:
    index_binary = str(Path(binary).with_name("steer-index"))
    result = swap_run(binary, index_binary, rounds=5, items=3000, dimension=8, seed=4, log=unused_log)
    assert result["violations"] == []
    outcomes = result["outcomes"]
    assert outcomes["swap_acknowledged"] + outcomes["swap_refused"] + outcomes["killed_before_answer"] == 5
    assert outcomes["switched_before_answer"] <= outcomes["killed_before_answer"]
    assert outcomes["damaged_targets"] >= 1
    assert sum(result["served_after_restart"].values()) == 5
    assert "gen-damaged" not in result["served_after_restart"]
    assert result["acknowledged_writes_checked"] > 0


def test_swap_restart_check_detects_lost_writes_and_wrong_generations(binary: str) -> None:
    workdir = tempfile.mkdtemp(prefix="steer-swap-check-")
    data = str(Path(workdir) / "data")
    try:
        server = Server(binary, data, swap_server_arguments(DIMENSION))
        server.terminate()
        violations: list[dict[str, object]] = []
        never_written = [("ghost", [0.5] * DIMENSION)]
        served, _ = swap_check_restart(
            binary, data, DIMENSION, 1, "gen-a", "gen-b", {"ok": True}, never_written, violations
        )
        assert served == "g1"
        kinds = {violation["kind"] for violation in violations}
        assert kinds == {
            "unexpected_generation",
            "acknowledged_swap_lost",
            "acknowledged_write_lost",
            "acknowledged_write_not_searchable",
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
