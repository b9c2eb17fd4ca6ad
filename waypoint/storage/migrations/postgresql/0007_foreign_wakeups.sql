-- Waypoint schema version 7: writes made by anything other than Waypoint (a DBOS process or
-- DBOSClient sharing the database, plain SQL) wake Waypoint's waiters through NOTIFY, as
-- Waypoint's own writes do; otherwise a Waypoint worker would see DBOS's enqueues, results,
-- cancellations, events and streams only at its next safety re-read.
--
-- Waypoint's sessions set waypoint.session = 'on' and already notify in the statement that
-- writes, so the triggers' WHEN clauses skip them: Waypoint's own writes cost nothing more.
-- Payloads are Waypoint's wake-up keys on the "waypoint" channel (storage.protocol).
CREATE OR REPLACE FUNCTION "{schema}".waypoint_wake_others() RETURNS TRIGGER
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    keys TEXT[] := ARRAY[]::TEXT[];
BEGIN
    IF TG_TABLE_NAME = 'workflow_status' THEN
        IF NEW.status = 'ENQUEUED' AND NEW.queue_name IS NOT NULL THEN
            keys := keys || ('q:' || NEW.queue_name);
        ELSIF NEW.status = 'DELAYED' AND NEW.queue_name IS NOT NULL THEN
            keys := keys || ('t:' || NEW.queue_name);
        ELSIF NEW.status = 'CANCELLED' THEN
            keys := keys || ('c:' || NEW.workflow_uuid);
        ELSIF NEW.status IN ('SUCCESS', 'ERROR', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED') THEN
            keys := keys || ('d:' || NEW.workflow_uuid);
        END IF;
        -- A queued workflow that leaves the queue frees a slot of its queue.
        IF TG_OP = 'UPDATE' AND OLD.queue_name IS NOT NULL
                AND OLD.status IN ('ENQUEUED', 'PENDING')
                AND NEW.status NOT IN ('ENQUEUED', 'PENDING', 'DELAYED') THEN
            keys := keys || ('q:' || OLD.queue_name);
        END IF;
    ELSIF TG_TABLE_NAME = 'workflow_events' THEN
        keys := keys || ('e:' || NEW.workflow_uuid || '::' || NEW.key);
    ELSIF TG_TABLE_NAME = 'streams' THEN
        keys := keys || ('s:' || NEW.workflow_uuid || '::' || NEW.key);
    ELSIF TG_TABLE_NAME = 'application_versions' THEN
        keys := keys || ('V:' || NEW.version_name);
    ELSIF TG_TABLE_NAME = 'queues' THEN
        keys := keys || ('Q:' || NEW.name);
    ELSIF TG_TABLE_NAME = 'workflow_schedules' THEN
        keys := keys || ('S:' || COALESCE(NEW.schedule_name, OLD.schedule_name));
    END IF;
    FOR i IN 1 .. COALESCE(array_length(keys, 1), 0) LOOP
        PERFORM pg_notify('waypoint', keys[i]);
    END LOOP;
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS waypoint_wake_status_insert ON "{schema}".workflow_status;
CREATE TRIGGER waypoint_wake_status_insert AFTER INSERT ON "{schema}".workflow_status
    FOR EACH ROW WHEN (current_setting('waypoint.session', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION "{schema}".waypoint_wake_others();
DROP TRIGGER IF EXISTS waypoint_wake_status_update ON "{schema}".workflow_status;
CREATE TRIGGER waypoint_wake_status_update AFTER UPDATE ON "{schema}".workflow_status
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
        AND current_setting('waypoint.session', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION "{schema}".waypoint_wake_others();
-- The other tables: any row written wakes whoever waits on its key.
DO $$
DECLARE
    target text[];
BEGIN
    FOREACH target SLICE 1 IN ARRAY ARRAY[
            ARRAY['waypoint_wake_events', 'workflow_events', 'INSERT OR UPDATE'],
            ARRAY['waypoint_wake_streams', 'streams', 'INSERT'],
            ARRAY['waypoint_wake_versions', 'application_versions', 'INSERT OR UPDATE'],
            ARRAY['waypoint_wake_queues', 'queues', 'INSERT OR UPDATE'],
            ARRAY['waypoint_wake_schedules', 'workflow_schedules', 'INSERT OR UPDATE OR DELETE']]
    LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I.%I', target[1], '{schema}', target[2]);
        EXECUTE format(
            'CREATE TRIGGER %I AFTER %s ON %I.%I FOR EACH ROW '
            'WHEN (current_setting(''waypoint.session'', true) IS DISTINCT FROM ''on'') '
            'EXECUTE FUNCTION %I.waypoint_wake_others()',
            target[1], target[3], '{schema}', target[2], '{schema}');
    END LOOP;
END;
$$;
