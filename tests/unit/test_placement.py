"""Placement is a stable function of the ID (or queue name) over the ordered shards."""

from __future__ import annotations

import collections

from waypoint.storage.sharded.placement import jump, key_hash, queue_slot, workflow_slot


def test_placement_is_the_same_in_every_process_and_release() -> None:
    # Fixed values: a change here would strand every existing sharded deployment's markers.
    assert key_hash("wf-1", "wf:") == 15996550686413813938
    assert [workflow_slot(f"wf-{i}", 3) for i in range(8)] == [0, 1, 0, 2, 2, 0, 0, 1]
    assert [jump(k, 10) for k in (0, 1, 2**63, 2**64 - 1)] == [0, 6, 5, 9]
    assert all(workflow_slot(f"x{i}", 1) == 0 for i in range(50))


def test_adding_a_shard_moves_only_about_one_in_n_and_only_to_the_new_one() -> None:
    ids = [f"order-{i}" for i in range(20_000)]
    before = [workflow_slot(i, 3) for i in ids]
    after = [workflow_slot(i, 4) for i in ids]
    moved = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert all(a == 3 for _, a in moved)  # only to the new shard
    assert 0.2 < len(moved) / len(ids) < 0.3  # ~1/4
    spread = collections.Counter(after)
    assert min(spread.values()) > 0.2 * len(ids)  # balanced


def test_queue_homes_spread_and_stay() -> None:
    homes = collections.Counter(queue_slot(f"queue-{i}", 3) for i in range(300))
    assert set(homes) == {0, 1, 2}
    assert queue_slot("emails", 3) == queue_slot("emails", 3)
