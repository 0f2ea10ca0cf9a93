#!/usr/bin/env python3
"""`make retrain`: the retraining loop against a live `steer serve`, as one resumable command.

Steps (docs/operations.md, "The retraining loop"), each one a tool that already exists:
  export  `steer export --data DIR --out WORK/export` (the store opened read-only beside the server)
  train   `steer-train run` on the export (with --warm-start: `--init-from` the live checkpoint and
          its model options), the checkpoint written to WORK/checkpoint, then copied into the
          checkpoint root as CHECKPOINT_ROOT/NAME (a temporary name renamed last)
  gate    `steer-train evaluate` of the live checkpoint on the same export; the new model's metric is
          the one `run` measured with the same protocol (leave-one-out: each user's most recent event
          held out). New < live - margin stops the loop here: nothing reached the server.
  ingest  `steer ingest --server` streams the new embeddings as a new embedding version
  build   `steer-index build` of that version into DATA/generations/GEN
  verify  `steer-index verify GEN --data DATA`
  swap    the `swap` op with the generation and the new checkpoint
State: WORK/state.json (written atomically after every step) records the completed steps and their
outputs; a rerun with the same WORK continues after the last completed step. Until `swap` succeeds
the live generation serves untouched (every step before it writes only WORK, the checkpoint root, a
new embedding version and a new generation directory).

Why a Python script and not a `steer` subcommand: the loop drives the Python trainer (training and the
gate's evaluation) and the command-line tools as child processes; a Swift command would shell out to
Python the same way, and this keeps the orchestration testable without a Swift build.
Exit status: 0 done, 1 a step failed (its message printed), 3 the gate refused the new model.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

STEPS = ["export", "train", "gate", "ingest", "build", "verify", "swap"]
#: Longest response line read from the server, in bytes (stats and swap answers are a few KiB).
MAX_RESPONSE_BYTES = 1 << 20
GATE_REFUSED = 3
#: Largest live `config.json` read for --warm-start, in bytes (the trainer checks the checkpoint fully).
MAX_CONFIG_BYTES = 4 << 20
#: The live checkpoint's `model_config` fields passed to `steer-train run` for --warm-start.
ARCHITECTURE_OPTIONS = {
    "backbone": "--backbone",
    "d": "--d",
    "d_aux": "--d-aux",
    "max_len": "--max-len",
    "n_layers": "--layers",
    "n_heads": "--heads",
    "n_experts": "--experts",
    "fusion_hidden": "--fusion-hidden",
    "expert_hidden": "--expert-hidden",
}


class StepError(Exception):
    """A step failed; the message says which and why."""


def log(message: str) -> None:
    print(f"[retrain {time.strftime('%H:%M:%S')}] {message}", flush=True)


def write_json_atomically(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        f.write(json.dumps(value, indent=1) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def call(
    server: str, request: dict[str, Any], timeout: float = 120.0
) -> dict[str, Any]:
    """One request on a fresh connection; the response object. Raises StepError on transport errors."""
    host, _, port = server.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as conn:
            conn.sendall(json.dumps(request).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    raise StepError(f"server {server} closed the connection")
                buf += chunk
                if len(buf) > MAX_RESPONSE_BYTES:
                    raise StepError(
                        f"server {server}: response longer than {MAX_RESPONSE_BYTES} bytes"
                    )
    except OSError as e:
        raise StepError(f"server {server}: {e}") from None
    try:
        answer = json.loads(buf)
    except ValueError:
        raise StepError(f"server {server}: response is not JSON") from None
    if not isinstance(answer, dict):
        raise StepError(f"server {server}: response is not an object")
    return answer


def run_tool(name: str, command: list[str], env: dict[str, str]) -> str:
    """Runs a step's tool, its stderr passed through; its stdout. Raises StepError on a non-zero exit."""
    log(f"{name}: {shlex.join(command)}")
    result = subprocess.run(
        command, stdout=subprocess.PIPE, text=True, env=env, check=False
    )
    if result.returncode != 0:
        raise StepError(
            f"{name} failed (exit {result.returncode}): {shlex.join(command)}"
        )
    return result.stdout


def metric(results_file: Path, path: str) -> float:
    """`TASK.METHOD.METRIC` of a steer-train results file, e.g. standard.dpr_soft.ndcg@10."""
    task, method, name = path.split(".", 2)
    doc = json.loads(results_file.read_text())
    try:
        return float(doc["results"][task]["methods"][method][name])
    except (KeyError, TypeError) as e:
        raise StepError(f"{results_file} has no {path}") from e


def load_state(path: Path) -> dict[str, Any]:
    """A state file, checked: its name becomes a path component, its steps decide what runs."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise StepError(
            f"{path}: unreadable state ({e}); use another --work directory"
        ) from None
    ok = (
        isinstance(state, dict)
        and isinstance(state.get("name"), str)
        and re.fullmatch(r"retrain-[0-9]{8}-[0-9]{6}", state["name"]) is not None
        and isinstance(state.get("done"), list)
        and state["done"] == STEPS[: len(state["done"])]
        and isinstance(state.get("outputs"), dict)
    )
    if not ok:
        raise StepError(
            f"{path}: not a retrain state file; use another --work directory"
        )
    return state  # type: ignore[no-any-return]


def _jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, object) of a JSONL file of an export; StepError naming the line if one is not JSON."""
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            try:
                yield n, json.loads(line)
            except ValueError:
                raise StepError(f"{path}:{n}: not JSON") from None


def accumulate(acc: Path, increment: Path, out: Path) -> dict[str, Any]:
    """Writes into `out` the export `acc` (a whole or accumulated export) brought up to date with
    `increment` (`steer export --since acc`): `acc`'s interactions except those of removed users
    (deleted or restarted histories) and of items no longer in the catalog, then the increment's; the
    increment's catalog and positions, so `out` is itself a valid `--since` for the next increment.
    Each event the store exported appears once: an increment holds only events after `acc`'s positions.
    Files are written under temporary names and renamed, `export.json` last. Returns the counts.

    Raises StepError when `increment` is not an increment of `acc` (its `since.checksum` is not
    `acc`'s positions checksum) or of another store, or a line is not JSON."""
    old = json.loads((acc / "export.json").read_text())
    new = json.loads((increment / "export.json").read_text())
    since = new.get("since") if isinstance(new, dict) else None
    positions = old.get("positions") if isinstance(old, dict) else None
    if (
        new.get("kind") != "increment"
        or not isinstance(since, dict)
        or not isinstance(positions, dict)
        or since.get("checksum") != positions.get("checksum")
        or new.get("store_id") != old.get("store_id")
    ):
        raise StepError(
            f"{increment} is not an increment of {acc} (positions checksum or store differ)"
        )
    catalog = {
        str(o.get("id"))
        for _, o in _jsonl(increment / "items.jsonl")
        if isinstance(o, dict)
    }
    removed = {
        json.dumps(o.get("user"))
        for _, o in _jsonl(increment / "removed_users.jsonl")
        if isinstance(o, dict)
    }
    out.mkdir(parents=True, exist_ok=True)
    counts = {"kept": 0, "removed_users": 0, "items_gone": 0, "new": 0}
    users: set[str] = set()
    tmp = out / "interactions.jsonl.tmp"
    with tmp.open("w", encoding="utf-8") as fh:
        for source, is_new in ((acc, False), (increment, True)):
            for n, o in _jsonl(source / "interactions.jsonl"):
                if not isinstance(o, dict) or "user" not in o or "item" not in o:
                    raise StepError(
                        f"{source / 'interactions.jsonl'}:{n}: not an interaction"
                    )
                user = json.dumps(o["user"])
                if not is_new and user in removed:
                    counts["removed_users"] += 1
                    continue
                if not is_new and str(o["item"]) not in catalog:
                    counts["items_gone"] += 1
                    continue
                counts["new" if is_new else "kept"] += 1
                users.add(user)
                fh.write(json.dumps(o) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, out / "interactions.jsonl")
    for name in ("items.jsonl", "positions.jsonl"):
        shutil.copyfile(increment / name, out / (name + ".tmp"))
        os.replace(out / (name + ".tmp"), out / name)
    summary = {
        **new,
        "kind": "accumulated",
        "interactions": counts["kept"] + counts["new"],
        "users": len(users),
        "capped": int(old.get("capped") or 0) + int(new.get("capped") or 0),
        "increments": int(old.get("increments") or 0) + 1,
        "dropped": {
            "removed_users": counts["removed_users"],
            "items_gone": counts["items_gone"],
        },
    }
    for key in ("since", "removed_users"):
        summary.pop(key, None)
    write_json_atomically(out / "export.json", summary)
    return counts


def recover_accumulated(acc: Path) -> bool:
    """Finishes an interrupted `publish_accumulated`; whether `acc` holds an export."""
    old, tmp = acc.with_name(acc.name + ".old"), acc.with_name(acc.name + ".tmp")
    if old.exists():
        if not acc.exists():
            os.replace(tmp, acc)  # tmp was complete before the first rename
        shutil.rmtree(old)
    return (acc / "export.json").is_file()


def publish_accumulated(export: Path, acc: Path) -> None:
    """Makes `acc` a copy of `export`: a complete copy beside it, then two renames."""
    old, tmp = acc.with_name(acc.name + ".old"), acc.with_name(acc.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(export, tmp)
    if acc.exists():
        os.replace(acc, old)
    os.replace(tmp, acc)
    if old.exists():
        shutil.rmtree(old)


class Loop:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.swap_sent = (
            False  # until a swap request was sent, the live generation serves untouched
        )
        self.work = Path(a.work).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.state_file = self.work / "state.json"
        self.data = Path(a.data).resolve()
        self.root = Path(a.checkpoint_root).resolve()
        self.token = Path(a.token_file).read_text().strip()
        self.env = dict(os.environ)
        self.env.setdefault("OMP_NUM_THREADS", str(a.threads))
        # What a rerun must agree on to continue (margin and metric may change: a refused gate can be rerun).
        fingerprint = {
            "server": a.server,
            "data": str(self.data),
            "checkpoint_root": str(self.root),
            "live_checkpoint": str(Path(a.live_checkpoint).resolve()),
            "train_args": a.train_args,
            "threads": a.threads,
            "spec": a.spec,
            "shards": a.shards,
        }
        # Only when set: work directories of earlier versions keep their fingerprint.
        if a.warm_start:
            fingerprint["warm_start"] = True
        if a.accumulate:
            fingerprint["accumulate"] = str(Path(a.accumulate).resolve())
        if self.state_file.exists():
            self.state: dict[str, Any] = load_state(self.state_file)
            if self.state.get("fingerprint") != fingerprint:
                raise StepError(
                    f"{self.state_file} was started with other settings: {self.state.get('fingerprint')}; "
                    "use another --work directory"
                )
            log(f"resuming {self.work}: done {self.state['done'] or 'nothing'}")
        else:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
            self.state = {
                "fingerprint": fingerprint,
                "name": f"retrain-{stamp}",
                "done": [],
                "outputs": {},
            }
            self.save()

    def save(self) -> None:
        write_json_atomically(self.state_file, self.state)

    @property
    def out(self) -> dict[str, Any]:
        return self.state["outputs"]  # type: ignore[no-any-return]

    def dataset(self) -> str:
        export = self.work / "export"
        return f"generic:{export / 'interactions.jsonl'},{export / 'items.jsonl'}"

    def server_call(self, request: dict[str, Any]) -> dict[str, Any]:
        answer = call(self.a.server, {**request, "token": self.token})
        if not answer.get("ok"):
            raise StepError(f"{request['op']} refused: {answer.get('error')}")
        return answer

    # --- steps ---

    def step_export(self) -> None:
        stats = self.server_call({"op": "stats"})
        self.out["live_generation"] = stats.get("generation")
        self.out["items_before"] = stats.get("items")
        export = self.work / "export"
        command = [self.a.steer, "export", "--data", str(self.data), "--out"]
        acc = Path(self.a.accumulate).resolve() if self.a.accumulate else None
        if acc is not None and recover_accumulated(acc):
            increment = self.work / "increment"
            run_tool(
                "export", [*command, str(increment), "--since", str(acc)], self.env
            )
            if export.exists():
                shutil.rmtree(export)  # a partial one of an interrupted run
            combined = accumulate(acc, increment, export)
            log(f"export: {acc} + increment {increment}: {combined}")
        else:
            run_tool("export", [*command, str(export)], self.env)
        if acc is not None:
            publish_accumulated(export, acc)
        summary = json.loads((export / "export.json").read_text())
        keys = ("kind", "items", "users", "interactions", "store_sequence", "capped")
        self.out["export"] = {k: summary.get(k) for k in keys}
        log(f"export: {self.out['export']}")

    def warm_start_args(self) -> list[str]:
        """`--init-from` the live checkpoint, with its model options (a warm start needs the same
        architecture; options in --train-args come later and win, and the trainer refuses a mismatch)."""
        live = Path(self.a.live_checkpoint).resolve()
        path = live / "config.json"
        try:
            if path.stat().st_size > MAX_CONFIG_BYTES:
                raise StepError(
                    f"train: {path} is larger than {MAX_CONFIG_BYTES} bytes"
                )
            mc = json.loads(path.read_text()).get("model_config")
        except (OSError, ValueError, AttributeError) as e:
            raise StepError(f"train: --warm-start: cannot read {path} ({e})") from None
        args = ["--init-from", str(live)]
        for key, option in ARCHITECTURE_OPTIONS.items():
            value = mc.get(key) if isinstance(mc, dict) else None
            valid = (
                value in ("sasrec", "gru4rec")
                if key == "backbone"
                else type(value) is int
            )
            if not valid:
                raise StepError(
                    f"train: --warm-start: {path} has no valid model_config.{key}"
                )
            args += [option, str(value)]
        return args

    def step_train(self) -> None:
        ckpt = self.work / "checkpoint"
        if ckpt.exists():
            shutil.rmtree(ckpt)  # a partial checkpoint of an interrupted run
        command = [
            *shlex.split(self.a.steer_train),
            "--no-progress",
            "run",
            "--dataset",
            self.dataset(),
            "--out",
            str(ckpt),
            "--results",
            str(self.work / "train-results.json"),
            "--threads",
            str(self.a.threads),
            *(self.warm_start_args() if self.a.warm_start else []),
            *shlex.split(self.a.train_args),
        ]
        run_tool("train", command, self.env)
        if self.a.warm_start:
            results = json.loads((self.work / "train-results.json").read_text())
            self.out["warm_start"] = results.get("warm_start")
            log(f"train: warm start {self.out['warm_start']}")
        target = self.root / self.state["name"]
        if not target.exists():
            tmp = self.root / (self.state["name"] + ".tmp")
            if tmp.exists():
                shutil.rmtree(tmp)
            shutil.copytree(ckpt, tmp)
            os.replace(tmp, target)
        self.out["checkpoint"] = str(target)
        log(f"train: checkpoint {target}")

    def step_gate(self) -> None:
        # A swap cannot change the data directory's dimension: refuse here, before the server sees anything.
        config = json.loads((Path(self.out["checkpoint"]) / "config.json").read_text())
        dimension = self.server_call({"op": "stats"}).get("dimension")
        if config.get("index_dim") != dimension:
            raise StepError(
                f"gate: the new checkpoint's index_dim {config.get('index_dim')} differs from the server's "
                f"dimension {dimension} (a swap cannot change it): train with --d and --d-aux summing to it"
            )
        live_results = self.work / "live-results.json"
        if not live_results.exists():
            command = [
                *shlex.split(self.a.steer_train),
                "--no-progress",
                "evaluate",
                "--dataset",
                self.dataset(),
                "--checkpoint",
                str(Path(self.a.live_checkpoint).resolve()),
                "--results",
                str(live_results) + ".tmp",
                "--threads",
                str(self.a.threads),
            ]
            run_tool("gate", command, self.env)
            os.replace(str(live_results) + ".tmp", live_results)
        live = metric(live_results, self.a.metric)
        new = metric(self.work / "train-results.json", self.a.metric)
        self.out["metric"] = {
            "name": self.a.metric,
            "live": live,
            "new": new,
            "margin": self.a.margin,
        }
        if new < live - self.a.margin:
            self.save()
            raise GateRefused(
                f"gate: new {self.a.metric} {new:.4f} < live {live:.4f} - margin {self.a.margin}; "
                f"stopped before anything reached the server (generation {self.out.get('live_generation')} "
                "still serving); rerun with the same --work to retry the gate without retraining"
            )
        log(
            f"gate: new {self.a.metric} {new:.4f} vs live {live:.4f} (margin {self.a.margin}): passed"
        )

    def step_ingest(self) -> None:
        command = [
            self.a.steer,
            "ingest",
            "--server",
            self.a.server,
            "--token-file",
            self.a.token_file,
            "--checkpoint",
            self.out["checkpoint"],
            "--quiet",
        ]
        stdout = run_tool("ingest", command, self.env)
        words = stdout.split()
        if len(words) < 2 or words[0] != "version":
            raise StepError(f"ingest: unexpected output {stdout!r}")
        self.out["version"] = words[1]
        log(f"ingest: embedding version {words[1]}")

    def generation_dir(self) -> Path:
        return self.data / "generations" / str(self.state["name"])

    def step_build(self) -> None:
        gen = self.generation_dir()
        if gen.exists():
            log(
                f"build: {gen} exists (an interrupted earlier run); verify decides whether it is complete"
            )
            return
        command = [
            self.a.steer_index,
            "build",
            "--data",
            str(self.data),
            "--version",
            self.out["version"],
            "--spec",
            self.a.spec,
            "--shards",
            str(self.a.shards),
            "--out",
            str(gen),
            "--generation-id",
            self.state["name"],
            "--quiet",
        ]
        run_tool("build", command, self.env)

    def step_verify(self) -> None:
        command = [
            self.a.steer_index,
            "verify",
            str(self.generation_dir()),
            "--data",
            str(self.data),
        ]
        run_tool("verify", command, self.env)

    def step_swap(self) -> None:
        name = self.state["name"]
        stats = self.server_call({"op": "stats"})
        if stats.get("generation") != name:
            self.swap_sent = True
            answer = self.server_call(
                {"op": "swap", "generation": name, "checkpoint": name}
            )
            self.out["previous_generation"] = answer.get("previous")
            stats = self.server_call({"op": "stats"})
        self.out["items_after"] = stats.get("items")
        self.out["serving"] = stats.get("generation")
        log(f"swap: {stats.get('generation')} serving")

    def run(self) -> None:
        stop_after = self.a.stop_after
        for step in STEPS:
            if step in self.state["done"]:
                continue
            log(f"{step}: starting")
            getattr(self, f"step_{step}")()
            self.state["done"].append(step)
            self.save()
            log(f"{step}: done")
            if step == stop_after:
                log(
                    f"stopped after {step} (--stop-after); rerun with the same --work to continue"
                )
                return
        self.report()

    def report(self) -> None:
        m = self.out.get("metric", {})
        live, new = m.get("live", float("nan")), m.get("new", float("nan"))
        lines = [
            "retrain complete:",
            f"  generation {self.out.get('previous_generation') or self.out.get('live_generation')}"
            f" -> {self.out.get('serving')}",
            f"  checkpoint {self.a.live_checkpoint} -> {self.out.get('checkpoint')}",
            f"  embedding version {self.out.get('version')}",
            f"  {m.get('name')}: live {live:.4f} -> new {new:.4f}",
            f"  warm start: {self.out['warm_start']}"
            if self.out.get("warm_start")
            else "  cold start",
            f"  items {self.out.get('items_before')} -> {self.out.get('items_after')};"
            f" export {self.out.get('export')}",
        ]
        print("\n".join(lines), flush=True)


class GateRefused(StepError):
    """The new model is worse than the live one by more than the margin."""


def main(argv: list[str] | None = None) -> int:
    repo = Path(__file__).resolve().parents[1]
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--server", required=True, help="the live steer serve, HOST:PORT")
    p.add_argument(
        "--token-file", required=True, help="a file holding the server's admin key"
    )
    p.add_argument(
        "--data", required=True, help="the server's data directory (read beside it)"
    )
    p.add_argument(
        "--live-checkpoint", required=True, help="the checkpoint the server serves now"
    )
    p.add_argument(
        "--checkpoint-root", required=True, help="the server's --checkpoint-root"
    )
    p.add_argument(
        "--work", required=True, help="work directory (state.json, export, results)"
    )
    p.add_argument(
        "--margin", type=float, default=0.0, help="allowed drop of the metric (0)"
    )
    p.add_argument(
        "--metric",
        default="standard.dpr_soft.ndcg@10",
        help="TASK.METHOD.METRIC gated on",
    )
    p.add_argument("--threads", type=int, default=2, help="trainer threads (2)")
    p.add_argument(
        "--train-args", default="", help="extra `steer-train run` options, one string"
    )
    p.add_argument(
        "--warm-start",
        action="store_true",
        help="train from the live checkpoint's weights (steer-train run --init-from; same architecture)",
    )
    p.add_argument(
        "--accumulate",
        default=None,
        help="keep an accumulated export in this directory and export only an increment since it",
    )
    p.add_argument("--spec", default="Flat", help="steer-index build --spec (Flat)")
    p.add_argument("--shards", type=int, default=1)
    p.add_argument(
        "--stop-after", choices=STEPS, default=None, help="stop after this step"
    )
    p.add_argument("--steer", default=str(repo / ".build" / "debug" / "steer"))
    p.add_argument(
        "--steer-index", default=None, help="default: steer-index beside --steer"
    )
    p.add_argument("--steer-train", default="steer-train", help="the trainer command")
    a = p.parse_args(argv)
    if len(a.metric.split(".", 2)) != 3:
        p.error("--metric: TASK.METHOD.METRIC, e.g. standard.dpr_soft.ndcg@10")
    if a.threads < 1 or a.shards < 1:
        p.error("--threads and --shards: at least 1")
    if a.steer_index is None:
        a.steer_index = str(Path(a.steer).with_name("steer-index"))
    loop: Loop | None = None
    try:
        loop = Loop(a)
        loop.run()
    except GateRefused as e:
        print(f"retrain: {e}", file=sys.stderr, flush=True)
        return GATE_REFUSED
    except (
        StepError,
        OSError,
        ValueError,
    ) as e:  # OSError, ValueError: an unreadable file or bad JSON
        if loop is None:  # the work directory or an option was refused: nothing ran
            print(f"retrain: {e}", file=sys.stderr)
            return 1
        serving = (
            "check `stats`" if loop.swap_sent else "the live generation still serves"
        )
        print(
            f"retrain: {e}; {serving}; rerun with the same --work to continue",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
