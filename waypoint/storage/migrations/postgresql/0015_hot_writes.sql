-- Waypoint schema version 15: a step's checkpoint and a workflow's outcome, the writes a
-- running workflow repeats, as functions whose statements keep one plan that can only be a
-- lookup of workflow_status by its key.
--
-- The store's connections plan every statement for its values (plan_cache_mode =
-- force_custom_plan, storage/postgres/store.py): a plan PostgreSQL kept from a new, small
-- table went bad as the table grew (the completion walked every PENDING row, issue 11). That
-- planning, over workflow_status's many indexes, was half of a checkpoint's server time.
-- Here a statement is planned once per session (force_generic_plan) with sequential scans
-- off, and the status it compares is a variable, not a constant, so no partial index can be
-- proven to hold the row: the only plans left read workflow_status by workflow_uuid, one row,
-- whatever the table held when the plan was made (tests/storage/test_pg_plans.py).

-- A step checkpoint: fenced on the run still owning the workflow (a superseded run inserts
-- nothing, no row comes back), idempotent on retry (the row names its writer), and returning
-- the workflow's status so a cancellation is seen at no extra cost.
CREATE OR REPLACE FUNCTION "{schema}".waypoint_checkpoint(
    p_workflow_uuid TEXT, p_function_id INTEGER, p_function_name TEXT, p_output TEXT,
    p_error TEXT, p_child_workflow_id TEXT, p_started_at BIGINT, p_completed_at BIGINT,
    p_serialization TEXT, p_owner_xid TEXT, p_application_name TEXT,
    OUT recorded_by TEXT, OUT current_status TEXT) RETURNS SETOF record
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan
    SET enable_seqscan = off AS $$
BEGIN
    RETURN QUERY
    INSERT INTO "{schema}".operation_outputs AS o (workflow_uuid, function_id, function_name,
        output, error, child_workflow_id, started_at_epoch_ms, completed_at_epoch_ms,
        serialization, owner_xid, application_name)
    SELECT p_workflow_uuid, p_function_id, p_function_name, p_output, p_error,
        p_child_workflow_id, p_started_at, p_completed_at, p_serialization, p_owner_xid,
        p_application_name
    FROM "{schema}".workflow_status w
    WHERE w.workflow_uuid = p_workflow_uuid AND w.owner_xid = p_owner_xid
    ON CONFLICT (workflow_uuid, function_id) DO UPDATE SET owner_xid = o.owner_xid
    RETURNING o.owner_xid, (SELECT s.status FROM "{schema}".workflow_status s
                            WHERE s.workflow_uuid = o.workflow_uuid);
END;
$$;

-- A workflow's outcome, written only by the run that owns it and only while it is PENDING;
-- returns its queue (a slot freed there), no row when the run no longer owns it.
CREATE OR REPLACE FUNCTION "{schema}".waypoint_complete(
    p_workflow_uuid TEXT, p_owner_xid TEXT, p_status TEXT, p_output TEXT, p_error TEXT,
    p_now BIGINT, OUT freed_queue TEXT) RETURNS SETOF TEXT
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan
    SET enable_seqscan = off AS $$
DECLARE
    pending CONSTANT TEXT := 'PENDING';
BEGIN
    RETURN QUERY
    UPDATE "{schema}".workflow_status w
    SET status = p_status, output = p_output, error = p_error, updated_at = p_now,
        completed_at = p_now, deduplication_id = NULL
    WHERE w.workflow_uuid = p_workflow_uuid AND w.status = pending
        AND w.owner_xid = p_owner_xid
    RETURNING w.queue_name;
END;
$$;
