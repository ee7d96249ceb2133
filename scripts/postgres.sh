#!/usr/bin/env bash
# A local PostgreSQL for the team instance (deploy/team/dagster.yaml): for development, tests and a one-host team.
#
#   bash scripts/postgres.sh install   # the server (apt-get install postgresql, when initdb is missing) and a cluster
#   bash scripts/postgres.sh start     # start it on 127.0.0.1, create the user and database, `dagster instance migrate`
#   bash scripts/postgres.sh status    # running or not, and where
#   bash scripts/postgres.sh env       # the variables the team instance reads: eval "$(bash scripts/postgres.sh env)"
#   bash scripts/postgres.sh stop      # pg_ctl stop -m fast (active connections are closed, nothing is lost)
#
# Every command is idempotent. Variables:
#   DISTILLERY_PG_DIR   the cluster's folder (default data/postgres, git-ignored): cluster/ (PGDATA), run/ (its unix
#                       socket, owner only), log/postgres.log, connection.env (host, port, user, database and the
#                       generated password; mode 600)
#   DAGSTER_PG_PORT     the loopback port, recorded in connection.env at install (default 5433: 5432 is left to a
#                       system server); set it again at start to move the cluster to another port
#   DISTILLERY_PG_OS_USER  the unprivileged account that owns and runs the cluster when this runs as root
#                       (default postgres; initdb and postgres refuse to run as root)
#   DISTILLERY_PG_BIN   the folder with initdb and pg_ctl (default: the newest /usr/lib/postgresql/*/bin, or PATH)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dir=$(realpath -m "${DISTILLERY_PG_DIR:-$repo/data/postgres}")
pgdata=$dir/cluster
conn=$dir/connection.env
team_home=$repo/deploy/team
default_port=5433

say() { echo "[postgres] $*"; }
die() { echo "[postgres] error: $*" >&2; exit 1; }

find_bin() {
  if [ -n "${DISTILLERY_PG_BIN:-}" ]; then
    [ -x "$DISTILLERY_PG_BIN/initdb" ] || die "DISTILLERY_PG_BIN=$DISTILLERY_PG_BIN has no initdb"
    echo "$DISTILLERY_PG_BIN"; return
  fi
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$found" ] && [ -x "$found/initdb" ]; then echo "$found"; return; fi
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
  return 1
}

install_server() {
  if find_bin >/dev/null; then return; fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    die "the PostgreSQL server (initdb, pg_ctl) is not installed. Install it (Debian/Ubuntu: sudo apt-get install
       postgresql; macOS: brew install postgresql@15), or set DISTILLERY_PG_BIN to the folder holding initdb."
  fi
  say "installing the PostgreSQL server: apt-get install -y postgresql"
  # Debian's package would create and start a system cluster on 5432 as well; this project makes its own.
  if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q postgresql >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null; } \
    || die "apt-get install postgresql failed (see its output above)"
  find_bin >/dev/null || die "apt-get installed postgresql but no initdb was found under /usr/lib/postgresql/*/bin"
}

owner=$(id -un)
if [ "$(id -u)" = 0 ]; then owner=${DISTILLERY_PG_OS_USER:-postgres}; fi
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u "$owner" -- "$@"; else "$@"; fi
}

# connection.env: KEY=value lines, read without sourcing (the password is generated: 32 hex digits)
setting() { if [ -f "$conn" ]; then sed -n "s/^$1=//p" "$conn" | tail -n 1; fi; }

write_connection() {  # port
  local password
  password=$(setting DAGSTER_PG_PASSWORD)
  [ -n "$password" ] || password=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
  local tmp=$conn.tmp-$$
  ( umask 077
    printf '%s\n' "DAGSTER_PG_HOST=127.0.0.1" "DAGSTER_PG_PORT=$1" "DAGSTER_PG_USERNAME=distillery" \
      "DAGSTER_PG_PASSWORD=$password" "DAGSTER_PG_DB=distillery" > "$tmp" )
  mv "$tmp" "$conn"
}

cmd_install() {
  install_server
  local bin
  bin=$(find_bin)
  if [ "$(id -u)" = 0 ] && ! id "$owner" >/dev/null 2>&1; then
    die "no user '$owner' to run PostgreSQL as (initdb refuses root): create one, or set DISTILLERY_PG_OS_USER"
  fi
  mkdir -p "$dir"
  chmod 755 "$dir"
  for sub in cluster run log; do
    mkdir -p "$dir/$sub"
    if [ "$(id -u)" = 0 ]; then chown "$owner:" "$dir/$sub"; fi
    chmod 700 "$dir/$sub"
  done
  if ! as_owner test -w "$pgdata"; then
    die "user '$owner' cannot write $pgdata: a folder above it is closed to that user (e.g. /root or
       /tmp/pytest-of-root is mode 700). Set DISTILLERY_PG_DIR to a folder it can reach (e.g. under /srv or /tmp)."
  fi
  local port=${DAGSTER_PG_PORT:-$(setting DAGSTER_PG_PORT)}
  write_connection "${port:-$default_port}"
  if [ -f "$pgdata/PG_VERSION" ]; then
    say "cluster $pgdata exists (PostgreSQL $(cat "$pgdata/PG_VERSION"))"
    return
  fi
  say "initdb $pgdata (PostgreSQL $("$bin/pg_ctl" --version | awk '{print $3}'), owner $owner)"
  # local (unix socket, in run/ which only the owner can enter): trust, for the owner's admin commands below;
  # TCP on loopback: password (scram-sha-256) for everyone else
  as_owner "$bin/initdb" -D "$pgdata" -E UTF8 --locale=C --auth-local=trust --auth-host=scram-sha-256 \
    >"$dir/log/initdb.log" 2>&1 || { cat "$dir/log/initdb.log" >&2; die "initdb failed (log above)"; }
  as_owner tee -a "$pgdata/postgresql.conf" >/dev/null <<EOF

# written by scripts/postgres.sh: loopback only; the port is given at start (connection.env)
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir/run'
unix_socket_permissions = 0700
EOF
}

running() { as_owner "$(find_bin)/pg_ctl" status -D "$pgdata" >/dev/null 2>&1; }

admin_sql() {  # SQL on stdin, as the cluster's superuser over the owner-only socket
  as_owner "$(find_bin)/psql" -h "$dir/run" -p "$(setting DAGSTER_PG_PORT)" -d postgres -v ON_ERROR_STOP=1 -qtA -f -
}

cmd_start() {
  if running && [ -n "${DAGSTER_PG_PORT:-}" ] && [ "$DAGSTER_PG_PORT" != "$(setting DAGSTER_PG_PORT)" ]; then
    die "the cluster in $pgdata is running on port $(setting DAGSTER_PG_PORT), not DAGSTER_PG_PORT=$DAGSTER_PG_PORT: stop it first"
  fi
  cmd_install
  local port bin
  port=$(setting DAGSTER_PG_PORT)
  bin=$(find_bin)
  if running; then
    say "already running: $pgdata on 127.0.0.1:$port"
  else
    say "starting $pgdata on 127.0.0.1:$port (log: $dir/log/postgres.log)"
    if ! as_owner "$bin/pg_ctl" start -w -t 60 -D "$pgdata" -l "$dir/log/postgres.log" -o "-p $port" >/dev/null; then
      tail -n 15 "$dir/log/postgres.log" >&2 || true
      die "PostgreSQL did not start (log above; a port in use: DAGSTER_PG_PORT=<free port> bash scripts/postgres.sh start)"
    fi
  fi
  local password
  password=$(setting DAGSTER_PG_PASSWORD)
  # the role and database, created once; the password is (re)set from connection.env every start
  admin_sql >/dev/null <<EOF
\set pw '$password'
SELECT 'CREATE ROLE distillery LOGIN' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'distillery') \gexec
ALTER ROLE distillery PASSWORD :'pw';
SELECT 'CREATE DATABASE distillery OWNER distillery' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'distillery') \gexec
EOF
  say "database distillery, user distillery on 127.0.0.1:$port"
  if [ "${DISTILLERY_PG_MIGRATE:-1}" = 0 ]; then return; fi
  [ -x "$repo/.venv/bin/dagster" ] || die "no $repo/.venv/bin/dagster to migrate the instance with: run bash scripts/setup.sh"
  say "dagster instance migrate (DAGSTER_HOME=$team_home)"
  if ! ( cd "$repo" && export_connection && export DAGSTER_HOME=$team_home DAGSTER_TELEMETRY_DISABLED=1 \
      && "$repo/.venv/bin/dagster" instance migrate ) >"$dir/log/migrate.log" 2>&1; then
    tail -n 20 "$dir/log/migrate.log" >&2
    die "dagster instance migrate failed against 127.0.0.1:$port (log above, whole: $dir/log/migrate.log)"
  fi
  say "instance migrated: $(sed -n '/after migration/,$p' "$dir/log/migrate.log" | grep -c 'current:') storages at" \
      "schema $(sed -n '/after migration/,$p' "$dir/log/migrate.log" | sed -n 's/ *current: //p' | sort -u | tr '\n' ' ')" \
      "(log: $dir/log/migrate.log)"
}

export_connection() {
  local key
  for key in DAGSTER_PG_HOST DAGSTER_PG_PORT DAGSTER_PG_USERNAME DAGSTER_PG_PASSWORD DAGSTER_PG_DB; do
    export "$key=$(setting "$key")"
  done
}

cmd_stop() {
  if ! find_bin >/dev/null || [ ! -f "$pgdata/PG_VERSION" ]; then say "no cluster in $pgdata: nothing to stop"; return; fi
  if ! running; then say "not running: $pgdata"; return; fi
  as_owner "$(find_bin)/pg_ctl" stop -D "$pgdata" -m fast -w -t 60 >/dev/null || die "pg_ctl stop failed (log: $dir/log/postgres.log)"
  say "stopped $pgdata"
}

cmd_status() {
  if ! find_bin >/dev/null; then say "the PostgreSQL server is not installed (bash scripts/postgres.sh install)"; return 3; fi
  if [ ! -f "$pgdata/PG_VERSION" ]; then say "no cluster in $pgdata (bash scripts/postgres.sh install)"; return 3; fi
  if running; then
    say "running: $pgdata on 127.0.0.1:$(setting DAGSTER_PG_PORT), database $(setting DAGSTER_PG_DB), user $(setting DAGSTER_PG_USERNAME)"
    "$(find_bin)/pg_isready" -h 127.0.0.1 -p "$(setting DAGSTER_PG_PORT)" | sed 's/^/[postgres] /'
  else
    say "stopped: $pgdata (port $(setting DAGSTER_PG_PORT))"
    return 3
  fi
}

cmd_env() {
  [ -f "$conn" ] || die "no $conn yet: bash scripts/postgres.sh start"
  echo "export DAGSTER_HOME=$(printf %q "$team_home")"
  local key
  for key in DAGSTER_PG_HOST DAGSTER_PG_PORT DAGSTER_PG_USERNAME DAGSTER_PG_PASSWORD DAGSTER_PG_DB; do
    echo "export $key=$(setting "$key")"
  done
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) echo "usage: bash scripts/postgres.sh install|start|stop|status|env  (see the top of this file)" >&2; exit 2 ;;
esac
