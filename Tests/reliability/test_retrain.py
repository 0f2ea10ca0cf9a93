"""`scripts/retrain.py` (`make retrain`) against a live server under a steady search/recommend load:
events in through the protocol, a gate that refuses (the live generation keeps serving, nothing is
ingested), the rerun that continues without retraining, the swap, and afterwards the new checkpoint's
answers (the trainer's own golden scores)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from harness import Connection, Server

TOKEN = "retrain-token"
REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "Tests" / "SteerModelTests" / "Fixtures" / "demo-sasrec"
MINILM = os.environ.get("STEER_MINILM_DIR", str(REPO / "models" / "all-MiniLM-L6-v2"))
# The live fixture's dimensions (d 32 + d_aux 8 = index_dim 40), everything else tiny.
TINY = "--d 32 --d-aux 8 --max-len 10 --layers 1 --experts 1 --fusion-hidden 16 --expert-hidden 16 "
TINY += "--epochs1 2 --eval-every 1 --epochs2 1 --epochs3 1 --max-samples 500"


class Load:
    """A client thread sending recommend and search requests until stopped; what it saw."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.generations: dict[str, int] = {}
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self) -> None:
        rng = random.Random(5)
        with Connection(self.port) as connection:
            round_ = 0
            while not self.stop.is_set():
                round_ += 1
                request: dict[str, Any]
                if round_ % 2:
                    history = [rng.randint(1, 400), rng.randint(1, 400)]
                    request = {"op": "recommend", "history": history, "prompt": "something funny", "k": 5}
                else:
                    request = {"op": "search", "vector": [rng.uniform(-1, 1) for _ in range(40)], "k": 5}
                try:
                    answer = connection.call(request)
                except Exception as e:
                    self.failures.append(f"round {round_}: {e}")
                    return
                if not answer.get("ok") or not isinstance(answer.get("generation"), str):
                    self.failures.append(f"round {round_}: {answer}")
                    continue
                self.generations[answer["generation"]] = self.generations.get(answer["generation"], 0) + 1

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


def retrain(binary: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", STEER_MINILM_DIR=MINILM)
    trainer = f"{sys.executable} -m steer_train.cli"  # the trainer installed for this interpreter
    command = [
        sys.executable,
        str(REPO / "scripts" / "retrain.py"),
        "--steer",
        binary,
        "--steer-train",
        trainer,
    ]
    command += args
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, check=False)


def same_ranking(got: list[int], expected: list[int], scores: list[float]) -> bool:
    """Equal, except that two ids may trade places where the reference scores differ by < 1e-4."""
    if len(got) != len(expected) or set(got) != set(expected):
        return False
    for position, item in enumerate(got):
        if item != expected[position]:
            other = expected.index(item)
            if abs(scores[other] - scores[position]) >= 1e-4:
                return False
    return True


class Live:
    """A server on a copy of the fixture checkpoint (inside a checkpoint root) with 120 users' events sent
    through the protocol; `args` are the retrain options naming it."""

    def __init__(self, binary: str, root: Path) -> None:
        self.checkpoints = root / "checkpoints"
        self.checkpoints.mkdir()
        self.checkpoint = self.checkpoints / "live"
        shutil.copytree(FIXTURE, self.checkpoint)
        self.data = root / "data"
        token_file = root / "admin.token"
        token_file.write_text(TOKEN + "\n")
        self.work = root / "work"
        self.histories: dict[str, list[int]] = {}
        self.server = Server(
            binary,
            str(self.data),
            [
                "--checkpoint",
                str(self.checkpoint),
                "--checkpoint-root",
                str(self.checkpoints),
                "--minilm",
                MINILM,
                "--admin-token",
                TOKEN,
                "--public-reads",
                "true",
                "--sync-writes",
                "false",
            ],
        )
        self.args = [
            "--server",
            f"127.0.0.1:{self.server.port}",
            "--token-file",
            str(token_file),
            "--data",
            str(self.data),
            "--live-checkpoint",
            str(self.checkpoint),
            "--checkpoint-root",
            str(self.checkpoints),
            "--work",
            str(self.work),
            "--threads",
            "1",
        ]
        try:
            self.send_events()
        except BaseException:
            self.server.terminate()
            raise
        self.versions = self.data / "store" / "steer-versions.json"

    def send_events(self) -> None:
        with Connection(self.server.port) as admin:
            # Events in through the protocol: 120 users, 12 distinct items each, in time order.
            rng = random.Random(11)
            for user in range(120):
                items = rng.sample(range(1, 401), 12)
                self.histories[f"u{user}"] = items
                events = [{"user": f"u{user}", "item": item, "ts": 1000 + t} for t, item in enumerate(items)]
                answer = admin.call({"op": "event", "token": TOKEN, "events": events})
                assert answer["ok"] and answer["recorded"] == 12, answer


def test_retrain_gates_resumes_and_swaps_under_load(binary: str) -> None:
    with tempfile.TemporaryDirectory() as root_dir:
        live = Live(binary, Path(root_dir))
        server, data, work, checkpoints = live.server, live.data, live.work, live.checkpoints
        load: Load | None = None
        try:
            with Connection(server.port) as admin:
                live_generation = admin.call({"op": "stats"})["generation"]
                versions = live.versions
                versions_before = versions.read_text()
                load = Load(server.port)
                common = [*live.args, "--train-args", TINY]

                # An impossible margin (the new model must beat the live one by 1.0): refused after training.
                refused = retrain(binary, [*common, "--margin", "-1"])
                assert refused.returncode == 3, refused.stdout + refused.stderr
                assert "gate: new" in refused.stderr and "still serving" in refused.stderr
                state = json.loads((work / "state.json").read_text())
                assert state["done"] == ["export", "train"]
                assert state["outputs"]["export"]["interactions"] == 120 * 12
                stats = admin.call({"op": "stats"})
                assert stats["generation"] == live_generation
                assert not (data / "generations").exists() or not any((data / "generations").iterdir())
                assert versions.read_text() == versions_before  # no embedding version ingested
                trained_at = (work / "train-results.json").stat().st_mtime_ns

                # The rerun with a lenient margin continues at the gate (no second training), here up to
                # the verified generation: still not serving.
                partial = retrain(binary, [*common, "--margin", "1", "--stop-after", "verify"])
                assert partial.returncode == 0, partial.stdout + partial.stderr
                assert "stopped after verify" in partial.stdout
                assert (work / "train-results.json").stat().st_mtime_ns == trained_at
                name = state["name"]
                assert (data / "generations" / name).is_dir()
                assert admin.call({"op": "stats"})["generation"] == live_generation
                # The next rerun swaps.
                passed = retrain(binary, [*common, "--margin", "1"])
                assert passed.returncode == 0, passed.stdout + passed.stderr
                assert "resuming" in passed.stdout and "swap: starting" in passed.stdout
                assert "train: starting" not in passed.stdout and "ingest: starting" not in passed.stdout
                assert f"-> {name}" in passed.stdout and "retrain complete" in passed.stdout
                state = json.loads((work / "state.json").read_text())
                assert state["done"] == ["export", "train", "gate", "ingest", "build", "verify", "swap"]
                metric = state["outputs"]["metric"]
                assert 0.0 <= metric["live"] <= 1.0 and 0.0 <= metric["new"] <= 1.0
                assert admin.call({"op": "stats"})["generation"] == name

                load.finish()
                assert load.failures == [], load.failures[:5]
                assert set(load.generations) == {live_generation, name}, load.generations
                assert all(count > 0 for count in load.generations.values())

                # After the swap the answers are the new checkpoint's, as the trainer scored them.
                # A checkpoint trained with λ/β tuning (the trainer's default) carries steering.json, which the
                # server applies: its answers are golden-steering.json's; without it, golden.json's (λ = β = 1).
                steered = (checkpoints / name / "steering.json").is_file()
                golden_file = "golden-steering.json" if steered else "golden.json"
                golden = json.loads((checkpoints / name / golden_file).read_text())
                compared = 0
                for case in golden["cases"]:
                    history = case.get("history") or []
                    if not history and case.get("prompt") is None:
                        continue
                    request: dict[str, Any] = {"op": "recommend", "history": history, "k": 10}
                    if case.get("prompt") is not None:
                        request["prompt"] = case["prompt"]
                    answer = admin.call(request)
                    assert answer["generation"] == name
                    got = [hit["id"] for hit in answer["hits"]]
                    assert same_ranking(got, case["top10"], case.get("top10_scores", [])), (got, case)
                    compared += 1
                assert compared >= 8
                # A golden case is a whole user's history: `recommend` by that user (the stored history)
                # gives the trainer's ranking too.
                by_user = 0
                for case in golden["cases"]:
                    for user, history in live.histories.items():
                        if history == case.get("history"):
                            request = {"op": "recommend", "user": user, "k": 10}
                            if case.get("prompt") is not None:
                                request["prompt"] = case["prompt"]
                            answer = admin.call(request)
                            got = [hit["id"] for hit in answer["hits"]]
                            assert answer["generation"] == name
                            assert same_ranking(got, case["top10"], case.get("top10_scores", [])), (got, case)
                            by_user += 1
                assert by_user >= 1

                # A rerun of a finished loop changes nothing.
                again = retrain(binary, [*common, "--margin", "1"])
                assert again.returncode == 0 and "retrain complete" in again.stdout, again.stderr
                assert admin.call({"op": "stats"})["generation"] == name
        finally:
            if load is not None:
                load.finish()
            server.terminate()


def test_a_checkpoint_of_another_dimension_stops_before_the_server_sees_it(binary: str) -> None:
    with tempfile.TemporaryDirectory() as root_dir:
        live = Live(binary, Path(root_dir))
        try:
            with Connection(live.server.port) as admin:
                before = admin.call({"op": "stats"})
                versions_before = live.versions.read_text()
                small = TINY.replace("--d 32 --d-aux 8", "--d 16 --d-aux 4")
                result = retrain(binary, [*live.args, "--train-args", small, "--margin", "1"])
                assert result.returncode == 1, result.stdout + result.stderr
                assert "index_dim 20 differs from the server's dimension 40" in result.stderr, result.stderr
                assert "the live generation still serves" in result.stderr
                assert json.loads((live.work / "state.json").read_text())["done"] == ["export", "train"]
                after = admin.call({"op": "stats"})
                assert after["generation"] == before["generation"] and after["indexed"] == before["indexed"]
                assert live.versions.read_text() == versions_before
                generations = live.data / "generations"
                assert not generations.exists() or not any(generations.iterdir())
        finally:
            live.server.terminate()


def test_a_work_directory_started_with_other_settings_is_refused(binary: str) -> None:
    with tempfile.TemporaryDirectory() as root_dir:
        root = Path(root_dir)
        (root / "key").write_text(TOKEN)
        work = root / "work"
        work.mkdir()
        args = ["--server", "127.0.0.1:9", "--token-file", str(root / "key"), "--data", str(root / "data")]
        args += ["--live-checkpoint", str(root / "c"), "--checkpoint-root", str(root), "--work", str(work)]
        name = "retrain-20261207-120000"
        other = {"fingerprint": {"server": "10.0.0.1:1"}, "name": name, "done": ["export"], "outputs": {}}
        # A name that would leave the checkpoint root, and steps out of order, are refused too.
        escaping = {**other, "name": "../../elsewhere"}
        skipping = {**other, "done": ["export", "gate"]}
        for state, message in [
            (other, "was started with other settings"),
            (escaping, "not a retrain state file"),
            (skipping, "not a retrain state file"),
        ]:
            (work / "state.json").write_text(json.dumps(state))
            result = retrain(binary, args)
            assert result.returncode == 1 and message in result.stderr, result.stderr
            assert json.loads((work / "state.json").read_text()) == state


def test_warm_start_trains_from_the_live_checkpoint_and_refuses_another_architecture(binary: str) -> None:
    with tempfile.TemporaryDirectory() as root_dir:
        live = Live(binary, Path(root_dir))
        try:
            short = "--epochs1 1 --eval-every 1 --epochs2 1 --epochs3 1 --max-samples 500"
            # Options in --train-args that contradict the live checkpoint's architecture: the trainer refuses.
            other = [*live.args, "--work", str(Path(root_dir) / "other"), "--warm-start"]
            refused = retrain(binary, [*other, "--train-args", f"{short} --d 16", "--margin", "1"])
            assert refused.returncode == 1, refused.stdout + refused.stderr
            assert "architecture differs from this run's: d 32 (this run 16)" in refused.stderr, (
                refused.stderr
            )
            assert "the live generation still serves" in refused.stderr

            result = retrain(
                binary,
                [*live.args, "--warm-start", "--train-args", short, "--margin", "1", "--stop-after", "gate"],
            )
            assert result.returncode == 0, result.stdout + result.stderr
            assert (
                f"--init-from {live.checkpoint.resolve()} --backbone sasrec --d 32 --d-aux 8" in result.stdout
            )
            state = json.loads((live.work / "state.json").read_text())
            assert state["fingerprint"]["warm_start"] is True
            # every item of the export is the live checkpoint's: all rows carried over
            warm = {"checkpoint": str(live.checkpoint.resolve()), "shared": 400, "new": 0, "dropped": 0}
            assert state["outputs"]["warm_start"] == warm, state["outputs"]
            results = json.loads((live.work / "train-results.json").read_text())
            assert results["train_config"]["init_from"] == str(live.checkpoint.resolve())
            # A rerun without --warm-start is another setting: refused.
            cold = retrain(binary, [*live.args, "--train-args", short, "--margin", "1"])
            assert cold.returncode == 1 and "was started with other settings" in cold.stderr, cold.stderr
        finally:
            live.server.terminate()


def test_accumulate_keeps_one_export_and_adds_increments(binary: str) -> None:
    with tempfile.TemporaryDirectory() as root_dir:
        root = Path(root_dir)
        live = Live(binary, root)
        try:
            acc = root / "accumulated"
            first = retrain(binary, [*live.args, "--accumulate", str(acc), "--stop-after", "export"])
            assert first.returncode == 0, first.stdout + first.stderr
            assert json.loads((acc / "export.json").read_text())["kind"] == "whole"
            with Connection(live.server.port) as admin:
                more = [{"user": "u0", "item": 5, "ts": 5000}, {"user": "new", "item": 6, "ts": 5000}]
                assert admin.call({"op": "event", "token": TOKEN, "events": more})["ok"]
                assert admin.call({"op": "delete_user", "token": TOKEN, "user": "u1"})["ok"]
            work2 = root / "work2"
            second = retrain(
                binary, [*live.args, "--work", str(work2), "--accumulate", str(acc), "--stop-after", "export"]
            )
            assert second.returncode == 0, second.stdout + second.stderr
            assert "--since" in second.stdout
            increment = [json.loads(line) for line in (work2 / "increment" / "interactions.jsonl").open()]
            assert sorted((o["user"], o["item"]) for o in increment) == [("new", 6), ("u0", 5)]
            summary = json.loads((acc / "export.json").read_text())
            assert summary["kind"] == "accumulated" and summary["interactions"] == 120 * 12 + 2 - 12
            assert (acc / "interactions.jsonl").read_bytes() == (
                work2 / "export" / "interactions.jsonl"
            ).read_bytes()
            assert not any(json.loads(line)["user"] == "u1" for line in (acc / "interactions.jsonl").open())
            assert (
                not acc.with_name("accumulated.old").exists()
                and not acc.with_name("accumulated.tmp").exists()
            )
        finally:
            live.server.terminate()
