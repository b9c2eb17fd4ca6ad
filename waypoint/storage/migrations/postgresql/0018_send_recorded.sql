-- Waypoint schema version 18: a send from a workflow that hands its message to a receive
-- waiting in the sender's process, in one statement.
--
-- A workflow's send is a step: its checkpoint is written with the message, fenced on the
-- sender's owner (version 17's plain statement of CTEs does that for a send that delivers to
-- nobody). Here that checkpoint, the message and the receiver's checkpoint are one
-- transaction: the receiving workflow's own statement (and commit) is off the message's path,
-- as it is for a send from outside a workflow (waypoint_send, version 17).

-- The sender's checkpoint, as a recorded send writes it: the sender's row share-locked while
-- its run p_owner_xid owns it (r_owner is its owner: another's, nothing is written), then the
-- checkpoint, or, already there, the run that wrote it (r_recorded_by): another run's, nothing
-- more is written; this run's (a retried send), the message is sent again (once, by its ID)
-- and not delivered. Then waypoint_send with the receive (d_...) to deliver to.
-- r_status is the sender's status (a cancellation is seen at no extra cost).
CREATE OR REPLACE FUNCTION "{schema}".waypoint_send_recorded(
    p_workflow_uuid TEXT, p_function_id INTEGER, p_function_name TEXT, p_output TEXT,
    p_error TEXT, p_child_workflow_id TEXT, p_started_at BIGINT, p_completed_at BIGINT,
    p_serialization TEXT, p_owner_xid TEXT, p_application_name TEXT,
    m_message_uuid TEXT, m_destination_uuid TEXT, m_topic TEXT, m_message TEXT,
    m_serialization TEXT,
    d_function_id INTEGER, d_function_name TEXT, d_started_at BIGINT, d_completed_at BIGINT,
    d_owner_xid TEXT, d_application_name TEXT,
    OUT r_status TEXT, OUT r_owner TEXT, OUT r_recorded_by TEXT, OUT r_delivered BOOLEAN)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan
    SET enable_seqscan = off AS $$
DECLARE
    v_rows INTEGER;
BEGIN
    r_delivered := FALSE;
    SELECT w.status, w.owner_xid INTO r_status, r_owner FROM "{schema}".workflow_status w
    WHERE w.workflow_uuid = p_workflow_uuid FOR SHARE;
    IF r_owner IS DISTINCT FROM p_owner_xid THEN
        RETURN;
    END IF;
    INSERT INTO "{schema}".operation_outputs (workflow_uuid, function_id, function_name,
        output, error, child_workflow_id, started_at_epoch_ms, completed_at_epoch_ms,
        serialization, owner_xid, application_name)
    VALUES (p_workflow_uuid, p_function_id, p_function_name, p_output, p_error,
        p_child_workflow_id, p_started_at, p_completed_at, p_serialization, p_owner_xid,
        p_application_name)
    ON CONFLICT (workflow_uuid, function_id) DO NOTHING;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    IF v_rows = 0 THEN
        SELECT o.owner_xid INTO r_recorded_by FROM "{schema}".operation_outputs o
        WHERE o.workflow_uuid = p_workflow_uuid AND o.function_id = p_function_id;
        IF r_recorded_by IS DISTINCT FROM p_owner_xid THEN
            RETURN;
        END IF;
        d_function_id := NULL;  -- a retried send: its message was sent (and delivered) before
    ELSE
        r_recorded_by := p_owner_xid;
    END IF;
    r_delivered := "{schema}".waypoint_send(m_message_uuid, m_destination_uuid, m_topic,
        m_message, m_serialization, d_function_id, d_function_name, d_started_at,
        d_completed_at, d_owner_xid, d_application_name);
END;
$$;
