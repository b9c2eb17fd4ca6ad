"""Merging what several shards answered into what one database would have answered."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Optional

from waypoint.storage.records import (
    AgeBucket,
    DatabaseGauges,
    ExecutorRow,
    ListFilter,
    QueueGauge,
    Throughput,
    WorkflowRow,
)


def per_shard_filter(flt: ListFilter) -> ListFilter:
    """What to ask each shard: the first ``offset + limit`` rows (no offset), since any of
    them may be in the merged page."""
    if flt.limit is None and flt.offset is None:
        return flt
    limit = None if flt.limit is None else flt.limit + (flt.offset or 0)
    return replace(flt, limit=limit, offset=None)


def merge_workflows(flt: ListFilter, parts: Iterable[Sequence[WorkflowRow]]) -> list[WorkflowRow]:
    """Each part sorted by (created_at, workflow_uuid) in the filter's direction; the merged
    rows sliced as OFFSET/LIMIT slice one database's."""

    def key(row: WorkflowRow) -> tuple[int, str]:
        return (row.created_at or 0, row.workflow_id)

    merged = list(heapq.merge(*parts, key=key, reverse=flt.sort_desc))
    start = flt.offset or 0
    end = None if flt.limit is None else start + flt.limit
    return merged[start:end]


def sum_counts(parts: Iterable[dict[str, int]], cap: Optional[int] = None) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in parts:
        for k, v in part.items():
            total[k] = total.get(k, 0) + v
    if cap is not None:
        total = {k: min(v, cap) for k, v in total.items()}
    return total


def merge_throughput(parts: Iterable[list[Throughput]]) -> list[Throughput]:
    total: dict[tuple[str, int], int] = {}
    for part in parts:
        for t in part:
            total[(t.queue_name, t.minute)] = total.get((t.queue_name, t.minute), 0) + t.completed
    return [Throughput(q, m, n) for (q, m), n in sorted(total.items())]


def merge_ages(parts: Iterable[list[AgeBucket]]) -> list[AgeBucket]:
    total: dict[tuple[str, int], int] = {}
    for part in parts:
        for b in part:
            total[(b.status, b.band)] = total.get((b.status, b.band), 0) + b.count
    return [AgeBucket(s, band, n) for (s, band), n in sorted(total.items())]


def merge_gauges(
    parts: Sequence[DatabaseGauges], executors: list[ExecutorRow], db_now_ms: int
) -> DatabaseGauges:
    queues: dict[tuple[str, Optional[str], str], QueueGauge] = {}
    pending: dict[str, int] = {}
    for part in parts:
        for g in part.queues:
            k = (g.queue_name, g.partition_key, g.status)
            seen = queues.get(k)
            if seen is None:
                queues[k] = replace(g)
            else:
                seen.count += g.count
                olds = [t for t in (seen.oldest_created_ms, g.oldest_created_ms) if t is not None]
                seen.oldest_created_ms = min(olds) if olds else None
        for e, n in part.pending_by_executor.items():
            pending[e] = pending.get(e, 0) + n
    return DatabaseGauges(db_now_ms, list(queues.values()), pending, executors)
