"""The standing chaos campaign, in the default suite: a fixed seed, every fault this machine
can make for the backend, and the checker's verdict (tests/chaos/campaign.py).

PostgreSQL (a private server) runs 2 minutes of faults, SQLite 1 minute (its faults are
fewer: kills, pauses, a full disk, clock jumps). ``scripts/chaos.sh`` runs longer campaigns
and other seeds. On failure the output names the seed, the fault schedule and every
violation, and the history stays in the temporary directory for a replay by hand.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BACKENDS

REPO = Path(__file__).resolve().parents[2]
SEED = 20261201
MINUTES = {"postgres": 2.0, "sqlite": 1.0}

pytestmark = pytest.mark.crash


@pytest.mark.timeout(1200)
@pytest.mark.parametrize(
    "backend",
    [pytest.param(b, marks=pytest.mark.xdist_group(f"chaos-{b}")) for b in BACKENDS],
)
def test_chaos_campaign_finds_no_violation(backend: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.chaos.campaign", "--backend", backend,
         "--minutes", str(MINUTES[backend]), "--seed", str(SEED), "--workdir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=1100,
    )  # fmt: skip
    print(done.stdout)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-6000:]}"
    assert "violations: 0" in done.stdout
