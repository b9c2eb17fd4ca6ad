"""The placement markers (``workflow_placement``) on a workflow ID's marker shard."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Optional

from waypoint.storage.postgres.store import PostgresStore
from waypoint.storage.sql_base import check_text_params, unencodable


def _t(store: PostgresStore) -> str:
    return store.d.t("workflow_placement")


def claim(
    store: PostgresStore, workflow_id: str, ordinal: int, created_at: Optional[int] = None
) -> int:
    """Place ``workflow_id`` on shard ``ordinal`` unless it is placed already: the shard it
    lives on now, either way. Safe to retry (the second attempt reads its own marker)."""
    created = None if created_at is None else {workflow_id: created_at}
    return claim_many(store, {workflow_id: ordinal}, created)[workflow_id]


def check_ids(workflow_ids: Sequence[str]) -> None:
    """Refuse an ID no database can store before any marker is written, naming it as the
    row's insert would (``workflow_id``)."""
    for wfid in workflow_ids:
        check_text_params({"workflow_id": wfid})
        try:
            wfid.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise unencodable({"workflow_id": wfid}, exc) from None


def claim_many(
    store: PostgresStore, wanted: dict[str, int], created: Optional[dict[str, int]] = None
) -> dict[str, int]:
    """``created``: each ID's workflow creation time, which retention compares with its
    cutoff (default: now)."""
    check_ids(list(wanted))
    created = created or {}
    placed = _claim_once(store, wanted, created)
    for _ in range(3):  # a marker deleted between our insert and our read: place it again
        missing = {i: o for i, o in wanted.items() if i not in placed}
        if not missing:
            break
        placed.update(_claim_once(store, missing, created))
    return placed


def _claim_once(
    store: PostgresStore, wanted: dict[str, int], created: dict[str, int]
) -> dict[str, int]:
    ids = list(wanted)
    now = int(time.time() * 1000)
    rows = store._all(
        f"INSERT INTO {_t(store)} (workflow_uuid, shard_ordinal, created_at) "
        "SELECT id, o, t FROM unnest(%(ids)s::text[], %(ords)s::int[], %(ts)s::bigint[]) "
        "AS d(id, o, t) "
        "ON CONFLICT (workflow_uuid) DO NOTHING RETURNING workflow_uuid",
        {
            "ids": ids,
            "ords": [wanted[i] for i in ids],
            "ts": [min(now, created.get(i, now)) for i in ids],
        },
        "place workflows",
    )
    placed = {r[0]: wanted[r[0]] for r in rows}
    # Placed before (or just now by another caller, whose insert we waited for): read it in
    # a statement of its own, which sees that commit.
    rest = [i for i in ids if i not in placed]
    if rest:
        placed.update(lookup_many(store, rest))
    return placed


def lookup(store: PostgresStore, workflow_id: str) -> Optional[int]:
    return lookup_many(store, [workflow_id]).get(workflow_id)


def lookup_many(store: PostgresStore, workflow_ids: Sequence[str]) -> dict[str, int]:
    check_ids(workflow_ids)
    rows = store._all(
        f"SELECT workflow_uuid, shard_ordinal FROM {_t(store)} WHERE workflow_uuid = ANY(%(ids)s)",
        {"ids": list(workflow_ids)},
        "find workflows",
    )
    return {r[0]: int(r[1]) for r in rows}


def delete_all(store: PostgresStore) -> None:
    store._exec(f"DELETE FROM {_t(store)}", {}, "delete placement markers")
