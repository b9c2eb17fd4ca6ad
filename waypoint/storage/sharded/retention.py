"""Removing the placement markers of workflows that retention deleted.

A marker outlives its workflow's deletion on purpose (a process may still hold the ID's
shard in its cache, and a re-created ID then lands where the cache says). Retention removes
markers older than its cutoff whose workflow no longer exists on the shard they name: by then
the ID is long gone, and a lookup that misses re-reads the marker.
"""

from __future__ import annotations

from collections import defaultdict

from waypoint.storage.sharded.topology import Member, Topology


def drop_orphan_markers(topo: Topology, cutoff_ms: int, batch: int = 5_000) -> int:
    removed = 0
    for home in topo.founding:
        after = ""
        while True:
            rows = home.store._all(
                f"SELECT workflow_uuid, shard_ordinal FROM {home.store.d.t('workflow_placement')} "
                "WHERE created_at < %(cutoff)s AND workflow_uuid > %(after)s "
                "ORDER BY workflow_uuid LIMIT %(n)s",
                {"cutoff": cutoff_ms, "after": after, "n": batch},
                "find old placement markers",
            )
            if not rows:
                break
            after = rows[-1][0]
            by_shard: dict[int, list[str]] = defaultdict(list)
            for wfid, ordinal in rows:
                by_shard[int(ordinal)].append(wfid)
            gone: list[str] = []
            for ordinal, ids in by_shard.items():
                gone += _missing(topo.member(ordinal), ids)
            if gone:
                removed += home.store._exec(
                    f"DELETE FROM {home.store.d.t('workflow_placement')} "
                    "WHERE workflow_uuid = ANY(%(ids)s) AND created_at < %(cutoff)s",
                    {"ids": gone, "cutoff": cutoff_ms},
                    "remove placement markers",
                )
                for wfid in gone:
                    topo.cache.drop(wfid)
            if len(rows) < batch:
                break
    return removed


def _missing(member: Member, ids: list[str]) -> list[str]:
    found = {
        r[0]
        for r in member.store._all(
            f"SELECT workflow_uuid FROM {member.store.d.t('workflow_status')} "
            "WHERE workflow_uuid = ANY(%(ids)s)",
            {"ids": ids},
            "check placed workflows",
        )
    }
    return [i for i in ids if i not in found]
