-- Waypoint schema version 9: the fingerprint of each workflow in each application version (a
-- hash of the code the workflow can reach, waypoint/core/fingerprint.py). A process of a newer
-- version with version_compatibility "fingerprint" may take an older version's workflow whose
-- fingerprint it shares. A table of Waypoint's own: workflow_status keeps DBOS's columns, and
-- application_version keeps the meaning DBOS gives it.
CREATE TABLE IF NOT EXISTS "{schema}".workflow_fingerprints (
    workflow_name TEXT NOT NULL,
    application_version TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    application_name TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (workflow_name, application_version, fingerprint)
);
