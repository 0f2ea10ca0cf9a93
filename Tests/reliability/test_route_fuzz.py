"""The protocol fuzzer's cases (Benchmarks/reliability/fuzz.py) against `steer route` in front of two
shard servers: every case kind, then random ones; the router must answer every line with a documented
error or `ok`, never `internal`, stay alive and keep answering fresh connections, and the shards must
stay alive too."""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path

from fuzz import CASES, DIMENSION, CaseFailure, Context, fresh_ping
from harness import DEFAULT_TOKEN, Connection, ConnectionBroken, Router, Server


def test_fuzz_cases_through_the_router_find_no_crash_hang_or_internal_error(binary: str) -> None:
    workdir = tempfile.mkdtemp(prefix="steer-route-fuzz-")
    arguments = [
        "--dimension",
        str(DIMENSION),
        "--admin-token",
        DEFAULT_TOKEN,
        "--public-reads",
        "true",
        "--sync-writes",
        "false",
    ]
    shards = [Server(binary, str(Path(workdir) / f"shard{index}"), arguments) for index in range(2)]
    router = Router(
        binary,
        str(Path(workdir) / "router.log"),
        [flag for shard in shards for flag in ("--shard", f"127.0.0.1:{shard.port}")]
        + ["--max-connections", "48", "--health-interval-ms", "200"],
    )
    try:
        with Connection(router.port) as connection:
            stats = connection.call({"op": "stats"})
        assert stats["role"] == "router"
        limits = stats["server"]["limits"]
        rng = random.Random(9)
        context = Context(
            router.port, rng, int(limits["max_line_bytes"]), 10.0, 0.1, int(limits["max_connections"])
        )
        names = list(CASES)
        weights = [CASES[name][0] for name in names]
        violations: list[str] = []
        for done in range(len(names) + 120):
            name = names[done] if done < len(names) else rng.choices(names, weights)[0]
            try:
                CASES[name][1](context)
                fresh_ping(context)
            except CaseFailure as failure:
                violations.append(f"case {done} ({name}): {failure.kind}: {failure.detail[:300]}")
            except (OSError, ConnectionBroken) as error:
                violations.append(f"case {done} ({name}): client error {error!r}")
            assert router.alive(), f"router exited after case {done} ({name}): {router.stderr_tail()}"
        assert violations == []
        assert all(shard.alive() for shard in shards)
        assert context.responses.get("ok", 0) > 0 and context.responses.get("parse_error", 0) > 0
        assert "internal" not in context.responses
        with Connection(router.port) as connection:
            final = connection.call({"op": "stats"})
        assert final["unavailable_shards"] == 0
        assert router.terminate() == 0
    finally:
        for process in [router, *shards]:
            if process.alive():
                process.kill()
        shutil.rmtree(workdir, ignore_errors=True)
