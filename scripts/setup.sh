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
# * DISTILLERY_POSTGRES=1 also installs PostgreSQL for the team instance (scripts/postgres.sh install).
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

# llama-cpp-python, built once per machine from its source release into a wheel folder keyed by version and
# build flags (pip's own wheel cache ignores CMAKE_ARGS, so it could hand back a build made with other flags):
# * -DLLAVA_BUILD=OFF skips llama.cpp's multimodal part (measured: 6.6 min instead of ~20 on two cores);
# * -DGGML_NATIVE=OFF builds the portable AVX2 kernels instead of tuning for the build CPU: on Xeons that
#   advertise AMX, a native build runs AMX tile kernels that segfault in virtual machines (seen here:
#   ggml_backend_amx_mul_mat, on every prompt longer than one token).
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF}"
llama_version=$(sed -n 's/^llama_cpp_python==//p' requirements.lock)
build_key=$(printf '%s %s' "$llama_version" "$CMAKE_ARGS" | sha256sum | cut -c1-12)
wheels="${DISTILLERY_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/distillery/wheels}/llama-cpp-python-$build_key"
if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "[setup] building llama-cpp-python $llama_version ($CMAKE_ARGS): about 7 minutes on two cores, once per machine"
  rm -rf "$wheels.partial"
  .venv/bin/python -m pip wheel --no-deps --no-cache-dir "llama-cpp-python==$llama_version" -w "$wheels.partial"
  mv "$wheels.partial" "$wheels"
fi
if [ "$(cat .venv/.llama-build-key 2>/dev/null)" != "$build_key" ]; then
  .venv/bin/python -m pip install --no-deps --force-reinstall "$wheels"/llama_cpp_python-*.whl
  echo "$build_key" > .venv/.llama-build-key
fi
.venv/bin/python -m pip install "${extra[@]}" --find-links "$wheels" --constraint requirements.lock -e ".[dev]"

# Check the offline defaults are really there.
.venv/bin/python - <<'PY'
from distillery_assets.embedded import smollm2_gguf_path, minilm_model_dir
import llama_cpp, torch
print(f"[setup] SmolLM2 GGUF: {smollm2_gguf_path()}")
print(f"[setup] all-MiniLM-L6-v2: {minilm_model_dir()}")
print(f"[setup] llama-cpp-python {llama_cpp.__version__}, torch {torch.__version__}")
PY
# One real generation in a child process: a llama.cpp build that crashes on this CPU fails here, by name.
if ! .venv/bin/python - <<'PY'
from llama_cpp import Llama
from distillery_assets.embedded import smollm2_gguf_path
llm = Llama(model_path=str(smollm2_gguf_path()), n_ctx=256, n_threads=1, verbose=False)
out = llm.create_chat_completion(messages=[{"role": "user", "content": "Say hello."}], max_tokens=4)
print(f"[setup] llama.cpp generates: {out['choices'][0]['message']['content']!r}")
PY
then
  echo "[setup] llama.cpp crashed generating text with this build (CMAKE_ARGS=$CMAKE_ARGS); rebuild with other flags," >&2
  echo "        e.g. CMAKE_ARGS='-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX2=OFF' bash scripts/setup.sh" >&2
  exit 1
fi
# The CPU threads and model steps at once this machine gets (distillery_assets/threads.py; every run writes the
# local_model pool limit into the Dagster instance itself, assets/pools.py).
.venv/bin/python -m distillery_assets.threads | sed 's/^/[setup] /'
# The venv's activation points the dagster CLI at this project: DAGSTER_HOME (the repo root, dagster.yaml) and
# DAGSTER_MODULE_NAME (the code location), so `dagster asset materialize --select ...` and `dagster dev` work as
# typed from the repo root, and their runs share one history. Rewritten in place on every setup.
.venv/bin/python scripts/venv_activation.py .venv/bin/activate
# The team instance's PostgreSQL (deploy/team/dagster.yaml, docs/scale.md), when asked: the server package (apt-get,
# when initdb is missing) and a cluster in data/postgres/. The Python side, dagster-postgres, is always installed.
# Without it, tests/e2e/test_postgres_instance.py installs the server itself (the same script).
if [ "${DISTILLERY_POSTGRES:-0}" = 1 ]; then
  bash scripts/postgres.sh install | sed 's/^/[setup] /'
fi
echo "[setup] done: activate with 'source .venv/bin/activate', then e.g. 'dagster dev' (from the repo root)"
