#!/usr/bin/env bash
# Serve the team instance (deploy/team/dagster.yaml, on PostgreSQL) from the orchestrator host:
#   dagster-daemon run     the run queue (concurrency.runs, pools), backfills, sensors (free_dead_run_slots),
#                          schedules and run monitoring; in the background, stopped when this script ends
#   dagster-webserver      the UI, in the foreground; arguments go to it (default http://127.0.0.1:3000)
#
#   bash scripts/postgres.sh start                 # a local server (or set DAGSTER_PG_* for your own)
#   bash deploy/team/serve.sh                      # Ctrl-C stops both
#   bash deploy/team/serve.sh --host 0.0.0.0       # the UI for the team's browsers (behind your own auth)
#
# Connection: the DAGSTER_PG_* variables when DAGSTER_PG_HOST is set, else those of scripts/postgres.sh's server.
# Both processes load the code location from workspace.yaml, so DAGSTER_MODULE_NAME (set by the venv's activate)
# is dropped: with both, dagster 1.13 stops on "Invalid set of CLI arguments". docs/scale.md has the whole picture.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
if [ -z "${DAGSTER_PG_HOST:-}" ]; then
  connection=$(bash scripts/postgres.sh env) || exit 1
  eval "$connection"
fi
export DAGSTER_HOME="$repo/deploy/team" DAGSTER_TELEMETRY_DISABLED=1
unset DAGSTER_MODULE_NAME
mkdir -p data/dagster/team
echo "[team] DAGSTER_HOME=$DAGSTER_HOME, PostgreSQL $DAGSTER_PG_USERNAME@$DAGSTER_PG_HOST:$DAGSTER_PG_PORT/$DAGSTER_PG_DB"
.venv/bin/dagster-daemon run -w workspace.yaml &
daemon=$!
trap 'kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true' EXIT
.venv/bin/dagster-webserver -w workspace.yaml "$@"
