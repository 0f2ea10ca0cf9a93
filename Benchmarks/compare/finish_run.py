"""Marks a run directory's run.json finished: the UTC time and `uptime` at the end (what else loaded the
machine meanwhile). Used by Benchmarks/compare/run.sh and overhead.sh.

    python3 Benchmarks/compare/finish_run.py OUT/run.json
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path


def finish(path: Path) -> None:
    run = json.loads(path.read_text())
    run["finished"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    run["uptime_end"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    path.write_text(json.dumps(run, indent=1))


if __name__ == "__main__":
    finish(Path(sys.argv[1]))
