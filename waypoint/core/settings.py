"""Validated runtime settings, derived from the user's ``DBOSConfig`` and the environment."""

from __future__ import annotations

import logging
import os
import re
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional, TypeGuard

from waypoint.core.serialization import Serializer
from waypoint.core.storage_errors import translated
from waypoint.error import DBOSInitializationError
from waypoint.storage.registry import (
    default_sqlite_url,
    parse_url,
    sharded_url,
    system_url_for,
)
from waypoint.storage.url import check_schema_name

logger = logging.getLogger("waypoint")

_NAME_RE = re.compile(r"^[a-z0-9_-]{3,30}$")


def valid_app_name(name: object) -> TypeGuard[str]:
    """3 to 30 characters of a-z, 0-9, '-' and '_', as DBOS requires of application names."""
    return isinstance(name, str) and _NAME_RE.match(name) is not None


KNOWN_KEYS = frozenset(
    {
        "name",
        "system_database_url",
        "system_database_shards",
        "application_database_url",
        "database_url",
        "sys_db_pool_size",
        "sys_db_polling_concurrency",
        "db_engine_kwargs",
        "system_database_engine",
        "dbos_system_schema",
        "log_level",
        "console_log_level",
        "otlp_log_level",
        "enable_otlp",
        "otlp_traces_endpoints",
        "otlp_logs_endpoints",
        "otlp_attributes",
        "otel_attribute_format",
        "application_version",
        "version_compatibility",
        "executor_id",
        "run_admin_server",
        "admin_port",
        "admin_host",
        "admin_token",
        "admin_read_only_token",
        "max_executor_threads",
        "use_listen_notify",
        "run_migrations",
        "notification_listener_polling_interval_sec",
        "notification_coalesce_sec",
        "scheduler_polling_interval_sec",
        "kafka_queue_polling_interval_sec",
        "conductor_key",
        "conductor_url",
        "conductor_executor_metadata",
        "serializer",
        "enable_patching",
        "dead_executor_recovery_sec",
        "shutdown_grace_sec",
        "retention_max_age_sec",
        "retention_max_rows",
        "retention_interval_sec",
        "refuse_pickle",
        "wait_suspend_after_sec",
    }
)

DEFAULT_MAX_THREADS = 256
DEFAULT_SUSPEND_AFTER = 1.0  # a wait expected to last longer gives its thread back

# config version_compatibility: "version" takes only workflows of this process's own
# application version (DBOS's rule, the default); "fingerprint" also takes an older version's
# workflow whose fingerprint this process matches (a Waypoint extension).
VERSION_COMPATIBILITY = ("version", "fingerprint")

# DBOSConfig keys (and DBOS() / DBOSClient() arguments) Waypoint accepts so a DBOS
# application starts unchanged, but that have no effect here: each one given is said once,
# at construction, with the reason, rather than silently ignored.
NO_EFFECT = {
    "conductor_key": "Waypoint does not connect to DBOS Conductor",
    "conductor_url": "Waypoint does not connect to DBOS Conductor",
    "conductor_executor_metadata": "Waypoint does not connect to DBOS Conductor",
    "kafka_queue_polling_interval_sec": "Waypoint has no Kafka consumers",
    "console_log_level": "Waypoint logs through the 'waypoint' logger at log_level; configure "
    "its handlers to filter the console",
    "notification_coalesce_sec": "Waypoint delivers each notification as it arrives",
    "sys_db_polling_concurrency": "Waypoint's polling uses the sys_db_pool_size connections",
    "system_database_polling_concurrency": "Waypoint's polling uses the pool's connections",
    "system_database_engine": "Waypoint opens its own connections to the engine's URL (the "
    "engine's pool settings are not used)",
}


def warn_no_effect(given: Mapping[str, Any], where: str = "config") -> None:
    """Say, once each, which given settings have no effect in Waypoint, and why."""
    for key, why in NO_EFFECT.items():
        if given.get(key) is not None:
            logger.warning("%s %s has no effect: %s", where, key, why)


def engine_url(engine: Any) -> Optional[str]:
    """The URL of a SQLAlchemy engine given for the system database (DBOS takes one)."""
    if engine is None:
        return None
    url = getattr(engine, "url", None)
    render = getattr(url, "render_as_string", None)
    if render is None:
        raise DBOSInitializationError("system_database_engine must be a SQLAlchemy Engine")
    text = str(render(hide_password=False))
    # SQLAlchemy names its driver in the scheme (postgresql+psycopg://): Waypoint picks its own.
    scheme, sep, rest = text.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}"


@dataclass
class RuntimeConfig:
    name: str
    system_database_url: str
    schema: str = "dbos"
    pool_size: int = 20
    executor_id: str = "local"
    application_version: Optional[str] = None
    # Which older versions' workflows this process may take (a Waypoint extension):
    # "version" (DBOS's rule: its own version only) or "fingerprint" (see core/fingerprint.py).
    version_compatibility: str = "version"
    max_executor_threads: int = DEFAULT_MAX_THREADS
    run_migrations: bool = True
    use_listen_notify: bool = True
    serializer: Optional[Serializer] = None
    enable_patching: bool = False
    log_level: str = "INFO"
    run_admin_server: bool = False
    admin_port: int = 3001
    admin_host: str = "127.0.0.1"
    admin_token: Optional[str] = None
    # Waypoint extension: a console login that sees everything and changes nothing.
    admin_read_only_token: Optional[str] = None
    polling_interval_sec: float = 1.0
    dead_executor_recovery_sec: Optional[float] = None
    # Waypoint's own: on SIGTERM, drain for up to this long and hand the rest back.
    shutdown_grace_sec: Optional[float] = None
    retention_max_age_sec: Optional[float] = None
    retention_max_rows: Optional[int] = None
    retention_interval_sec: float = 600.0
    refuse_pickle: bool = False
    wait_suspend_after_sec: float = DEFAULT_SUSPEND_AFTER
    raw: dict[str, Any] = field(default_factory=dict)


_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 60
_SHOWN.maxlevel = 3
_SHOWN.maxlist = _SHOWN.maxdict = 4


def shown(value: Any) -> str:
    """A bad value as an error message shows it: its repr, cut short (a 70,000-character
    string or a list nested 200 deep should not fill the log)."""
    return _SHOWN.repr(value)


def _log_level(config: Mapping[str, Any]) -> str:
    level = config.get("log_level") or "INFO"
    if not isinstance(level, str) or not isinstance(logging.getLevelName(level.upper()), int):
        raise DBOSInitializationError(
            "config log_level must be a logging level name (DEBUG, INFO, WARNING, ERROR, "
            f"CRITICAL), got {shown(level)}"
        )
    return level


def _positive_int(config: Mapping[str, Any], key: str, default: int) -> int:
    value = config.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DBOSInitializationError(
            f"config {key} must be a positive integer, got {shown(value)}"
        )
    return value


def _positive_number(config: Mapping[str, Any], key: str) -> Optional[float]:
    value = config.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise DBOSInitializationError(f"config {key} must be a positive number, got {shown(value)}")
    return float(value)


def _non_negative(config: Mapping[str, Any], key: str, default: float) -> float:
    value = config.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise DBOSInitializationError(f"config {key} must be a number >= 0, got {value!r}")
    return float(value)


def sharded_or(url: Optional[str], shards: Any, what: str = "config") -> Optional[str]:
    """The system database URL: ``system_database_shards`` (a Waypoint extension: a list of
    PostgreSQL URLs) as one ``shards://`` URL, or ``url``; both set is a conflict."""
    if shards is None:
        return url
    if url:
        raise DBOSInitializationError(
            f"{what} sets both system_database_url and system_database_shards: a sharded "
            "system database is named by its shards only; remove one of them"
        )
    if isinstance(shards, str) or not isinstance(shards, (list, tuple)):
        raise DBOSInitializationError(
            f"{what} system_database_shards must be a list of PostgreSQL URLs, got {shown(shards)}"
        )
    return sharded_url(list(shards))


def resolve(config: Mapping[str, Any]) -> RuntimeConfig:
    if not isinstance(config, Mapping):
        raise DBOSInitializationError("config must be a dict (DBOSConfig)")
    unknown = sorted(set(config) - KNOWN_KEYS)
    if unknown:
        raise DBOSInitializationError(f"unknown config keys: {', '.join(unknown)}")
    name = config.get("name")
    if not valid_app_name(name):
        raise DBOSInitializationError(
            f"config name must be 3 to 30 characters of a-z, 0-9, '-' and '_', got {shown(name)}"
        )
    warn_no_effect(config)
    url = config.get("system_database_url") or engine_url(config.get("system_database_engine"))
    app_url = config.get("database_url") or config.get("application_database_url")
    with translated():
        url = sharded_or(url, config.get("system_database_shards"))
        if not url:
            url = system_url_for(app_url, name) if app_url else default_sqlite_url(name)
        parse_url(url)  # validate early: a bad URL is an initialization error, not a launch crash
        schema = config.get("dbos_system_schema") or "dbos"
        if not isinstance(schema, str):
            raise DBOSInitializationError(
                f"config dbos_system_schema must be a string, got {shown(schema)}"
            )
        check_schema_name(schema, "config dbos_system_schema")

    executor_id = config.get("executor_id") or os.environ.get("DBOS__VMID") or "local"
    if not isinstance(executor_id, str) or not executor_id.strip():
        raise DBOSInitializationError("executor_id must be a non-empty string")

    enable_patching = bool(config.get("enable_patching", False))
    version = config.get("application_version")
    if version is None and enable_patching:
        version = "PATCHING_ENABLED"
    if version is None:
        version = os.environ.get("DBOS__APPVERSION") or None
    if version is not None and (not isinstance(version, str) or not version.strip()):
        raise DBOSInitializationError("application_version must be a non-empty string")

    compatibility = config.get("version_compatibility")
    if compatibility is None:
        compatibility = "version"
    if not isinstance(compatibility, str) or compatibility not in VERSION_COMPATIBILITY:
        choices = " or ".join(repr(c) for c in VERSION_COMPATIBILITY)
        raise DBOSInitializationError(
            f"config version_compatibility must be {choices}, got {compatibility!r}"
        )

    serializer = config.get("serializer")
    if serializer is not None and not isinstance(serializer, Serializer):
        raise DBOSInitializationError("config serializer must be a waypoint.Serializer instance")
    refuse_pickle = config.get("refuse_pickle", False)
    if not isinstance(refuse_pickle, bool):
        raise DBOSInitializationError(
            f"config refuse_pickle must be a bool, got {shown(refuse_pickle)}"
        )
    if refuse_pickle and serializer is not None and serializer.name() == "py_pickle":
        raise DBOSInitializationError(
            "config refuse_pickle is set but config serializer is the pickle serializer"
        )

    interval = config.get("notification_listener_polling_interval_sec", 1.0)
    if not isinstance(interval, (int, float)) or interval < 0.001:
        raise DBOSInitializationError(
            "notification_listener_polling_interval_sec must be a number >= 0.001"
        )
    admin_port = config.get("admin_port", 3001)
    if not isinstance(admin_port, int) or not 0 <= admin_port <= 65535:
        raise DBOSInitializationError(
            f"config admin_port must be a TCP port number, got {shown(admin_port)}"
        )

    admin_token = config.get("admin_token") or os.environ.get("DBOS__ADMIN_TOKEN") or None
    read_only_token = (
        config.get("admin_read_only_token")
        or os.environ.get("WAYPOINT_ADMIN_READ_ONLY_TOKEN")
        or None
    )
    for key, token in (("admin_token", admin_token), ("admin_read_only_token", read_only_token)):
        if token is not None and (not isinstance(token, str) or not token.strip()):
            raise DBOSInitializationError(f"{key} must be a non-empty string")
    if read_only_token is not None and admin_token is None:
        raise DBOSInitializationError(
            "admin_read_only_token needs admin_token: without an admin token the console is "
            "open to anyone who reaches the port, so a read-only login would protect nothing"
        )
    if read_only_token is not None and read_only_token == admin_token:
        raise DBOSInitializationError("admin_read_only_token must differ from admin_token")

    return RuntimeConfig(
        name=name,
        system_database_url=url,
        schema=schema,
        pool_size=_positive_int(config, "sys_db_pool_size", 20),
        executor_id=executor_id,
        application_version=version,
        version_compatibility=compatibility,
        max_executor_threads=_positive_int(config, "max_executor_threads", DEFAULT_MAX_THREADS),
        run_migrations=bool(config.get("run_migrations", True)),
        use_listen_notify=bool(config.get("use_listen_notify", True)),
        serializer=serializer,
        enable_patching=enable_patching,
        log_level=_log_level(config),
        run_admin_server=bool(config.get("run_admin_server", False)),
        admin_port=admin_port,
        admin_host=str(config.get("admin_host") or "127.0.0.1"),
        admin_token=admin_token,
        admin_read_only_token=read_only_token,
        polling_interval_sec=float(interval),
        dead_executor_recovery_sec=_positive_number(config, "dead_executor_recovery_sec"),
        shutdown_grace_sec=_positive_number(config, "shutdown_grace_sec"),
        retention_max_age_sec=_positive_number(config, "retention_max_age_sec"),
        retention_max_rows=_positive_int(config, "retention_max_rows", 0) or None,
        retention_interval_sec=_positive_number(config, "retention_interval_sec") or 600.0,
        refuse_pickle=refuse_pickle,
        wait_suspend_after_sec=_non_negative(
            config, "wait_suspend_after_sec", DEFAULT_SUSPEND_AFTER
        ),
        raw=dict(config),
    )
