"""Shared fixtures of the reliability tests: the built `steer` binary (STEER_BIN, default the repository's
.build/debug/steer). A missing binary fails the tests; they never skip."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "Benchmarks" / "reliability"))
from harness import HarnessError, steer_binary


@pytest.fixture(scope="session")
def binary() -> str:
    try:
        return steer_binary()
    except HarnessError as error:
        pytest.fail(str(error), pytrace=False)
