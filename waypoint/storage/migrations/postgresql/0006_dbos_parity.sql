-- Waypoint schema version 6: the rest of DBOS 2.31's system schema (its migration 108), so a
-- DBOS process runs on a database Waypoint created and both keep the same objects whichever
-- created the database first.

-- DBOS registers its application version without a timestamp and lets the database stamp it.
ALTER TABLE "{schema}".application_versions
    ALTER COLUMN version_timestamp SET DEFAULT (EXTRACT(EPOCH FROM now()) * 1000.0)::bigint;

-- The version uniqueness indexes under DBOS's names. When DBOS created the database, Waypoint's
-- version 1 added the same indexes under its own names next to DBOS's: those copies go.
DO $$
DECLARE
    renames CONSTANT text[][] := ARRAY[
        ARRAY['uq_application_versions_owned', 'uq_application_versions_owner_version'],
        ARRAY['uq_application_versions_unowned', 'uq_application_versions_unclaimed_version']];
    pair text[];
BEGIN
    FOREACH pair SLICE 1 IN ARRAY renames LOOP
        IF to_regclass(format('%I.%I', '{schema}', pair[2])) IS NOT NULL THEN
            EXECUTE format('DROP INDEX IF EXISTS %I.%I', '{schema}', pair[1]);
        ELSIF to_regclass(format('%I.%I', '{schema}', pair[1])) IS NOT NULL THEN
            EXECUTE format('ALTER INDEX %I.%I RENAME TO %I', '{schema}', pair[1], pair[2]);
        END IF;
    END LOOP;
END;
$$;

-- DBOS keeps a second index on a message's destination and topic.
CREATE INDEX IF NOT EXISTS idx_notifications
    ON "{schema}".notifications (destination_uuid, topic);

-- Present in every DBOS system database (its migration 1); no SDK reads it today.
CREATE TABLE IF NOT EXISTS "{schema}".event_dispatch_kv (
    service_name TEXT NOT NULL,
    workflow_fn_name TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT,
    update_seq NUMERIC(38, 0),
    update_time NUMERIC(38, 15),
    PRIMARY KEY (service_name, workflow_fn_name, key)
);

-- The wake-up trigger resolves nothing through the caller's search_path.
CREATE OR REPLACE FUNCTION "{schema}".notifications_function() RETURNS TRIGGER
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_notify('dbos_notifications_channel', NEW.destination_uuid || '::' || NEW.topic);
    RETURN NEW;
END;
$$;

-- SQL entry points for enqueuers that are not Python (DBOS's other SDKs, plain SQL): a queued
-- workflow whose inputs are portable JSON, {"positionalArgs": [...], "namedArgs": {...}}.
-- Enqueuing an existing workflow ID again only touches updated_at.
CREATE OR REPLACE FUNCTION "{schema}".enqueue_workflow(
    workflow_name TEXT,
    queue_name TEXT,
    positional_args JSON[] DEFAULT ARRAY[]::JSON[],
    named_args JSON DEFAULT '{}'::JSON,
    class_name TEXT DEFAULT NULL,
    config_name TEXT DEFAULT NULL,
    workflow_id TEXT DEFAULT NULL,
    app_version TEXT DEFAULT NULL,
    timeout_ms BIGINT DEFAULT NULL,
    deadline_epoch_ms BIGINT DEFAULT NULL,
    deduplication_id TEXT DEFAULT NULL,
    priority INTEGER DEFAULT NULL,
    queue_partition_key TEXT DEFAULT NULL,
    authenticated_user TEXT DEFAULT NULL,
    authenticated_roles TEXT DEFAULT NULL,
    delay_until_epoch_ms BIGINT DEFAULT NULL,
    application_name TEXT DEFAULT NULL
) RETURNS TEXT
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id TEXT := COALESCE(workflow_id, gen_random_uuid()::TEXT);
    now_ms BIGINT := (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT;
BEGIN
    IF COALESCE(workflow_name, '') = '' THEN
        RAISE EXCEPTION 'Workflow name cannot be null or empty';
    END IF;
    IF COALESCE(queue_name, '') = '' THEN
        RAISE EXCEPTION 'Queue name cannot be null or empty';
    END IF;
    IF workflow_id = '' THEN
        RAISE EXCEPTION 'Workflow ID cannot be an empty string if provided.';
    END IF;
    IF named_args IS NOT NULL AND json_typeof(named_args) <> 'object' THEN
        RAISE EXCEPTION 'Named args must be a JSON object';
    END IF;
    IF delay_until_epoch_ms < 0 THEN
        RAISE EXCEPTION 'delay_until_epoch_ms must be >= 0';
    END IF;
    INSERT INTO "{schema}".workflow_status AS ws (
        workflow_uuid, status, name, class_name, config_name, queue_name, deduplication_id,
        priority, queue_partition_key, application_version, application_name, inputs,
        serialization, owner_xid, recovery_attempts, created_at, updated_at,
        workflow_timeout_ms, workflow_deadline_epoch_ms, delay_until_epoch_ms,
        authenticated_user, authenticated_roles
    ) VALUES (
        new_id,
        CASE WHEN delay_until_epoch_ms IS NULL THEN 'ENQUEUED' ELSE 'DELAYED' END,
        workflow_name, class_name, config_name, queue_name, deduplication_id,
        COALESCE(priority, 0), queue_partition_key, app_version, application_name,
        json_build_object('positionalArgs', COALESCE(positional_args, ARRAY[]::JSON[]),
                          'namedArgs', named_args)::TEXT,
        'portable_json', gen_random_uuid()::TEXT, 0, now_ms, now_ms,
        timeout_ms, deadline_epoch_ms, delay_until_epoch_ms,
        authenticated_user, authenticated_roles
    )
    ON CONFLICT (workflow_uuid) DO UPDATE SET updated_at = EXCLUDED.updated_at;
    RETURN new_id;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'DBOS queue duplicated' USING
        ERRCODE = 'unique_violation',
        DETAIL = format('Workflow %s with queue %s and deduplication ID %s already exists',
                        new_id, queue_name, deduplication_id);
END;
$$;

-- A portable-JSON message to a workflow; a repeated message ID is ignored.
CREATE OR REPLACE FUNCTION "{schema}".send_message(
    destination_id TEXT,
    message JSON,
    topic TEXT DEFAULT NULL,
    message_id TEXT DEFAULT NULL
) RETURNS VOID
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO "{schema}".notifications
        (message_uuid, destination_uuid, topic, message, serialization)
    VALUES (COALESCE(message_id, gen_random_uuid()::TEXT), destination_id,
            COALESCE(topic, '__null__topic__'), message, 'portable_json')
    ON CONFLICT (message_uuid) DO NOTHING;
EXCEPTION WHEN foreign_key_violation THEN
    RAISE EXCEPTION 'DBOS non-existent workflow' USING
        ERRCODE = 'foreign_key_violation',
        DETAIL = format('Destination workflow %s does not exist', destination_id);
END;
$$;
