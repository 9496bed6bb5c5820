#!/usr/bin/env bash
# Runs the test suite with a private PostgreSQL cluster (started here, stopped on exit).
set -uo pipefail
cd "$(dirname "$0")/.."
bash ops/postgres.sh install
URL="$(bash ops/postgres.sh start)" || { echo "could not start PostgreSQL" >&2; exit 1; }
trap 'bash ops/postgres.sh stop' EXIT
export TOWER_TEST_DATABASE_URL="$URL"
export TOWER_REQUIRE_POSTGRES=1
.venv/bin/python -m pytest "$@"
