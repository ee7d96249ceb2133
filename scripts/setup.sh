#!/usr/bin/env bash
# One-command setup: a virtual environment in .venv with everything Distillery needs, offline defaults included.
#
#   bash scripts/setup.sh
#
# * Python 3.11 or 3.12 (PYTHON=/path/to/python to choose).
# * llama-cpp-python is source-only on PyPI: the first install compiles llama.cpp (about 7 minutes on 2 cores);
#   pip caches the built wheel, so later installs on the same machine take seconds.
# * torch is pinned to 2.13.0. On a machine whose pip can see the CPU wheel (e.g. a find-links folder, or
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu) that build is used; otherwise PyPI's default build.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON=$candidate; break; fi
  done
fi
echo "[setup] using $($PYTHON --version 2>&1) at $(command -v "$PYTHON")"

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade "pip>=24" wheel setuptools

extra=()
if [ -n "${TORCH_INDEX_URL:-}" ]; then extra+=(--extra-index-url "$TORCH_INDEX_URL"); fi

# -DLLAVA_BUILD=OFF skips llama.cpp's multimodal part (measured: 6.6 min instead of ~20 on two cores).
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}"
.venv/bin/python -m pip install "${extra[@]}" --constraint requirements.lock -e ".[dev]"

# Check the offline defaults are really there.
.venv/bin/python - <<'PY'
from distillery_assets.embedded import smollm2_gguf_path, minilm_model_dir
import llama_cpp, torch
print(f"[setup] SmolLM2 GGUF: {smollm2_gguf_path()}")
print(f"[setup] all-MiniLM-L6-v2: {minilm_model_dir()}")
print(f"[setup] llama-cpp-python {llama_cpp.__version__}, torch {torch.__version__}")
PY
echo "[setup] done: activate with 'source .venv/bin/activate'"
