"""`steer-bench run --batch N` (one `vectors` request per N queries, recall per query) and
`steer-bench floor` (the bare TCP round trip of search-sized lines), on a tiny exact set."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from test_hdf5_input import binaries, run_bench, write_set


def test_a_batched_run_scores_every_query_of_every_request(tmp_path: Path) -> None:
    data = tmp_path / "tiny.hdf5"
    write_set(data, "euclidean", q=25)
    # 10 queries per request out of 25: most requests wrap around to the first queries.
    done = run_bench(data, tmp_path / "r.json", ("--batch", "10"))
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["settings"]["batch"] == 10
    level = report["levels"][0]
    assert level["errors"] == 0 and level["requests"] > 0
    # Flat is exact: a query scored against another query's truth (a wrong offset) would lose recall.
    assert level["recall_at_k"] == 1.0
    assert abs(level["queries_per_second"] - 10 * level["qps"]) <= 1


def test_floor_measures_round_trips_of_the_request_line_it_would_send(tmp_path: Path) -> None:
    data = tmp_path / "tiny.hdf5"
    write_set(data, "euclidean")
    _, bench = binaries()
    out = tmp_path / "floor.json"
    args = [bench, "floor", "--data", str(data), "--answer-bytes", "300", "--round-trips", "500"]
    args += ["--server-core", "0", "--client-core", "0", "--out", str(out)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["answer_bytes"] == 300 and report["round_trips"] == 500
    # An 8-d query as a JSON search line: more than the bare `{"op":"search"}` and far less than 1 KiB.
    assert 60 < report["request_bytes"] < 1024
    assert 0 < report["p50_us"] <= report["p99_us"] <= report["p999_us"]
