-- Waypoint schema version 12: sharding across several PostgreSQL servers
-- (waypoint/storage/sharded). Created on every system database, used only by sharded ones.
-- The shard catalog. On the catalog shard (ordinal 0) it lists every shard of the cluster;
-- on every other shard it holds that shard's own row only (is_self), which is how a process
-- learns each configured URL's place whatever order its configuration lists them in.
CREATE TABLE IF NOT EXISTS "{schema}".waypoint_shards (
    ordinal INTEGER PRIMARY KEY,
    shard_id TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    state TEXT NOT NULL,
    holds_markers BOOLEAN NOT NULL DEFAULT FALSE,
    is_self BOOLEAN NOT NULL DEFAULT FALSE,
    added_at BIGINT NOT NULL
);
-- Where a workflow ID was created, kept on the ID's marker shard (a hash of the ID over the
-- shards that hold markers): every creation of an ID inserts here first, so two creations
-- of one ID serialize on this primary key and can never land on two shards.
CREATE TABLE IF NOT EXISTS "{schema}".workflow_placement (
    workflow_uuid TEXT PRIMARY KEY,
    shard_ordinal INTEGER NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_workflow_placement_created
    ON "{schema}".workflow_placement (created_at);
