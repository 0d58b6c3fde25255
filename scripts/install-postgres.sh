#!/usr/bin/env bash
# Install Debian's PostgreSQL (if missing) and run a private cluster on loopback for the prod profile.
#
#   scripts/install-postgres.sh install   # only make sure the packages are there (root, apt)
#   scripts/install-postgres.sh start     # install if needed, init the cluster once, start it, create role + db
#   scripts/install-postgres.sh stop      # stop the cluster (data kept)
#
# Everything comes from the same environment variables deploy/prod/dagster.yaml reads, so the
# database this script creates is the one Dagster connects to:
#   DAGSTER_PG_PORT (55432)  DAGSTER_PG_DB (dagster)  DAGSTER_PG_USERNAME (dagster)
#   DAGSTER_PG_PASSWORD (required for start: never defaulted, never written to the repo)
#   QLORA_PG_DATA  cluster directory (default /var/tmp/qlora-postgres-$DAGSTER_PG_PORT)
# Idempotent and quick when already done: no apt call if the binaries exist, no initdb if the
# cluster exists, no start if it runs. The server listens on 127.0.0.1 only; its unix socket lives
# in the (0700) data directory, so only the cluster's owner can use the password-less socket.
set -euo pipefail

ACTION="${1:-start}"
PORT="${DAGSTER_PG_PORT:-55432}"
DB="${DAGSTER_PG_DB:-dagster}"
DB_USER="${DAGSTER_PG_USERNAME:-dagster}"
DATA="${QLORA_PG_DATA:-/var/tmp/qlora-postgres-$PORT}"

say() { echo "install-postgres: $*" >&2; }
die() { say "error: $*"; exit 1; }

pg_bindir() {
  # Newest installed major version (Debian puts each under /usr/lib/postgresql/<major>/bin).
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

install_packages() {
  [ -n "$(pg_bindir)" ] && return 0
  [ "$(id -u)" -eq 0 ] || die "PostgreSQL is not installed and installing needs root: sudo apt-get install postgresql"
  export DEBIAN_FRONTEND=noninteractive
  # A fresh image has empty package lists; refresh only then (or when the install fails on stale lists).
  if ! compgen -G "/var/lib/apt/lists/*_Packages" >/dev/null; then apt-get update -q; fi
  if ! apt-get install -y -q --no-install-recommends postgresql; then
    apt-get update -q && apt-get install -y -q --no-install-recommends postgresql
  fi
  [ -n "$(pg_bindir)" ] || die "apt-get installed postgresql but no /usr/lib/postgresql/*/bin exists"
}

# initdb and postgres refuse to run as root: as root, run them as Debian's postgres user.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

init_cluster() {
  local bin="$1"
  [ -f "$DATA/PG_VERSION" ] && return 0
  say "creating cluster in $DATA (port $PORT)"
  mkdir -p "$DATA"
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$DATA"; fi
  chmod 700 "$DATA"
  local log; log="$(mktemp)"
  as_owner "$bin/initdb" -D "$DATA" -U postgres -E UTF8 --no-locale \
    --auth-local=trust --auth-host=scram-sha-256 >"$log" 2>&1 \
    || { cat "$log" >&2; rm -f "$log"; die "initdb failed for $DATA"; }
  rm -f "$log"
  # Loopback only; the socket sits in the private data dir, not the shared /var/run/postgresql.
  as_owner tee -a "$DATA/postgresql.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DATA'
max_connections = 200
EOF
}

start_cluster() {
  local bin="$1"
  if as_owner "$bin/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then return 0; fi
  say "starting cluster $DATA on 127.0.0.1:$PORT"
  as_owner "$bin/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 start >/dev/null \
    || { tail -n 20 "$DATA/server.log" >&2 || true; die "postgres did not start (log: $DATA/server.log)"; }
}

ensure_role_and_db() {
  local bin="$1"
  # psql variables (:'pw', :"user") quote the values, so any password is safe here.
  as_owner "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$DATA" -p "$PORT" -U postgres -d postgres \
    -v user="$DB_USER" -v pw="$DAGSTER_PG_PASSWORD" -v db="$DB" >/dev/null <<'SQL'
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'user') AS role_missing \gset
\if :role_missing
  CREATE ROLE :"user" LOGIN PASSWORD :'pw';
\else
  ALTER ROLE :"user" LOGIN PASSWORD :'pw';
\endif
SELECT NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') AS db_missing \gset
\if :db_missing
  CREATE DATABASE :"db" OWNER :"user";
\endif
SQL
}

case "$ACTION" in
  install)
    install_packages ;;
  start)
    [ -n "${DAGSTER_PG_PASSWORD:-}" ] || die "set DAGSTER_PG_PASSWORD (the Dagster role's password; secrets come from the environment only)"
    install_packages
    BIN="$(pg_bindir)"
    init_cluster "$BIN"
    start_cluster "$BIN"
    ensure_role_and_db "$BIN"
    say "ready: postgresql://$DB_USER@127.0.0.1:$PORT/$DB" ;;
  stop)
    BIN="$(pg_bindir)"
    [ -n "$BIN" ] && [ -f "$DATA/PG_VERSION" ] || exit 0
    as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null 2>&1 || true ;;
  *)
    die "unknown action '$ACTION' (use install, start or stop)" ;;
esac
