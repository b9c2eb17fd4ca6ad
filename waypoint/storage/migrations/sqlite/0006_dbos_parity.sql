-- Waypoint schema version 6 (SQLite): the rest of DBOS 2.31's system schema (its migration 108),
-- so a DBOS process runs on a database Waypoint created and both keep the same objects whichever
-- created the database first.

-- DBOS registers its application version without a timestamp and lets the database stamp it.
-- SQLite cannot change a column's default in place: the table is rebuilt (nothing references
-- it), and its uniqueness indexes come back under DBOS's names.
CREATE TABLE application_versions_v6 (
    version_id TEXT NOT NULL PRIMARY KEY,
    version_name TEXT NOT NULL UNIQUE,
    version_timestamp BIGINT NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)),
    created_at BIGINT NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)),
    application_name TEXT
);
INSERT INTO application_versions_v6
    (version_id, version_name, version_timestamp, created_at, application_name)
SELECT version_id, version_name, version_timestamp, created_at, application_name
FROM application_versions;
DROP TABLE application_versions;
ALTER TABLE application_versions_v6 RENAME TO application_versions;
CREATE UNIQUE INDEX uq_application_versions_owner_version
    ON application_versions (application_name, version_name)
    WHERE application_name IS NOT NULL;
CREATE UNIQUE INDEX uq_application_versions_unclaimed_version
    ON application_versions (version_name) WHERE application_name IS NULL;

-- DBOS keeps a second index on a message's destination and topic.
CREATE INDEX IF NOT EXISTS idx_notifications ON notifications (destination_uuid, topic);
