#!/usr/bin/env bash
# Run the dagster CLI against this project's persistent instance (dagster.yaml in the repo root):
#   bash scripts/dagster.sh dev
#   bash scripts/dagster.sh asset materialize -m distillery_assets.definitions --select poet_gguf
set -euo pipefail
cd "$(dirname "$0")/.."
export DAGSTER_HOME="$PWD"
export DAGSTER_TELEMETRY_DISABLED=1
mkdir -p data/dagster
exec .venv/bin/dagster "$@"
