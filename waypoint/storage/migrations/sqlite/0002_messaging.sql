-- Waypoint schema version 2 (SQLite): message lookup index and idempotent stream writes.
-- Messages with the same millisecond are consumed in rowid (insertion) order.
CREATE INDEX IF NOT EXISTS idx_notifications_unconsumed
    ON notifications (destination_uuid, topic, created_at_epoch_ms) WHERE consumed = 0;

ALTER TABLE streams ADD COLUMN write_key TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS uq_streams_write_key
    ON streams (workflow_uuid, key, write_key) WHERE write_key IS NOT NULL;
