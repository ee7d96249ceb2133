#!/usr/bin/env bash
# The dagster CLI against this project's persistent instance, from any folder and without activating the venv:
#   bash scripts/dagster.sh dev
#   bash scripts/dagster.sh asset materialize --select poet_gguf
# The same variables the venv's activate script sets (scripts/venv_activation.py): DAGSTER_HOME is the repo root
# (dagster.yaml, run history under data/dagster/) and DAGSTER_MODULE_NAME the code location.
set -euo pipefail
cd "$(dirname "$0")/.."
export DAGSTER_HOME="$PWD"
if [ "${1:-}" = dev ]; then
  unset DAGSTER_MODULE_NAME  # dev finds the code location in pyproject.toml; with the variable set it hangs
else
  export DAGSTER_MODULE_NAME="${DAGSTER_MODULE_NAME:-distillery_assets.definitions}"
fi
export DAGSTER_TELEMETRY_DISABLED=1
mkdir -p data/dagster
exec .venv/bin/dagster "$@"
