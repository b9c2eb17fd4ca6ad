"""Role checks and authentication, as DBOS 2.31 applies them: ``@DBOS.required_roles``,
``@DBOS.default_required_roles``, ``DBOS.set_authentication`` / ``DBOSContextSetAuth``, what
is recorded in ``workflow_status`` and what the running code sees."""

from __future__ import annotations

import threading
from typing import Any, Optional

import pytest
import sqlalchemy as sa

from waypoint import DBOS, DBOSConfiguredInstance, DBOSContextSetAuth, Queue, SetWorkflowID
from waypoint.error import DBOSException, DBOSNotAuthorizedError

Seen = tuple[Optional[str], Optional[list[str]], Optional[str]]


def seen() -> Seen:
    return (DBOS.authenticated_user, DBOS.authenticated_roles, DBOS.assumed_role)


def recorded(workflow_id: str) -> tuple[str, Seen]:
    st = DBOS.get_workflow_status(workflow_id)
    assert st is not None
    return st.status, (st.authenticated_user, st.authenticated_roles, st.assumed_role)


def test_direct_calls_check_before_anything_is_written(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    @DBOS.required_roles(["admin", "user"])
    def inner_check() -> Seen:
        return seen()

    @DBOS.required_roles(["admin", "user"])
    @DBOS.workflow()
    def outer_check() -> Seen:
        return seen()

    DBOS.launch()
    for wf in (inner_check, outer_check):
        name = wf.__name__
        with DBOSContextSetAuth("joe", ["x", "user"]), SetWorkflowID(f"{name}-ok"):
            assert wf() == ("joe", ["x", "user"], "user")
        # A direct call records the role it assumed.
        assert recorded(f"{name}-ok") == ("SUCCESS", ("joe", ["x", "user"], "user"))
        with DBOSContextSetAuth("joe", ["x"]), SetWorkflowID(f"{name}-denied"):
            with pytest.raises(DBOSNotAuthorizedError, match="not authenticated for any"):
                wf()
        with SetWorkflowID(f"{name}-anonymous"):
            with pytest.raises(DBOSNotAuthorizedError, match="without authentication info"):
                wf()
        assert DBOS.get_workflow_status(f"{name}-denied") is None
        assert DBOS.get_workflow_status(f"{name}-anonymous") is None
    assert seen() == (None, None, None)  # nothing left once the blocks are over


def test_started_and_enqueued_workflows_are_checked_when_they_run(dbos: type[DBOS]) -> None:
    queue = Queue("auth-queue")

    @DBOS.workflow()
    @DBOS.required_roles(["admin"])
    def guarded() -> Seen:
        return seen()

    @DBOS.workflow()
    def child() -> Seen:
        return seen()

    @DBOS.workflow()
    @DBOS.required_roles(["admin"])
    def parent() -> tuple[Seen, Seen]:
        return seen(), DBOS.start_workflow(child).get_result()

    DBOS.launch()
    for how in ("start", "enqueue"):

        def run(wf: Any, wfid: str) -> Any:
            with SetWorkflowID(wfid):
                if how == "start":
                    return DBOS.start_workflow(wf)
                return queue.enqueue(wf)

        with DBOSContextSetAuth("ann", ["admin"]):
            ok = run(guarded, f"{how}-ok")
        assert ok.get_result() == ("ann", ["admin"], "admin")
        # The row records the starter's assumed role (none here), not the body's.
        assert recorded(f"{how}-ok") == ("SUCCESS", ("ann", ["admin"], None))

        with DBOSContextSetAuth("bob", ["guest"]):
            denied = run(guarded, f"{how}-denied")
        with pytest.raises(DBOSNotAuthorizedError):
            denied.get_result()
        assert recorded(f"{how}-denied") == ("ERROR", ("bob", ["guest"], None))

        with DBOSContextSetAuth("ann", ["admin"]):
            family = run(parent, f"{how}-parent")
        own, of_child = family.get_result()
        # The child inherits the user and the role its parent assumed, and records them.
        assert own == of_child == ("ann", ["admin"], "admin")
        assert recorded(f"{how}-parent-1") == ("SUCCESS", ("ann", ["admin"], "admin"))


def test_class_defaults_and_overrides(dbos: type[DBOS]) -> None:
    @DBOS.default_required_roles(["staff"])
    class Desk(DBOSConfiguredInstance):
        def __init__(self) -> None:
            super().__init__("front")

        @DBOS.workflow()
        def serve(self) -> Seen:
            return seen()

        @staticmethod
        @DBOS.workflow()
        @DBOS.required_roles(["manager"])
        def close() -> Seen:
            return seen()

        @classmethod
        @DBOS.workflow()
        def count(cls) -> Optional[str]:
            return DBOS.assumed_role

        def helper(self) -> str:  # not a workflow: no check
            return "plain"

    desk = Desk()
    DBOS.launch()
    with DBOSContextSetAuth("sam", ["staff"]):
        assert desk.serve() == ("sam", ["staff"], "staff")
        assert Desk.count() == "staff"
        with pytest.raises(DBOSNotAuthorizedError, match=r"Desk\.close"):
            Desk.close()
        handle = DBOS.start_workflow(desk.serve)
        assert handle.get_result() == ("sam", ["staff"], "staff")
    with DBOSContextSetAuth("max", ["manager"]):
        assert Desk.close() == ("max", ["manager"], "manager")
        with pytest.raises(DBOSNotAuthorizedError, match=r"Desk\.serve"):
            desk.serve()
        assert desk.helper() == "plain"
    # The class is registered as @DBOS.dbos_class() would register it.
    status = DBOS.get_workflow_status(handle.workflow_id)
    assert status is not None
    assert (status.class_name, status.config_name) == (Desk.__qualname__, "front")


def test_steps_check_when_a_workflow_calls_them(dbos: type[DBOS]) -> None:
    calls: list[Optional[str]] = []

    @DBOS.step()
    @DBOS.required_roles(["ops"])
    def restart() -> Optional[str]:
        calls.append(DBOS.assumed_role)
        return DBOS.assumed_role

    @DBOS.required_roles(["ops"])
    @DBOS.step()
    def drain() -> Optional[str]:
        return DBOS.assumed_role

    @DBOS.workflow()
    def maintenance() -> tuple[Optional[str], Optional[str], Optional[str]]:
        before = DBOS.assumed_role
        return restart(), drain(), before

    DBOS.launch()
    with DBOSContextSetAuth("olga", ["ops"]):
        assert maintenance() == ("ops", "ops", None)
    with DBOSContextSetAuth("ivan", ["dev"]), SetWorkflowID("maintenance-denied"):
        with pytest.raises(DBOSNotAuthorizedError):
            maintenance()
    assert recorded("maintenance-denied")[0] == "ERROR"
    steps = DBOS.list_workflow_steps("maintenance-denied")
    assert steps == [], "a denied step must not be recorded"
    assert calls == ["ops"]


def test_set_authentication_and_plain_functions(dbos: type[DBOS]) -> None:
    @DBOS.required_roles(["finance"])
    def payroll() -> Optional[str]:
        return DBOS.assumed_role

    @DBOS.required_roles(["finance"])
    async def payroll_async() -> Optional[str]:
        return DBOS.assumed_role

    @DBOS.workflow()
    def monthly() -> tuple[Seen, Optional[str]]:
        DBOS.set_authentication("bot", ["finance"])  # for what the body calls from here
        return seen(), payroll()

    DBOS.launch()
    assert seen() == (None, None, None)
    with pytest.raises(DBOSNotAuthorizedError):
        payroll()
    with DBOSContextSetAuth("kim", ["finance"]):
        assert payroll() == "finance"
        assert DBOS.assumed_role is None  # only while the function runs
        import asyncio

        assert asyncio.run(payroll_async()) == "finance"
    with DBOSContextSetAuth("kim", []):
        assert DBOS.authenticated_roles == []
        with SetWorkflowID("empty-roles"):
            assert monthly() == (("bot", ["finance"], None), "finance")
    # An empty role list is stored as NULL, as DBOS stores it.
    assert recorded("empty-roles") == ("SUCCESS", ("kim", None, None))


def test_bad_role_lists_are_refused(dbos: type[DBOS]) -> None:
    with pytest.raises(DBOSException, match="list of role names"):
        DBOS.required_roles("admin")  # type: ignore[arg-type]
    with pytest.raises(DBOSException, match="list of role names"):
        DBOS.default_required_roles([1])  # type: ignore[list-item]
    with pytest.raises(DBOSException, match="list of role names"):
        DBOS.set_authentication("u", "admin")  # type: ignore[arg-type]


def test_a_recovered_workflow_runs_with_its_recorded_authentication(
    dbos: type[DBOS], config: dict[str, Any]
) -> None:
    config = {**config, "application_version": "v1"}
    entered, release = threading.Event(), threading.Event()
    runs: list[Seen] = []

    def define() -> None:
        @DBOS.step()
        def hold() -> None:
            if not entered.is_set():  # the first execution stops here, as if it crashed
                entered.set()
                release.wait(60)

        @DBOS.required_roles(["admin"])
        @DBOS.workflow()
        def guarded() -> Seen:
            hold()
            runs.append(seen())
            return seen()

        define.guarded = guarded  # type: ignore[attr-defined]

    DBOS.destroy(destroy_registry=True)
    DBOS(config=config)  # type: ignore[arg-type]
    define()
    DBOS.launch()
    try:
        with DBOSContextSetAuth("root", ["user", "admin"]), SetWorkflowID("recovered-auth"):
            DBOS.start_workflow(define.guarded)  # type: ignore[attr-defined]
        assert entered.wait(30)
        # A new runtime (same executor and version) takes the workflow back at launch.
        DBOS.destroy(destroy_registry=True)
        DBOS(config=config)  # type: ignore[arg-type]
        define()
        DBOS.launch()
        result = DBOS.retrieve_workflow("recovered-auth").get_result(polling_interval_sec=0.05)
        assert result == ("root", ["user", "admin"], "admin")
        assert runs == [result]
    finally:
        release.set()


def test_transactions_check_roles(dbos: type[DBOS], config: dict[str, Any], tmp_path: Any) -> None:
    app_url = f"sqlite:///{tmp_path}/app.sqlite"
    DBOS(config={**config, "application_database_url": app_url})  # type: ignore[typeddict-item]

    @DBOS.default_required_roles(["clerk"])
    class Books:
        @staticmethod
        @DBOS.transaction()
        def balance() -> tuple[int, Optional[str]]:
            total = DBOS.sql_session.execute(sa.text("SELECT 40 + 2")).scalar_one()
            return int(total), DBOS.assumed_role

    @DBOS.workflow()
    def audit() -> tuple[int, Optional[str]]:
        return Books.balance()

    DBOS.launch()
    with DBOSContextSetAuth("cleo", ["clerk"]):
        assert Books.balance() == (42, "clerk")  # outside a workflow
        assert audit() == (42, "clerk")
    with DBOSContextSetAuth("carl", ["guest"]), SetWorkflowID("audit-denied"):
        with pytest.raises(DBOSNotAuthorizedError, match=r"Books\.balance"):
            Books.balance()
        with pytest.raises(DBOSNotAuthorizedError):
            audit()
    assert recorded("audit-denied")[0] == "ERROR"
