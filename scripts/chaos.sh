#!/usr/bin/env bash
# A chaos campaign (tests/chaos/campaign.py): workers and DBOSClient producers under a seeded
# schedule of faults (SIGKILL, SIGSTOP, PostgreSQL crash-restarts, terminated backends, network
# cuts, latency and black holes through a proxy, a full disk, wall-clock jumps, pgbouncer in
# the path), then a Jepsen-style checker over the recorded history and the database.
#   bash scripts/chaos.sh [--minutes N] [--seed S] [--backend postgres|sqlite] [--workdir DIR]
# Defaults: 3 minutes, seed 1, postgres (a PRIVATE server it starts; never the shared 5432).
# Exit status 1 on any violation; the report names the seed and the fault schedule.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev,docs]"
fi
# libfaketime (wall-clock jumps) and pgbouncer, as root on Debian; without them those faults
# are skipped and the report says so.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  if [ ! -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] \
     || ! { command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; }; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q faketime libfaketime pgbouncer \
      >/dev/null 2>&1 || echo "could not install faketime/pgbouncer; those faults are skipped"
  fi
fi
exec .venv/bin/python -m tests.chaos.campaign "$@"
