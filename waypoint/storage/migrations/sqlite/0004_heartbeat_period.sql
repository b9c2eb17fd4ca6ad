-- Waypoint schema version 4 (SQLite): each executor states how often it checks in.
ALTER TABLE executors ADD COLUMN heartbeat_ms INTEGER NOT NULL DEFAULT 10000;
