"""summarize.py on hand-made result files: the matched-recall rule and the targets' arithmetic."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import summarize


def level(value: int, concurrency: int, recall: float, qps: float, p50: float) -> dict:
    lat = {"p50": p50, "p99": p50 * 3, "p999": p50 * 5}
    return {
        "param": "ef_search",
        "value": value,
        "concurrency": concurrency,
        "recall_at_k": recall,
        "qps": qps,
        "latency_us": lat,
        "errors": 0,
        "server_cpu": {"cpu_per_request_us": 100.0},
    }


def poisson(fraction: float, p99: float, cpu: float) -> dict:
    lv = level(32, 4, 0.96, 1000 * fraction, 200)
    lv.update(load_fraction=fraction, offered_rate=1000 * fraction)
    lv["latency_us"]["p99"] = p99
    lv["server_cpu"] = {"cpu_per_request_us": cpu, "cores": 0.5}
    return lv


def write(tmp: Path) -> None:
    (tmp / "run.json").write_text(json.dumps({"set": "t", "k": 10}))
    levels = [
        level(16, 1, 0.90, 5000, 150),
        level(32, 1, 0.96, 4000, 200),
        level(64, 1, 0.99, 3000, 300),
        level(16, 4, 0.90, 9000, 400),
        level(32, 4, 0.96, 7000, 500),
        level(64, 4, 0.99, 5000, 700),
    ]
    (tmp / "steer.json").write_text(json.dumps({"levels": levels}))
    inproc = [
        {"value": 16, "recall_at_10": 0.90, "qps_single": 8000},
        {"value": 32, "recall_at_10": 0.955, "qps_single": 6250},
        {"value": 64, "recall_at_10": 0.99, "qps_single": 4000},
    ]
    (tmp / "inproc.jsonl").write_text("\n".join(json.dumps(r) for r in inproc) + "\n")
    rows = [
        {
            "engine": "hnswlib",
            "param": "ef_search",
            "value": v,
            "recall_at_k": r,
            "qps": q,
            "p50_us": 1e6 / q,
            "threads": 1,
            "saturation_qps": q * 1.1,
            "saturation_recall_at_k": r,
        }
        for v, r, q in ((16, 0.91, 6000), (32, 0.951, 5000), (64, 0.99, 3000))
    ]
    (tmp / "peers.json").write_text(json.dumps({"rows": rows}))
    chroma = [{"engine": "chroma server", "param": "ef_search", "value": 32, "recall_at_k": 0.95, "qps": 500}]
    (tmp / "chroma.json").write_text(json.dumps({"rows": chroma}))
    (tmp / "poisson.json").write_text(
        json.dumps({"levels": [poisson(1.0, 3000, 100), poisson(0.1, 500, 400), poisson(0.5, 1900, 150)]})
    )


def test_matched_recall_takes_the_fastest_passing_setting() -> None:
    rows = [
        {"value": 16, "recall": 0.94, "qps": 9},
        {"value": 32, "recall": 0.95, "qps": 7},
        {"value": 64, "recall": 0.99, "qps": 8},
    ]
    assert summarize.matched(rows, 0.95) == rows[2]
    assert summarize.matched(rows, 0.999) is None


def test_targets_from_one_run(tmp_path: Path) -> None:
    write(tmp_path)
    s = summarize.summarize(tmp_path, 0.95)
    targets = {
        t["target"].split(" (")[0]
        if t["target"].startswith("Poisson") or t["target"].startswith("CPU")
        else t["target"]: t
        for t in s["targets"]
    }
    inproc = targets["in-process SteerIndex single-query QPS >= 1.0x hnswlib (1 thread)"]
    assert inproc["ratio"] == 1.25 and inproc["met"]  # 6250 (ef 32) / 5000 (ef 32)
    sat = targets["server saturation per core >= 0.8x in-process hnswlib per core"]
    assert (
        sat["ratio"] == round(7000 / 5500, 3) and sat["met"]
    )  # steer ef 32 at 4 connections vs hnswlib batch 5500
    one = targets["one connection p50 <= in-process search time + 40 us (same efSearch)"]
    assert (
        one["ef_search"] == 32 and one["in_process_us"] == 160.0 and one["overhead_us"] == 40.0 and one["met"]
    )
    chroma = targets["one connection QPS >= 5x Chroma's (Steer's Swift client, Chroma's Python client)"]
    assert chroma["ratio"] == 8.0 and chroma["met"]
    assert targets["Poisson at 50 % of the maximum: p99 <= 2 ms"]["met"]
    cpu = targets["CPU per request at 10 % load <= 1.5x that at saturation"]
    assert cpu["ratio"] == 4.0 and not cpu["met"]
    md = (tmp_path / "summary.md").read_text()
    assert "| SteerIndex in process, 1 thread | ef 32 | 0.955 | 6250 |" in md
    assert (
        json.loads((tmp_path / "summary.json").read_text())["matched"]["chroma server, 1 connection"]["qps"]
        == 500
    )


def test_missing_files_give_no_targets(tmp_path: Path) -> None:
    s = summarize.summarize(tmp_path, 0.95)
    assert s["targets"] == [] and s["curves"] == {}


def test_batched_requests_count_queries_and_get_their_own_row(tmp_path: Path) -> None:
    hnsw = {"engine": "hnswlib", "param": "ef_search", "value": 48, "recall_at_k": 0.96}
    hnsw.update(qps=900.0, p50_us=1000.0, saturation_qps=1000.0, saturation_recall_at_k=0.96, threads=1)
    (tmp_path / "peers.json").write_text(json.dumps({"rows": [hnsw]}))
    lv = level(32, 4, 0.96, 50.0, 900)
    lv["queries_per_second"] = 800.0
    lv["server_cpu"] = {"cpu_per_request_us": 1600.0}
    (tmp_path / "steer-batch.json").write_text(json.dumps({"settings": {"batch": 16}, "levels": [lv]}))
    summary = summarize.summarize(tmp_path, 0.95)
    name = "steer server, 16-query batches, 4 connection(s), lean Swift client"
    row = summary["matched"][name]
    assert row["qps"] == 800.0 and row["server_cpu_per_request_us"] == 100.0
    target = next(t for t in summary["targets"] if "batched requests" in t["target"])
    assert target["ratio"] == 0.8 and target["met"] is True


def test_finish_run_keeps_the_start_and_adds_the_end(tmp_path: Path) -> None:
    import finish_run

    path = tmp_path / "run.json"
    path.write_text(json.dumps({"set": "x", "uptime_start": "up"}))
    finish_run.finish(path)
    run = json.loads(path.read_text())
    assert run["set"] == "x" and run["uptime_start"] == "up"
    assert run["finished"].endswith("Z") and "load average" in run["uptime_end"]
