-- Waypoint schema version 9 (SQLite): the fingerprint of each workflow in each application
-- version (see the PostgreSQL migration of the same number).
CREATE TABLE IF NOT EXISTS workflow_fingerprints (
    workflow_name TEXT NOT NULL,
    application_version TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    application_name TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (workflow_name, application_version, fingerprint)
);
