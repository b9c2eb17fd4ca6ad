-- Waypoint schema version 17: a message's send and its receive as functions whose statements
-- keep one plan (as version 15 did for the checkpoint and the outcome), and a send that hands
-- its message to a receiver waiting in the sender's process.
--
-- Planned for its values at every execution (force_custom_plan), the receive statement cost
-- more to plan than to run: 0.39 of its 0.66 ms of server CPU, and the send 0.13 of 0.33 ms,
-- most of it the foreign-key check's plan of workflow_status (benchmarks/RESULTS.md). Here each
-- statement is planned once per session with sequential scans off: workflow_status and
-- operation_outputs are read by their keys, notifications by its key or by the index of
-- unconsumed messages (tests/storage/test_pg_plans.py). Their statements run one after the
-- other in one transaction, each with a fresh snapshot, so a checkpoint another writer committed
-- at the same position is read, not missed.

-- A receive: the earlier answer at this position (an attempt whose reply was lost, or a
-- sender's delivery), else the oldest unconsumed message of the topic, consumed only together
-- with the checkpoint that records it, under the fence (the workflow row share-locked while
-- its run still owns it). A read that finds nothing writes nothing, unless p_none is given
-- (the receive's deadline passed): then that value is recorded, unless a checkpoint is there
-- first, whose answer is returned. r_owner is the workflow's owner (not the caller's: refused);
-- r_found false when nothing was there; r_recorded_by the run that wrote the answer.
CREATE OR REPLACE FUNCTION "{schema}".waypoint_receive(
    p_workflow_uuid TEXT, p_function_id INTEGER, p_function_name TEXT, p_topic TEXT,
    p_started_at BIGINT, p_completed_at BIGINT, p_owner_xid TEXT, p_application_name TEXT,
    p_none TEXT, p_none_serialization TEXT,
    OUT r_owner TEXT, OUT r_found BOOLEAN, OUT r_output TEXT, OUT r_serialization TEXT,
    OUT r_recorded_by TEXT)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan
    SET enable_seqscan = off AS $$
DECLARE
    v_message_uuid TEXT;
    v_message TEXT;
    v_serialization TEXT;
    v_rows INTEGER;
BEGIN
    r_found := TRUE;
    SELECT w.owner_xid INTO r_owner FROM "{schema}".workflow_status w
    WHERE w.workflow_uuid = p_workflow_uuid;
    IF r_owner IS DISTINCT FROM p_owner_xid THEN
        RETURN;
    END IF;
    SELECT o.output, o.serialization, o.owner_xid INTO r_output, r_serialization, r_recorded_by
    FROM "{schema}".operation_outputs o
    WHERE o.workflow_uuid = p_workflow_uuid AND o.function_id = p_function_id;
    IF FOUND THEN
        RETURN;
    END IF;
    SELECT n.message_uuid, n.message, n.serialization
    INTO v_message_uuid, v_message, v_serialization
    FROM "{schema}".notifications n
    WHERE n.destination_uuid = p_workflow_uuid AND n.topic = p_topic AND NOT n.consumed
    ORDER BY n.created_at_epoch_ms, n.seq LIMIT 1
    FOR NO KEY UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        IF p_none IS NULL THEN
            r_found := FALSE;
            RETURN;
        END IF;
        v_message := p_none;
        v_serialization := p_none_serialization;
    END IF;
    SELECT w.owner_xid INTO r_owner FROM "{schema}".workflow_status w
    WHERE w.workflow_uuid = p_workflow_uuid FOR SHARE;
    IF r_owner IS DISTINCT FROM p_owner_xid THEN
        RETURN;
    END IF;
    INSERT INTO "{schema}".operation_outputs (workflow_uuid, function_id, function_name,
        output, error, child_workflow_id, started_at_epoch_ms, completed_at_epoch_ms,
        serialization, owner_xid, application_name)
    VALUES (p_workflow_uuid, p_function_id, p_function_name, v_message, NULL, NULL,
        p_started_at, p_completed_at, v_serialization, p_owner_xid, p_application_name)
    ON CONFLICT (workflow_uuid, function_id) DO NOTHING;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    IF v_rows = 0 THEN
        -- Committed at this position meanwhile: its answer, and the message stays unconsumed.
        SELECT o.output, o.serialization, o.owner_xid
        INTO r_output, r_serialization, r_recorded_by
        FROM "{schema}".operation_outputs o
        WHERE o.workflow_uuid = p_workflow_uuid AND o.function_id = p_function_id;
        RETURN;
    END IF;
    IF v_message_uuid IS NOT NULL THEN
        UPDATE "{schema}".notifications n SET consumed = TRUE
        WHERE n.message_uuid = v_message_uuid;
    END IF;
    r_output := v_message;
    r_serialization := v_serialization;
    r_recorded_by := p_owner_xid;
END;
$$;

-- A send of one message. With p_function_id (a receive of the destination's run p_owner_xid
-- waiting at that position, in the sender's process), the message is delivered in the same
-- transaction, as that receive would consume it: recorded as its checkpoint and inserted
-- consumed, only while that run owns the workflow, no other message of the topic waits (it
-- comes first) and nothing is recorded at that position yet. A message sent before (its ID
-- is there: a retried send) is neither inserted nor delivered again. A missing destination
-- fails on the messages' foreign key, writing nothing. r_delivered: it was delivered.
CREATE OR REPLACE FUNCTION "{schema}".waypoint_send(
    p_message_uuid TEXT, p_destination_uuid TEXT, p_topic TEXT, p_message TEXT,
    p_serialization TEXT, p_function_id INTEGER, p_function_name TEXT, p_started_at BIGINT,
    p_completed_at BIGINT, p_owner_xid TEXT, p_application_name TEXT,
    OUT r_delivered BOOLEAN)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan
    SET enable_seqscan = off AS $$
DECLARE
    v_rows INTEGER;
BEGIN
    r_delivered := FALSE;
    IF p_function_id IS NOT NULL THEN
        PERFORM 1 FROM "{schema}".workflow_status w
        WHERE w.workflow_uuid = p_destination_uuid AND w.owner_xid = p_owner_xid FOR SHARE;
        IF FOUND THEN
            -- Shaped as the receive's read, so its plan walks the unconsumed messages only.
            PERFORM 1 FROM "{schema}".notifications n
            WHERE n.destination_uuid = p_destination_uuid AND n.topic = p_topic
                AND NOT n.consumed
            ORDER BY n.created_at_epoch_ms, n.seq LIMIT 1;
            IF NOT FOUND THEN
                INSERT INTO "{schema}".operation_outputs (workflow_uuid, function_id,
                    function_name, output, error, child_workflow_id, started_at_epoch_ms,
                    completed_at_epoch_ms, serialization, owner_xid, application_name)
                VALUES (p_destination_uuid, p_function_id, p_function_name, p_message, NULL,
                    NULL, p_started_at, p_completed_at, p_serialization, p_owner_xid,
                    p_application_name)
                ON CONFLICT (workflow_uuid, function_id) DO NOTHING;
                GET DIAGNOSTICS v_rows = ROW_COUNT;
                r_delivered := v_rows > 0;
            END IF;
        END IF;
    END IF;
    INSERT INTO "{schema}".notifications (message_uuid, destination_uuid, topic, message,
        serialization, consumed)
    VALUES (p_message_uuid, p_destination_uuid, p_topic, p_message, p_serialization,
        r_delivered)
    ON CONFLICT (message_uuid) DO NOTHING;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    IF v_rows = 0 AND r_delivered THEN
        -- Sent before: not delivered a second time.
        DELETE FROM "{schema}".operation_outputs o
        WHERE o.workflow_uuid = p_destination_uuid AND o.function_id = p_function_id;
        r_delivered := FALSE;
    END IF;
END;
$$;

-- A message its send delivered (inserted consumed) wakes nobody: its receive has it, and no
-- one else may take it. Without the NOTIFY, its commit takes no cluster-wide notification lock
-- and no listener is woken; a message only sent still wakes Waypoint's and DBOS's receivers.
CREATE OR REPLACE FUNCTION "{schema}".notifications_function() RETURNS TRIGGER
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT NEW.consumed THEN
        PERFORM pg_notify('dbos_notifications_channel', NEW.destination_uuid || '::' || NEW.topic);
    END IF;
    RETURN NEW;
END;
$$;
