from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from steer_train.data import shared_data_dir

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parents[3]


def data_dir(name: str) -> Path:
    d = shared_data_dir() / name
    if not d.is_dir():
        pytest.skip(f"shared data {d} not available (set STEER_SHARED_DATA)")
    return d
