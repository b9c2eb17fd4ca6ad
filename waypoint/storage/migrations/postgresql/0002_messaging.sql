-- Waypoint schema version 2: message ordering, DBOS-compatible message wake-ups, and
-- idempotent stream writes.

-- Messages with the same millisecond are consumed in insertion order.
ALTER TABLE "{schema}".notifications ADD COLUMN IF NOT EXISTS seq BIGSERIAL;
CREATE INDEX IF NOT EXISTS idx_notifications_unconsumed
    ON "{schema}".notifications (destination_uuid, topic, created_at_epoch_ms, seq)
    WHERE NOT consumed;

-- Any writer's message insert (Waypoint, DBOS, SQL) wakes receivers through NOTIFY.
CREATE OR REPLACE FUNCTION "{schema}".notifications_function() RETURNS TRIGGER AS $$
BEGIN
    PERFORM pg_notify('dbos_notifications_channel', NEW.destination_uuid || '::' || NEW.topic);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS dbos_notifications_trigger ON "{schema}".notifications;
CREATE TRIGGER dbos_notifications_trigger
    AFTER INSERT ON "{schema}".notifications
    FOR EACH ROW EXECUTE FUNCTION "{schema}".notifications_function();

-- A stream value written from a step is keyed by its position in the step, so a retried
-- step (or a step re-run after a crash) cannot write it twice.
ALTER TABLE "{schema}".streams ADD COLUMN IF NOT EXISTS write_key TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS uq_streams_write_key
    ON "{schema}".streams (workflow_uuid, key, write_key) WHERE write_key IS NOT NULL;
