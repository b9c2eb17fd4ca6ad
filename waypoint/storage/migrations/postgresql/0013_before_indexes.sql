-- Waypoint schema version 13: the first page of list_workflows bounded by completed_before or
-- dequeued_before (newest first) costs the same with a million workflows as with ten
-- thousand. Walking creation order, such a listing passed every workflow completed (or
-- dequeued) after the bound before its first match (6x at a million rows); it now reads the
-- rows created by the bound, and from these indexes the rows created after it but stamped
-- before it, which only a clock behind the creator's makes (sql_listing._bound_branches).
-- They hold those rows only, normally none: no entry, so no cost, on the write path.
-- Built CONCURRENTLY, outside a transaction, so the application's writes to workflow_status
-- go on while a big table is indexed.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_workflow_status_completed_skew_created
    ON "{schema}".workflow_status (created_at, workflow_uuid) WHERE completed_at < created_at;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_workflow_status_dequeued_skew_created
    ON "{schema}".workflow_status (created_at, workflow_uuid)
    WHERE started_at_epoch_ms < created_at;
