"""The shards a process knows, where each workflow ID lives, and where new work goes.

Every creation of a workflow ID first writes a placement marker on the ID's marker shard (a
hash of the ID over the founding shards, which never changes): ``INSERT ... ON CONFLICT DO
NOTHING``, then the shard the marker names. Two creations of one ID, from any placement path
(direct, enqueued, child, fork) and any process, serialize on that primary key, so an ID is
never created on two shards. Lookups read the marker once and keep ``ID -> shard`` in a
bounded LRU (a workflow never moves, so an entry never goes stale while the row exists).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import psycopg

from waypoint.storage.backend import StoreOptions
from waypoint.storage.errors import StorageConfigError
from waypoint.storage.postgres.backend import POSTGRES
from waypoint.storage.postgres.store import PostgresStore
from waypoint.storage.sharded import catalog
from waypoint.storage.sharded.placement import queue_slot, workflow_slot
from waypoint.storage.url import redact, split_scheme

logger = logging.getLogger("waypoint")


@dataclass
class Member:
    ordinal: int
    shard_id: str
    url: str
    state: str
    holds_markers: bool
    store: PostgresStore

    @property
    def name(self) -> str:
        return f"#{self.ordinal} ({redact(self.url)})"


def open_member(url: str, options: StoreOptions) -> PostgresStore:
    store = POSTGRES.open(POSTGRES.target(split_scheme(url)[1]), options)
    if not isinstance(store, PostgresStore):
        raise StorageConfigError(f"shard {redact(url)} is not a PostgreSQL database")
    return store


class LruMap:
    """A bounded ``workflow ID -> ordinal`` map, safe across threads."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Optional[int]:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: str, value: int) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)

    def drop(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)


class Topology:
    """The configured member stores, mapped to ordinals through the catalog (lazily: a
    client that never calls never connects), refreshed every ``refresh_s`` seconds and
    whenever a marker names a shard this process does not know yet (added online)."""

    def __init__(self, urls: Sequence[str], options: StoreOptions, refresh_s: float = 10.0) -> None:
        self.urls = list(urls)
        self.options = options
        self.refresh_s = refresh_s
        self.configured = [open_member(u, options) for u in self.urls]
        self.members: dict[int, Member] = {}
        self.active: list[Member] = []
        self.founding: list[Member] = []
        self._loaded_at: Optional[float] = None
        self._lock = threading.RLock()
        self._opened = False
        self.cache = LruMap(200_000)
        self._selves: dict[str, catalog.ShardRow] = {}

    # -- loading -------------------------------------------------------------------------------
    def open(self) -> None:
        self._opened = True
        for s in self.configured:
            s.open()

    def ensure(self) -> None:
        loaded = self._loaded_at
        if loaded is None:
            self.load()
        elif time.monotonic() - loaded > self.refresh_s:
            try:
                self.load()
            except (StorageConfigError, psycopg.Error) as exc:
                # A periodic refresh that cannot read the catalog (its shard is down) keeps
                # the view it has: the shards that are up go on working.
                self._loaded_at = time.monotonic()
                logger.warning("cannot refresh the shard catalog; keeping the last one: %s", exc)

    def load(self) -> None:
        with self._lock:
            schema = self.options.schema
            by_id: dict[str, tuple[str, PostgresStore]] = {}
            catalog_url: Optional[str] = None
            for url, store in zip(self.urls, self.configured, strict=True):
                # A server's place never changes: asked once, then remembered.
                own = self._selves.get(url) or catalog.self_row(catalog.read_rows(url, schema))
                if own is not None:
                    self._selves[url] = own
                if own is None:
                    raise StorageConfigError(
                        f"system_database_shards: {redact(url)} is not a shard of this cluster "
                        "(found a new cluster with `waypoint migrate`, or add it with "
                        "`waypoint shards add`)"
                    )
                by_id[own.shard_id] = (url, store)
                if own.ordinal == 0:
                    catalog_url = url
            if catalog_url is None:
                raise StorageConfigError(
                    "system_database_shards must include the catalog shard (the first URL the "
                    "cluster was founded with, ordinal 0)"
                )
            rows = catalog.read_rows(catalog_url, schema)
            members: dict[int, Member] = {}
            for row in rows:
                known = by_id.get(row.shard_id)
                old = self.members.get(row.ordinal)
                if known is not None:
                    url, store = known
                elif old is not None and old.shard_id == row.shard_id:
                    url, store = old.url, old.store
                else:  # added online and not in this process's configuration
                    url = catalog.with_password_of(row.url, catalog_url)
                    store = open_member(url, self.options)
                    if self._opened:
                        store.open()
                members[row.ordinal] = Member(
                    row.ordinal, row.shard_id, url, row.state, row.holds_markers, store
                )
            self.members = members
            self.active = [m for _, m in sorted(members.items()) if m.state == catalog.ACTIVE]
            self.founding = [m for _, m in sorted(members.items()) if m.holds_markers]
            if not self.active or not self.founding:
                raise StorageConfigError("the shard catalog lists no active shard")
            self._loaded_at = time.monotonic()

    def forget_places(self) -> None:
        """Ask each URL its place again at the next load (the cluster was founded anew)."""
        self._selves.clear()
        self._loaded_at = None

    def all(self) -> list[Member]:
        self.ensure()
        return [m for _, m in sorted(self.members.items())]

    def member(self, ordinal: int) -> Member:
        self.ensure()
        found = self.members.get(ordinal)
        if found is None:
            self.load()  # a shard added since the last refresh
            found = self.members.get(ordinal)
            if found is None:
                raise StorageConfigError(f"no shard #{ordinal} in the shard catalog")
        return found

    @property
    def catalog(self) -> Member:
        return self.member(0)

    # -- placement -----------------------------------------------------------------------------
    def marker_home(self, workflow_id: str) -> Member:
        self.ensure()
        return self.founding[workflow_slot(workflow_id, len(self.founding))]

    def queue_home(self, queue_name: str) -> Member:
        self.ensure()
        return self.founding[queue_slot(queue_name, len(self.founding))]

    def new_home(self, workflow_id: str) -> Member:
        self.ensure()
        return self.active[workflow_slot(workflow_id, len(self.active))]
