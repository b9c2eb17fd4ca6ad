"""The configuration dictionary users pass to ``DBOS(config=...)``."""

from __future__ import annotations

from typing import Any, Optional, TypedDict

from waypoint.core.serialization import Serializer


class DBOSConfig(TypedDict, total=False):
    """Waypoint configuration; only ``name`` is required. Keys follow DBOS's ``DBOSConfig``."""

    name: str
    system_database_url: Optional[str]
    # Waypoint: a system database sharded over these PostgreSQL servers (docs: Sharding).
    system_database_shards: Optional[list[str]]
    application_database_url: Optional[str]
    database_url: Optional[str]
    sys_db_pool_size: Optional[int]
    sys_db_polling_concurrency: Optional[int]
    db_engine_kwargs: Optional[dict[str, Any]]
    system_database_engine: Any
    dbos_system_schema: Optional[str]
    log_level: Optional[str]
    console_log_level: Optional[str]
    otlp_log_level: Optional[str]
    enable_otlp: Optional[bool]
    otlp_traces_endpoints: Optional[list[str]]
    otlp_logs_endpoints: Optional[list[str]]
    otlp_attributes: Optional[dict[str, str]]
    otel_attribute_format: Optional[str]
    application_version: Optional[str]
    version_compatibility: Optional[str]  # Waypoint: "version" (default) or "fingerprint"
    executor_id: Optional[str]
    run_admin_server: Optional[bool]
    admin_port: Optional[int]
    admin_host: Optional[str]
    admin_token: Optional[str]
    admin_read_only_token: Optional[str]  # Waypoint extension: a read-only console login
    max_executor_threads: Optional[int]
    use_listen_notify: Optional[bool]
    run_migrations: Optional[bool]
    notification_listener_polling_interval_sec: Optional[float]
    notification_coalesce_sec: Optional[float]
    scheduler_polling_interval_sec: Optional[float]
    kafka_queue_polling_interval_sec: Optional[float]
    conductor_key: Optional[str]
    conductor_url: Optional[str]
    conductor_executor_metadata: Optional[dict[str, Any]]
    serializer: Optional[Serializer]
    enable_patching: Optional[bool]
    dead_executor_recovery_sec: Optional[float]
    shutdown_grace_sec: Optional[float]  # Waypoint: drain on SIGTERM (docs: Deploying)
    retention_max_age_sec: Optional[float]
    retention_max_rows: Optional[int]
    retention_interval_sec: Optional[float]
    refuse_pickle: Optional[bool]  # Waypoint: never unpickle (or write) a pickled row
    wait_suspend_after_sec: Optional[float]
