#!/usr/bin/env bash
# The main job, offline, on the embedded defaults: raw poems -> teaching data -> ChatML splits -> LoRA
# fine-tunes -> merged, quantized GGUF files (educator and poet), then one tutor session on those files.
#
#   bash scripts/demo.sh ["Write a poem about winter light"]
set -euo pipefail
cd "$(dirname "$0")/.."
request=${1:-"Write a poem about winter light"}
start=$(date +%s)

# DEMO_RUN_CONFIG=<file>: a run config for the materialization (benchmarks/main_job.py passes Dagster's executor
# defaults, to compare against this project's: assets/dead_runs.py).
bash scripts/dagster.sh asset materialize -m distillery_assets.definitions --select '*poet_gguf,*educator_gguf' \
  ${DEMO_RUN_CONFIG:+-c "$DEMO_RUN_CONFIG"}
echo
echo "=== materialized in $(( $(date +%s) - start )) s; the exports and their checks ==="
gguf_dir=$(.venv/bin/python -c 'from distillery_assets.paths import data_dir; print(data_dir() / "models" / "gguf")')
.venv/bin/python -m distillery_assets.training.report "$gguf_dir/educator" "$gguf_dir/poet"
echo
echo "=== a tutor session on the exported GGUF files ==="
.venv/bin/python -m distillery_assets.poetry.tutor "$request"
echo
echo "=== what made poet_gguf (the catalogue; every file and its sha256: ... catalog lineage poet_gguf) ==="
COLUMNS=${COLUMNS:-180} .venv/bin/python -m distillery_assets.catalog lineage --brief poet_gguf
echo
echo "Outputs are under data/ (GGUF files in data/models/). Browse them with: bash scripts/dagster.sh dev"
