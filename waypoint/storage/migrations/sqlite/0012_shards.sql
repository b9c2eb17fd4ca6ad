-- Waypoint schema version 12 (SQLite): the sharding tables (see the PostgreSQL migration of
-- the same number). SQLite databases are never shards; the tables keep the versions aligned.
CREATE TABLE IF NOT EXISTS waypoint_shards (
    ordinal INTEGER PRIMARY KEY,
    shard_id TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    state TEXT NOT NULL,
    holds_markers BOOLEAN NOT NULL DEFAULT FALSE,
    is_self BOOLEAN NOT NULL DEFAULT FALSE,
    added_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS workflow_placement (
    workflow_uuid TEXT PRIMARY KEY,
    shard_ordinal INTEGER NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_workflow_placement_created
    ON workflow_placement (created_at);
