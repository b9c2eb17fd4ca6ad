-- Waypoint schema version 4: each executor states how often it checks in, so peers do not
-- take a slow-beating executor for dead.
ALTER TABLE "{schema}".executors ADD COLUMN IF NOT EXISTS heartbeat_ms INTEGER NOT NULL DEFAULT 10000;
