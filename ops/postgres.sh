#!/usr/bin/env bash
# A private PostgreSQL cluster on loopback for the tests.
#   ops/postgres.sh install   apt-get install PostgreSQL if its binaries are missing
#   ops/postgres.sh start     initdb (once) and start; prints the SQLAlchemy URL on stdout
#   ops/postgres.sh stop      stop the cluster
#   ops/postgres.sh url       print the SQLAlchemy URL
# Settings: TOWER_PG_PORT (default 55432), TOWER_PG_DIR (default /tmp/tower-pg-$PORT).
set -euo pipefail
PORT="${TOWER_PG_PORT:-55432}"
BASE="${TOWER_PG_DIR:-/tmp/tower-pg-$PORT}"
DATA="$BASE/data"; SOCK="$BASE/sock"; LOG="$BASE/postgres.log"

find_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return 0; }
  return 1
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cmd="${1:-start}"
case "$cmd" in
  install)
    if ! find_bin >/dev/null; then
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq >&2
      apt-get install -y -qq postgresql >&2
    fi
    find_bin >/dev/null || { echo "PostgreSQL binaries not found after install" >&2; exit 1; }
    ;;
  start)
    BIN="$(find_bin)" || { echo "PostgreSQL is not installed: run 'bash ops/postgres.sh install' (apt-get install postgresql)" >&2; exit 1; }
    mkdir -p "$BASE" "$SOCK"
    [ "$(id -u)" = 0 ] && chown -R postgres "$BASE"
    if [ ! -f "$DATA/PG_VERSION" ]; then
      as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth=trust >"$BASE/initdb.log" 2>&1
    fi
    if ! as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
      as_pg "$BIN/pg_ctl" -D "$DATA" -o "-p $PORT -k $SOCK -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" -l "$LOG" -w start >&2
    fi
    echo "postgresql+psycopg://postgres@127.0.0.1:$PORT/postgres"
    ;;
  stop)
    BIN="$(find_bin)" || exit 0
    if [ -f "$DATA/PG_VERSION" ]; then as_pg "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >&2 || true; fi
    ;;
  url)
    echo "postgresql+psycopg://postgres@127.0.0.1:$PORT/postgres"
    ;;
  *) echo "usage: $0 install|start|stop|url" >&2; exit 2 ;;
esac
