#!/usr/bin/env bash
# The whole test suite, from a fresh clone: creates .venv, installs Waypoint with its test
# tools, starts PostgreSQL if none answers on 127.0.0.1:5432, then runs ruff, mypy, the
# documentation build (mkdocs --strict) and pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/integration -k sleep).
# pytest runs on several processes (pytest-xdist; WAYPOINT_TEST_WORKERS, default 4: most tests
# wait on subprocesses, servers and sleeps, so 4 workers keep 2 cores busy; 0 runs in-process).
# The interop tier (tests/interop, against dbos==2.31.1 in .interop-venv, built on first run and
# then reused) is part of the suite; --no-interop (first) leaves it out.
# --pg-matrix (first) runs, instead, tests/integration, tests/storage and tests/crash against a
# private server of each PostgreSQL version in WAYPOINT_PG_MATRIX (default 14,15,16,18; see
# tests/pg_matrix.py): slow, so not part of the default run.
# --shards (first) runs tests/storage and tests/integration (or the paths given) in the sharded
# mode only: the system database spread over three servers (docs/operations/sharding.md); the
# default run has the storage contract and tests/integration/test_sharding.py sharded.
# For the sharded mode it starts two more PostgreSQL servers (tests/shard_servers.py) and
# exports WAYPOINT_TEST_SHARDS; they keep running after the suite, for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
export WAYPOINT_TEST_INTEROP=${WAYPOINT_TEST_INTEROP:-1}
pg_matrix=0
if [ "${1:-}" = "--pg-matrix" ]; then  # the PostgreSQL tiers on 14, 15, 16 and 18 instead
  pg_matrix=1
  shift
elif [ "${1:-}" = "--shards" ]; then  # the storage and integration tiers on three shards
  export WAYPOINT_TEST_BACKENDS=shards
  shift
  [ $# -gt 0 ] || set -- tests/storage tests/integration tests/crash/test_sharded_crash.py
elif [ "${1:-}" = "--no-interop" ]; then
  export WAYPOINT_TEST_INTEROP=0
  shift
elif [ "${1:-}" = "--interop" ]; then  # the default now; accepted as before
  shift
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev,docs]"

pg_up() {
  .venv/bin/python -c '
import sys, psycopg
try:
    psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", connect_timeout=3).close()
except Exception:
    sys.exit(1)
' 2>/dev/null
}

if [ "${WAYPOINT_TEST_BACKENDS:-sqlite,postgres}" != "sqlite" ] && ! pg_up; then
  echo "PostgreSQL is not reachable on 127.0.0.1:5432; starting it"
  if ! command -v pg_ctlcluster >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
  fi
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  pg_up || { echo "could not start PostgreSQL on 127.0.0.1:5432" >&2; exit 1; }
fi

# pgbouncer, for the connection-pooler tests (they skip without it).
if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ] \
   && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbouncer >/dev/null 2>&1 \
    || echo "could not install pgbouncer; its tests will be skipped"
fi

# Prometheus and promtool, for the metrics tests (they skip without them).
if ! command -v prometheus >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
   && [ "$(id -u)" = 0 ]; then
  { apt-get update -q >/dev/null 2>&1 \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus \
      >/dev/null 2>&1; } || echo "could not install prometheus; its tests will be skipped"
fi

# Chromium and its driver, for the console's browser tests (they skip without them).
if { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; } \
   && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  { apt-get update -q >/dev/null 2>&1 \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver \
      >/dev/null 2>&1; } || echo "could not install chromium; the console's browser tests will be skipped"
fi

.venv/bin/ruff check waypoint tests examples benchmarks scripts
.venv/bin/ruff format --check --quiet waypoint tests examples benchmarks scripts
.venv/bin/mypy
docs_site=$(mktemp -d)  # (not --quiet: it hides the warnings that --strict counts)
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir "$docs_site/site" \
  >"$docs_site/log" 2>&1 || { cat "$docs_site/log" >&2; rm -rf "$docs_site"; exit 1; }
rm -rf "$docs_site"
# Two more PostgreSQL servers (5433, 5434; tests/shard_servers.py) beside the shared one, for
# the sharded backend mode: started (or reused) unless WAYPOINT_TEST_BACKENDS leaves shards out.
# If they cannot be started, say why and leave WAYPOINT_TEST_SHARDS unset.
case ",${WAYPOINT_TEST_BACKENDS:-shards}," in
  *,shards,*)
    if [ "$pg_matrix" = 0 ] && [ -z "${WAYPOINT_TEST_SHARDS:-}" ]; then
      if shards=$(.venv/bin/python -m tests.shard_servers start); then
        export WAYPOINT_TEST_SHARDS=$shards
      else
        echo "the shard servers did not start (above); WAYPOINT_TEST_SHARDS is left unset" >&2
      fi
    fi ;;
esac
workers=${WAYPOINT_TEST_WORKERS:-4}
if [ "$pg_matrix" = 1 ]; then
  exec .venv/bin/python -m tests.pg_matrix "$@"
fi
if [ "$workers" = 0 ]; then
  .venv/bin/python -m pytest "$@"
else
  .venv/bin/python -m pytest -n "$workers" --dist loadgroup "$@"
fi
