"""SIGKILL of a worker whose workflows are spread over three shards: every workflow completes,
no checkpointed step runs again, and a step that was not checkpointed runs exactly once more
(the same assertions as on one database, ``test_crash``)."""

from __future__ import annotations

import pytest

from tests.conftest import BACKENDS
from tests.crash import test_crash
from tests.crash.harness import Harness

pytestmark = pytest.mark.skipif(
    not {"postgres", "shards"} & set(BACKENDS), reason="needs PostgreSQL"
)


def test_sigkill_many_concurrent_workflows_across_shards(sharded_harness: Harness) -> None:
    test_crash.test_sigkill_many_concurrent_workflows(sharded_harness)
    placed = {
        r[0]
        for r in sharded_harness._query(
            "SELECT current_database() FROM {workflow_status} GROUP BY 1"
        )
    }
    assert len(placed) == 3  # the workload really was spread over every shard
