"""The sharded store's fleet calls: executors, schedules and the queues table live on the
catalog shard (one row per executor, schedule or queue cluster-wide); versions and
fingerprints are written to every shard, because claims read them in the same statement as
the workflows they pick, and read from the catalog shard. Split from ``store`` (a mixin of
``ShardedStore``) to keep each module to one job.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Optional

from waypoint.storage.records import (
    DatabaseGauges,
    ExecutorRow,
    QueueRow,
    ScheduleFilter,
    ScheduleRow,
    VersionRow,
)
from waypoint.storage.sharded import merge
from waypoint.storage.sharded.routing import Routing


class FleetCalls(Routing):
    # -- executors, schedules, queues, versions: the catalog shard -------------------------------
    @property
    def _c(self) -> Any:
        return self.topo.catalog.store

    def heartbeat(self, row: ExecutorRow) -> bool:
        return bool(self._c.heartbeat(row))

    def retire(self, executor_id: str, incarnation: str) -> None:
        self._c.retire(executor_id, incarnation)

    def set_executor_state(self, executor_id: str, incarnation: str, state: str) -> None:
        self._c.set_executor_state(executor_id, incarnation, state)

    def list_executors(self, application_name: Optional[str]) -> list[ExecutorRow]:
        rows: list[ExecutorRow] = self._c.list_executors(application_name)
        return rows

    def claim_dead_executors(
        self,
        application_name: Optional[str],
        application_version: Optional[str],
        silent_ms: Optional[int],
        unchanged: Optional[Mapping[str, str]] = None,
    ) -> list[str]:
        ids: list[str] = self._c.claim_dead_executors(
            application_name, application_version, silent_ms, unchanged
        )
        return ids

    def database_gauges(self) -> DatabaseGauges:
        parts = self.fan.all(lambda m: m.store.database_gauges(), self.topo.all(), "gauges")
        by = {m.ordinal: g for m, g in parts}
        return merge.merge_gauges(list(by.values()), by[0].executors, by[0].db_now_ms)

    def upsert_schedule(self, row: ScheduleRow, replace: bool) -> ScheduleRow:
        out: ScheduleRow = self._c.upsert_schedule(row, replace)
        return out

    def get_schedule(self, name: str) -> Optional[ScheduleRow]:
        out: Optional[ScheduleRow] = self._c.get_schedule(name)
        return out

    def list_schedules(self, flt: ScheduleFilter) -> list[ScheduleRow]:
        out: list[ScheduleRow] = self._c.list_schedules(flt)
        return out

    def delete_schedule(self, name: str) -> bool:
        return bool(self._c.delete_schedule(name))

    def set_schedule_status(self, name: str, status: str) -> bool:
        return bool(self._c.set_schedule_status(name, status))

    def set_last_fired(self, name: str, fired_at_iso: str) -> None:
        self._c.set_last_fired(name, fired_at_iso)

    def rename_application(
        self, old_name: Optional[str], new_name: str, adopt_unclaimed: bool, batch: Optional[int]
    ) -> dict[str, int]:
        parts = self.fan.all(
            lambda m: m.store.rename_application(old_name, new_name, adopt_unclaimed, batch),
            self.topo.all(),
            "rename application",
            wait_all=True,
        )
        # Versions are on every shard: count the catalog's, like the other fleet tables.
        total = merge.sum_counts(p for m, p in parts if m.ordinal != 0)
        first = dict(parts[0][1])
        total.pop("versions", None)
        return merge.sum_counts([total, first])

    def upsert_queue(self, row: QueueRow, update: bool) -> QueueRow:
        out: QueueRow = self._c.upsert_queue(row, update)
        return out

    def get_queue(self, name: str) -> Optional[QueueRow]:
        out: Optional[QueueRow] = self._c.get_queue(name)
        return out

    def delete_queue(self, name: str) -> bool:
        return bool(self._c.delete_queue(name))

    def list_queues(self, application_name: Optional[str]) -> list[QueueRow]:
        out: list[QueueRow] = self._c.list_queues(application_name)
        return out

    # Versions and fingerprints are written to every shard (claims and recovery read them
    # in the same statement as the workflows they pick) and read from the catalog shard.
    def _everywhere(self, call: Callable[[Any], Any], what: str) -> list[Any]:
        members = self.topo.all()
        first = call(members[0].store)  # the catalog first: it is what readers see
        rest = self.fan.all(lambda m: call(m.store), members[1:], what, wait_all=True)
        return [first, *(r for _, r in rest)] if members[1:] else [first]

    def register_version(self, version_name: str, application_name: Optional[str]) -> None:
        self._everywhere(
            lambda s: s.register_version(version_name, application_name), "register version"
        )

    def list_versions(self, application_name: Optional[str]) -> list[VersionRow]:
        out: list[VersionRow] = self._c.list_versions(application_name)
        return out

    def set_latest_version(self, version_name: str, application_name: Optional[str]) -> bool:
        done = self._everywhere(
            lambda s: s.set_latest_version(version_name, application_name), "set latest version"
        )
        return bool(done[0])

    def register_fingerprints(
        self,
        application_version: str,
        application_name: Optional[str],
        fingerprints: Mapping[str, str],
    ) -> None:
        self._everywhere(
            lambda s: s.register_fingerprints(application_version, application_name, fingerprints),
            "register fingerprints",
        )

    def list_fingerprints(self, application_version: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = self._c.list_fingerprints(application_version)
        return out
