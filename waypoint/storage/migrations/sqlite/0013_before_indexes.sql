-- Waypoint schema version 13 (SQLite): the rows created after a completed_before or
-- dequeued_before bound but stamped before it (a clock behind the creator's), for the second
-- branch of such a listing (see the PostgreSQL migration of the same number). The listing
-- states each index's WHERE as a term, so SQLite uses it.
CREATE INDEX IF NOT EXISTS idx_workflow_status_completed_skew_created
    ON workflow_status (created_at, workflow_uuid) WHERE completed_at < created_at;
CREATE INDEX IF NOT EXISTS idx_workflow_status_dequeued_skew_created
    ON workflow_status (created_at, workflow_uuid)
    WHERE started_at_epoch_ms < created_at;
