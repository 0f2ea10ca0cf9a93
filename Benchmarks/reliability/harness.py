"""Shared pieces of the reliability scripts (crash.py, fuzz.py, soak.py): starting and stopping a
`steer serve` child process, a minimal line-delimited JSON connection, the process's resident memory,
and the results file (command, commit, machine). Standard library only."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEFAULT_TOKEN = "reliability-token"


class HarnessError(Exception):
    """The harness could not do its job (binary missing, server did not start)."""


def steer_binary(explicit: str | None = None) -> str:
    """`explicit`, else STEER_BIN, else the repository's .build/debug/steer. Raises when not executable."""
    path = explicit or os.environ.get("STEER_BIN") or str(REPO / ".build" / "debug" / "steer")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise HarnessError(f"steer binary not found at {path}: build it (swift build) or set STEER_BIN")
    return path


class Server:
    """One `steer serve` child on a free loopback port, stdout read for `listening on HOST:PORT`,
    stderr appended to `<data>.stderr.log`."""

    def __init__(self, binary: str, data: str, arguments: list[str], start_timeout: float = 60.0) -> None:
        self.binary = binary
        self.data = data
        self.stderr_path = data.rstrip("/") + ".stderr.log"
        env = dict(os.environ)
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        env.setdefault("OMP_NUM_THREADS", "1")
        self._stderr = open(self.stderr_path, "ab")  # noqa: SIM115 (closed in _close)
        command = [binary, "serve", "--port", "0", "--data", data, "--log-level", "warning", *arguments]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._stderr, env=env)
        self.pid = self.process.pid
        self.port = self._await_listening(start_timeout)

    def _await_listening(self, timeout: float) -> int:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        collected = b""
        fd = self.process.stdout.fileno()
        while b"\n" not in collected:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise HarnessError(f"steer serve did not listen within {timeout:.0f} s: {self.stderr_tail()}")
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                self.process.wait(timeout=10)
                raise HarnessError(
                    f"steer serve exited ({self.process.returncode}) before listening: {self.stderr_tail()}"
                )
            collected += chunk
        line = collected.split(b"\n", 1)[0].decode("utf-8", "replace")
        if not line.startswith("listening on "):
            self.kill()
            raise HarnessError(f"unexpected first line {line!r}")
        return int(line.rsplit(":", 1)[1])

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> int:
        """SIGKILL and wait; returns the exit status (-9 when the kill took it)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        code = self.process.wait(timeout=30)
        self._close()
        return code

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait (graceful shutdown saves the index); returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
            self._close()
            raise HarnessError(f"steer serve did not exit within {timeout:.0f} s of SIGTERM") from None
        self._close()
        return code

    def _close(self) -> None:
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()

    def stderr_tail(self, limit: int = 2000) -> str:
        try:
            return Path(self.stderr_path).read_bytes()[-limit:].decode("utf-8", "replace")
        except OSError:
            return ""

    def rss_kib(self) -> int | None:
        return rss_kib(self.pid)


class Router(Server):
    """One `steer route` child on a free loopback port (docs/scaling.md), started and stopped like
    `Server`; `log_path` receives its stderr."""

    def __init__(self, binary: str, log_path: str, arguments: list[str], start_timeout: float = 60.0) -> None:
        self.binary = binary
        self.data = log_path
        self.stderr_path = log_path
        self._stderr = open(log_path, "ab")  # noqa: SIM115 (closed in _close)
        command = [binary, "route", "--port", "0", "--log-level", "warning", *arguments]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._stderr)
        self.pid = self.process.pid
        self.port = self._await_listening(start_timeout)


def rss_kib(pid: int) -> int | None:
    """VmRSS of a process in KiB, from /proc (None when unavailable)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class ConnectionBroken(Exception):
    """The connection ended (EOF, reset, partial line) before a whole response arrived."""


class Connection:
    """A blocking line-delimited JSON connection that keeps the server's answers raw."""

    def __init__(self, port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, payload: bytes) -> None:
        try:
            self.sock.sendall(payload)
        except (BrokenPipeError, ConnectionResetError) as error:
            raise ConnectionBroken(str(error)) from error

    def read_line(self) -> bytes:
        """One response line; `socket.timeout` propagates (a hang), EOF or reset is `ConnectionBroken`."""
        while b"\n" not in self._buffer:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError as error:
                raise ConnectionBroken(str(error)) from error
            if not chunk:
                raise ConnectionBroken("end of stream" + (" inside a line" if self._buffer else ""))
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def read(self) -> dict[str, Any]:
        line = self.read_line()
        try:
            value = json.loads(line)
        except ValueError as error:
            raise ConnectionBroken(f"unreadable response {line[:200]!r}: {error}") from error
        if not isinstance(value, dict):
            raise ConnectionBroken(f"response is not an object: {line[:200]!r}")
        return value

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        self.send(json.dumps(request, separators=(",", ":"), allow_nan=False).encode() + b"\n")
        return self.read()


def git_commit() -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return result.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_kib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_kib": memory_kib,
        "python": platform.python_version(),
    }


def results_path(kind: str, explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    return REPO / "Benchmarks" / "reliability" / f"{kind}-results-{date}.json"


def write_results(path: Path, binary: str, body: dict[str, Any]) -> None:
    command = " ".join([Path(sys.executable).name, *sys.argv])
    if os.environ.get("STEER_BIN"):
        command = f"STEER_BIN={os.environ['STEER_BIN']} {command}"
    record = {
        "command": command,
        "commit": git_commit(),
        "binary": binary,
        "machine": machine(),
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **body,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


def fill_store(
    binary: str, data: str, arguments: list[str], count: int, item: Callable[[int], dict[str, Any]]
) -> None:
    """Starts `steer serve` on `data` with `arguments`, upserts `item(0) … item(count - 1)` in batches of
    1000 (the admin token DEFAULT_TOKEN), and stops it with SIGTERM (the index is saved)."""
    server = Server(binary, data, arguments)
    try:
        with Connection(server.port, timeout=120.0) as connection:
            for start in range(0, count, 1000):
                batch = [item(n) for n in range(start, min(count, start + 1000))]
                response = connection.call({"op": "upsert", "token": DEFAULT_TOKEN, "items": batch})
                if response.get("ok") is not True:
                    raise HarnessError(f"fill failed: {response}")
    finally:
        if server.terminate() != 0:
            raise HarnessError(f"steer serve did not stop cleanly: {server.stderr_tail()}")


def unused_log(message: str) -> None:
    """A `log` callback that drops progress lines (tests)."""
