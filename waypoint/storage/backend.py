"""What a storage backend provides, so the registry can open it by URL scheme."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from waypoint.storage.protocol import Store
from waypoint.storage.url import DatabaseTarget


@dataclass(frozen=True)
class StoreOptions:
    """Settings a backend may use (one without schemas or pools ignores those)."""

    schema: str = "dbos"
    pool_size: int = 20
    application_name: str = "waypoint"
    retry_connection_errors: bool = True  # False: an outage is raised, not waited out
    # True for a launching process: a server that does not answer when the store first
    # connects (down, restarting) is waited for, up to a bound, as one that is not ready yet;
    # False (the CLI): a refused connection is reported at once.
    wait_for_server: bool = False


@dataclass(frozen=True)
class Backend:
    dialect: str
    schemes: tuple[str, ...]  # URL schemes (before any "+driver") this backend answers
    # The part of the URL after "://" as a target; raises StorageConfigError when invalid.
    target: Callable[[str], DatabaseTarget]
    open: Callable[[DatabaseTarget, StoreOptions], Store]
    # The system database to use when only an application database URL is configured.
    system_url_for: Callable[[DatabaseTarget, str], str]
