from __future__ import annotations

import os
from pathlib import Path

import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parents[3]
