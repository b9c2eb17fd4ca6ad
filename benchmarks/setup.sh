#!/usr/bin/env bash
# Idempotent setup for the Waypoint-vs-DBOS benchmarks.
#  - benchmarks/.venv-dbos : python3 venv with dbos==3.4.0 (pinned)
#  - .venv                 : the Waypoint venv, with waypoint installed editable
set -euo pipefail

DBOS_VERSION="3.4.0"
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$BENCH_DIR/.." && pwd)"
DBOS_VENV="$BENCH_DIR/.venv-dbos"
WP_VENV="$REPO_DIR/.venv"
PYTHON="${PYTHON:-python3}"

# --- DBOS venv -------------------------------------------------------------
if [ ! -x "$DBOS_VENV/bin/python" ]; then
    echo "[setup] creating $DBOS_VENV"
    "$PYTHON" -m venv "$DBOS_VENV"
fi
if "$DBOS_VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('dbos') != '$DBOS_VERSION')" 2>/dev/null \
   && "$DBOS_VENV/bin/python" -c "import psycopg" 2>/dev/null; then
    echo "[setup] dbos==$DBOS_VERSION already installed"
else
    echo "[setup] installing dbos==$DBOS_VERSION"
    "$DBOS_VENV/bin/python" -m pip install --quiet --upgrade pip
    # psycopg[binary] so the floor workload runs without libpq on the host.
    "$DBOS_VENV/bin/python" -m pip install --quiet "dbos==$DBOS_VERSION" "psycopg[binary]>=3.1"
fi

# --- Waypoint venv ---------------------------------------------------------
if [ ! -x "$WP_VENV/bin/python" ]; then
    echo "[setup] creating $WP_VENV"
    "$PYTHON" -m venv "$WP_VENV"
fi
if "$WP_VENV/bin/python" -m pip install --quiet -e "$REPO_DIR"; then
    echo "[setup] waypoint installed editable into $WP_VENV"
else
    echo "[setup] WARNING: 'pip install -e $REPO_DIR' failed; waypoint benchmarks will report n/a" >&2
fi
if ! "$WP_VENV/bin/python" -c "import psycopg" 2>/dev/null; then
    "$WP_VENV/bin/python" -m pip install --quiet "psycopg[binary]>=3.1" \
        || echo "[setup] WARNING: could not install psycopg into $WP_VENV" >&2
fi
if ! "$WP_VENV/bin/python" -c "import waypoint" 2>/dev/null; then
    echo "[setup] WARNING: 'import waypoint' fails in $WP_VENV (library incomplete?)" >&2
fi
echo "[setup] done"
