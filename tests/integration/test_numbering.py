"""Operations are numbered from 1, as DBOS numbers them; a database written by an earlier
Waypoint (numbered from 0) is renumbered by a migration, and its unfinished workflows replay."""

from __future__ import annotations

from typing import Any

import pytest

from waypoint import DBOS, SetWorkflowID
from waypoint.core.serialization import Codec
from waypoint.storage.protocol import NewWorkflow, StepRecord
from waypoint.storage.registry import open_url

T0 = 1_700_000_000_000


def test_operations_children_and_forks_count_from_one(dbos: type[DBOS]) -> None:
    @DBOS.step()
    def one(x: int) -> int:
        return x + 1

    @DBOS.workflow()
    def child() -> str:
        return str(DBOS.workflow_id)

    @DBOS.workflow()
    def parent() -> list[Any]:
        first = one(0)
        name = child()
        return [first, name, DBOS.step_id]

    DBOS.launch()
    with SetWorkflowID("num"):
        assert parent() == [1, "num-2", None]
    steps = DBOS.list_workflow_steps("num")
    # The inline child takes position 2 and the wait for its result position 3, as in DBOS.
    assert [s["function_id"] for s in steps] == [1, 2, 3]
    assert steps[1]["child_workflow_id"] == "num-2"
    assert steps[2]["function_name"] == "DBOS.getResult"
    assert steps[2]["child_workflow_id"] == "num-2"
    # fork(id, n) re-runs from operation n: operation 1 is copied, 2 onwards runs again.
    with SetWorkflowID("num-fork"):
        forked = DBOS.fork_workflow("num", 2)
    assert forked.get_result(polling_interval_sec=0.05) == [1, "num-fork-2", None]


def _table(store: Any, name: str) -> str:
    return str(store.d.t(name))


def test_a_database_numbered_from_zero_is_renumbered(db_url: str, config: dict[str, Any]) -> None:
    if db_url.startswith("shards://"):
        pytest.skip("not with system_database_shards: rewrites one database's rows directly")
    codec = Codec()
    ser = codec.default
    DBOS.destroy(destroy_registry=True)
    DBOS(config={**config, "application_version": "v-old"})  # type: ignore[arg-type]
    ran: list[str] = []

    @DBOS.step()
    def first() -> str:
        ran.append("first")
        return "a"

    @DBOS.step()
    def second() -> str:
        ran.append("second")
        return "b"

    @DBOS.step()
    def third() -> str:
        ran.append("third")
        return "c"

    @DBOS.workflow()
    def old() -> str:
        return first() + second() + third()

    store = open_url(db_url)
    store.migrate()
    store.open()
    try:
        ops, hist, streams = (
            _table(store, t) for t in ("operation_outputs", "workflow_events_history", "streams")
        )
        # The state an earlier Waypoint left: schema version 4, operations 0 and 1 recorded
        # (with their writer's token), an event and stream values keyed by those numbers.
        store._exec(
            f"DELETE FROM {_table(store, 'waypoint_migrations')} WHERE version >= 5", {}, "t"
        )
        for wfid, owner in (("old-wp", "old-run"), ("dbos-wf", None)):
            store.init_workflow(
                NewWorkflow(
                    workflow_id=wfid,
                    status="PENDING",
                    name=old.__qualname__,
                    class_name=None,
                    config_name=None,
                    inputs=codec.encode_inputs((), {}, ser),
                    serialization=ser.name(),
                    owner_xid=owner or "dbos-run",
                    executor_id="local" if owner else "elsewhere",
                    application_version="v-old",
                    application_id=None,
                    application_name="waypoint-test",
                    created_at=T0,
                ),
                None,
            )
        for fid, (name, out) in enumerate([(first.__qualname__, "a"), (second.__qualname__, "b")]):
            store.record_step(
                StepRecord(
                    "old-wp", fid, name, codec.encode(out, ser), None, ser.name(), "old-run", T0, T0
                )
            )
        # DBOS's rows are numbered from 1 and carry no owner token: they stay as they are.
        for fid in (1, 2):
            store._exec(
                f"INSERT INTO {ops} (workflow_uuid, function_id, function_name, output) "
                "VALUES ('dbos-wf', %(fid)s, 'x', 'y')",
                {"fid": fid},
                "t",
            )
        store._exec(
            f"INSERT INTO {hist} (workflow_uuid, function_id, key, value) "
            "VALUES ('old-wp', 1, 'k', 'v'), ('old-wp', 0, 'k', 'u')",
            {},
            "t",
        )
        store._exec(
            f'INSERT INTO {streams} (workflow_uuid, key, value, "offset", function_id, write_key) '
            "VALUES ('old-wp', 's', 'x', 0, 0, 'wf:0'), ('old-wp', 's', 'y', 1, 1, 'step:1:0'), "
            "('old-wp', 's', 'z', 2, 1, 'wf:1')",
            {},
            "t",
        )

        store.migrate()  # applies the renumbering

        def rows(sql: str) -> list[Any]:
            return sorted(tuple(r) for r in store._all(sql, {}, "t"))

        assert rows(f"SELECT workflow_uuid, function_id FROM {ops}") == [
            ("dbos-wf", 1),
            ("dbos-wf", 2),
            ("old-wp", 1),
            ("old-wp", 2),
        ]
        assert rows(f"SELECT function_id, value FROM {hist}") == [(1, "u"), (2, "v")]
        assert rows(f'SELECT "offset", function_id, write_key FROM {streams}') == [
            (0, 1, "wf:1"),
            (1, 2, "step:2:0"),
            (2, 2, "wf:2"),
        ]
    finally:
        store.close()

    # The unfinished workflow replays its two recorded steps and runs only the third.
    DBOS.launch()
    try:
        assert DBOS.retrieve_workflow("old-wp").get_result(polling_interval_sec=0.05) == "abc"
        assert ran == ["third"]
        assert [s["function_id"] for s in DBOS.list_workflow_steps("old-wp")] == [1, 2, 3]
    finally:
        DBOS.destroy(destroy_registry=True)
