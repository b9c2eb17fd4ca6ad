"""Which version may run a workflow (SqlCore._runnable), for claims and recovery alike: its own
version, the latest for unversioned rows, and with the fingerprint check an older version's
workflow whose fingerprint the claimant's version shares."""

from __future__ import annotations

from tests.storage.build import EXECUTOR, T0, claim_request, enqueue, ids, start
from waypoint.storage.protocol import RecoveryRequest, Store

INTERNAL = "_wp_internal"


def fleet(store: Store) -> None:
    """v1 ran A and B; v2 changed only B; v3 dropped A."""
    store.register_fingerprints("v1", "app", {"A": "fa", "B": "fb1"})
    store.register_fingerprints("v2", "app", {"A": "fa", "B": "fb2"})
    store.register_fingerprints("v3", "app", {"B": "fb2"})
    store.register_fingerprints("v3", "app", {"B": "fb2"})  # again: kept once
    start(store, "a1", name="A", application_version="v1")
    start(store, "b1", name="B", application_version="v1")


def recover_as(store: Store, version: str, compatible: bool, token: str = "tok") -> list[str]:
    found = store.recover_pending(
        RecoveryRequest(
            [EXECUTOR], version, "app", INTERNAL, T0 + 9, ("exec-new", token), compatible
        )
    )
    return sorted(ids(found.claimed))


def test_fingerprints_are_recorded_per_version(store: Store) -> None:
    fleet(store)
    assert store.list_fingerprints("v1") == {"A": ["fa"], "B": ["fb1"]}
    assert store.list_fingerprints("v3") == {"B": ["fb2"]}
    assert store.list_fingerprints("v9") == {}


def test_without_the_check_a_new_version_runs_none_of_the_old(store: Store) -> None:
    fleet(store)
    assert recover_as(store, "v2", compatible=False) == []
    # Both were handed back, pinned to v1, for a v1 executor.
    for wfid in ("a1", "b1"):
        row = store.get_workflow(wfid)
        assert row is not None
        assert (row.status, row.queue_name, row.application_version) == ("ENQUEUED", INTERNAL, "v1")
    assert ids(store.claim(claim_request(INTERNAL, application_version="v2"), T0)) == []
    assert sorted(ids(store.claim(claim_request(INTERNAL, application_version="v1"), T0))) == [
        "a1",
        "b1",
    ]


def test_with_the_check_only_unchanged_workflows_move(store: Store) -> None:
    fleet(store)
    assert recover_as(store, "v2", compatible=True) == ["a1"]
    a1, b1 = store.get_workflow("a1"), store.get_workflow("b1")
    assert a1 is not None and b1 is not None
    # The claimant's version runs it now (as a dequeue records it).
    assert (a1.status, a1.executor_id, a1.application_version) == ("PENDING", "exec-new", "v2")
    assert (b1.status, b1.application_version) == ("ENQUEUED", "v1")
    # B changed in v2: only a v1 executor takes it, from the queue.
    v2 = claim_request(INTERNAL, application_version="v2", compatible=True)
    assert ids(store.claim(v2, T0)) == []
    assert ids(store.claim(claim_request(INTERNAL, application_version="v1"), T0)) == ["b1"]


def test_a_version_without_the_workflow_does_not_take_it(store: Store) -> None:
    fleet(store)
    assert recover_as(store, "v3", compatible=True) == []  # v3 lacks A; B changed since v1


def test_queued_work_of_an_old_version(store: Store) -> None:
    fleet(store)
    enqueue(store, "qa", name="A", application_version="v1")
    enqueue(store, "qb", name="B", application_version="v1")
    enqueue(store, "qn", name="B", application_version=None)  # unversioned: the latest
    store.register_version("v1", "app")
    store.register_version("v2", "app")
    store.set_latest_version("v2", "app")
    plain = claim_request("q", application_version="v2", claim_token="plain")
    assert ids(store.claim(plain, T0)) == ["qn"]  # and not the pinned ones
    compatible = claim_request("q", application_version="v2", claim_token="c", compatible=True)
    assert ids(store.claim(compatible, T0)) == ["qa"]
    assert ids(store.claim(claim_request("q", application_version="v1"), T0)) == ["qb"]


def test_one_version_with_two_codes_is_not_trusted(store: Store) -> None:
    """A pinned version string shared by different code: its fingerprint is ambiguous."""
    fleet(store)
    store.register_fingerprints("v1", "app", {"A": "fa-other"})
    assert recover_as(store, "v2", compatible=True) == []


def test_limited_claims_use_the_same_rule(store: Store) -> None:
    fleet(store)
    enqueue(store, "qa", name="A", application_version="v1")
    enqueue(store, "qb", name="B", application_version="v1")
    limited = claim_request(
        "q", application_version="v2", compatible=True, global_concurrency=5, claim_token="l"
    )
    assert ids(store.claim(limited, T0)) == ["qa"]
    enqueue(store, "pa", "parts", name="A", application_version="v1", queue_partition_key="k")
    enqueue(store, "pb", "parts", name="B", application_version="v1", queue_partition_key="k")
    parts = claim_request(
        "parts",
        application_version="v2",
        compatible=True,
        partitioned=True,
        partition_concurrency=5,
        claim_token="p",
    )
    assert ids(store.claim(parts, T0)) == ["pa"]
