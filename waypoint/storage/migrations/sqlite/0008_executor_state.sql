-- Waypoint schema version 8 (SQLite): an executor's state ('live', 'draining', 'gone').
ALTER TABLE executors ADD COLUMN state TEXT NOT NULL DEFAULT 'live';
