-- Waypoint schema version 3 (SQLite): executors announce themselves, so a dead one can be noticed and
-- its work taken over without a control plane.
CREATE TABLE IF NOT EXISTS executors (
    executor_id TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    application_name TEXT,
    application_version TEXT,
    hostname TEXT,
    pid INTEGER,
    started_at BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    PRIMARY KEY (executor_id, incarnation)
);
CREATE INDEX IF NOT EXISTS idx_executors_last_seen ON executors (last_seen);
