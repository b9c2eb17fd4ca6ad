-- Waypoint system schema for SQLite, version 1: the DBOS system-database tables (final state of
-- DBOS's migration 108) plus Waypoint's additions, in SQLite's types.

CREATE TABLE IF NOT EXISTS dbos_migrations (
    version BIGINT NOT NULL PRIMARY KEY
);

CREATE TABLE IF NOT EXISTS workflow_status (
    workflow_uuid TEXT PRIMARY KEY,
    status TEXT,
    name TEXT,
    authenticated_user TEXT,
    assumed_role TEXT,
    authenticated_roles TEXT,
    request TEXT,
    output TEXT,
    error TEXT,
    executor_id TEXT,
    created_at BIGINT NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)),
    updated_at BIGINT NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)),
    application_version TEXT,
    application_id TEXT,
    class_name VARCHAR(255) DEFAULT NULL,
    config_name VARCHAR(255) DEFAULT NULL,
    recovery_attempts BIGINT DEFAULT 0,
    queue_name TEXT,
    workflow_timeout_ms BIGINT,
    workflow_deadline_epoch_ms BIGINT,
    inputs TEXT,
    started_at_epoch_ms BIGINT,
    deduplication_id TEXT,
    priority INTEGER NOT NULL DEFAULT 0,
    queue_partition_key TEXT,
    forked_from TEXT,
    owner_xid TEXT,
    parent_workflow_id TEXT,
    serialization TEXT,
    delay_until_epoch_ms BIGINT,
    was_forked_from BOOLEAN NOT NULL DEFAULT FALSE,
    rate_limited BOOLEAN NOT NULL DEFAULT FALSE,
    completed_at BIGINT,
    attributes TEXT,
    schedule_name TEXT,
    debounce_deadline_epoch_ms BIGINT,
    is_debounced BOOLEAN NOT NULL DEFAULT FALSE,
    application_name TEXT
);

CREATE INDEX IF NOT EXISTS workflow_status_created_at_index
    ON workflow_status (created_at);
CREATE INDEX IF NOT EXISTS idx_workflow_status_pending
    ON workflow_status (created_at) WHERE status = 'PENDING';
CREATE INDEX IF NOT EXISTS idx_workflow_status_failed
    ON workflow_status (status, created_at)
    WHERE status IN ('ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED');
CREATE INDEX IF NOT EXISTS idx_workflow_status_in_flight
    ON workflow_status (queue_name, status, priority, created_at)
    WHERE status IN ('ENQUEUED', 'PENDING');
CREATE INDEX IF NOT EXISTS idx_workflow_status_partition_dequeue_v2
    ON workflow_status
    (queue_name, status, queue_partition_key, priority, created_at, workflow_uuid)
    WHERE status IN ('ENQUEUED', 'PENDING') AND queue_partition_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_workflow_status_rate_limited
    ON workflow_status (queue_name, started_at_epoch_ms) WHERE rate_limited = 1;
CREATE INDEX IF NOT EXISTS idx_workflow_status_delayed
    ON workflow_status (delay_until_epoch_ms) WHERE status = 'DELAYED';
CREATE INDEX IF NOT EXISTS idx_workflow_status_completed_at
    ON workflow_status (completed_at) WHERE completed_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_workflow_status_started_at
    ON workflow_status (started_at_epoch_ms) WHERE started_at_epoch_ms IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_workflow_status_forked_from
    ON workflow_status (forked_from) WHERE forked_from IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_workflow_status_parent_workflow_id
    ON workflow_status (parent_workflow_id) WHERE parent_workflow_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_workflow_status_schedule_name
    ON workflow_status (schedule_name) WHERE schedule_name IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS uq_workflow_status_dedup_id
    ON workflow_status (queue_name, deduplication_id)
    WHERE deduplication_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS operation_outputs (
    workflow_uuid TEXT NOT NULL
        REFERENCES workflow_status (workflow_uuid) ON UPDATE CASCADE ON DELETE CASCADE,
    function_id INTEGER NOT NULL,
    function_name TEXT NOT NULL DEFAULT '',
    output TEXT,
    error TEXT,
    child_workflow_id TEXT,
    started_at_epoch_ms BIGINT,
    completed_at_epoch_ms BIGINT,
    serialization TEXT,
    application_name TEXT,
    -- Waypoint: the execution (run token) that recorded the row; makes a retried record
    -- idempotent and lets a superseded execution be fenced out.
    owner_xid TEXT,
    PRIMARY KEY (workflow_uuid, function_id)
);
-- Adopting a database DBOS created: its operation_outputs predates owner_xid (the migration
-- runner skips an ADD COLUMN whose column is already there).
ALTER TABLE operation_outputs ADD COLUMN owner_xid TEXT;
CREATE INDEX IF NOT EXISTS idx_operation_outputs_completed_at_function_name
    ON operation_outputs (completed_at_epoch_ms, function_name);

CREATE TABLE IF NOT EXISTS notifications (
    message_uuid TEXT NOT NULL DEFAULT (lower(hex(randomblob(16)))) PRIMARY KEY,
    destination_uuid TEXT NOT NULL
        REFERENCES workflow_status (workflow_uuid) ON UPDATE CASCADE ON DELETE CASCADE,
    topic TEXT,
    message TEXT NOT NULL,
    created_at_epoch_ms BIGINT NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)),
    serialization TEXT,
    consumed BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX IF NOT EXISTS idx_workflow_topic
    ON notifications (destination_uuid, topic);

CREATE TABLE IF NOT EXISTS workflow_events (
    workflow_uuid TEXT NOT NULL
        REFERENCES workflow_status (workflow_uuid) ON UPDATE CASCADE ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    serialization TEXT,
    PRIMARY KEY (workflow_uuid, key)
);

CREATE TABLE IF NOT EXISTS workflow_events_history (
    workflow_uuid TEXT NOT NULL
        REFERENCES workflow_status (workflow_uuid) ON UPDATE CASCADE ON DELETE CASCADE,
    function_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    serialization TEXT,
    PRIMARY KEY (workflow_uuid, function_id, key)
);

CREATE TABLE IF NOT EXISTS streams (
    workflow_uuid TEXT NOT NULL
        REFERENCES workflow_status (workflow_uuid) ON UPDATE CASCADE ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    "offset" INTEGER NOT NULL,
    function_id INTEGER NOT NULL DEFAULT 0,
    serialization TEXT,
    PRIMARY KEY (workflow_uuid, key, "offset")
);

CREATE TABLE IF NOT EXISTS workflow_schedules (
    schedule_id TEXT PRIMARY KEY,
    schedule_name TEXT NOT NULL UNIQUE,
    workflow_name TEXT NOT NULL,
    workflow_class_name TEXT,
    schedule TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'ACTIVE',
    context TEXT NOT NULL,
    last_fired_at TEXT,
    automatic_backfill BOOLEAN NOT NULL DEFAULT FALSE,
    cron_timezone TEXT,
    queue_name TEXT,
    application_name TEXT
);

CREATE TABLE IF NOT EXISTS application_versions (
    version_id TEXT NOT NULL PRIMARY KEY,
    version_name TEXT NOT NULL UNIQUE,
    version_timestamp BIGINT NOT NULL,
    created_at BIGINT NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)),
    application_name TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS uq_application_versions_owned
    ON application_versions (application_name, version_name)
    WHERE application_name IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS uq_application_versions_unowned
    ON application_versions (version_name) WHERE application_name IS NULL;

CREATE TABLE IF NOT EXISTS queues (
    queue_id TEXT NOT NULL DEFAULT (lower(hex(randomblob(16)))) PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    concurrency INTEGER,
    worker_concurrency INTEGER,
    rate_limit_max INTEGER,
    rate_limit_period_sec REAL,
    priority_enabled BOOLEAN NOT NULL DEFAULT FALSE,
    partition_queue BOOLEAN NOT NULL DEFAULT FALSE,
    polling_interval_sec REAL NOT NULL DEFAULT 1.0,
    created_at BIGINT NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)),
    updated_at BIGINT NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)),
    application_name TEXT,
    partition_concurrency INTEGER,
    partition_worker_concurrency INTEGER,
    partition_rate_limit_max INTEGER,
    partition_rate_limit_period_sec REAL
);

-- DBOS tools read dbos_migrations to decide whether the schema is current: this schema is
-- equivalent to DBOS's migration 108.
INSERT INTO dbos_migrations (version)
SELECT 108 WHERE NOT EXISTS (SELECT 1 FROM dbos_migrations);
