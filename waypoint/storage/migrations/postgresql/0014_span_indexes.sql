-- Waypoint schema version 14: the first page of list_workflows bounded by completed_after or
-- dequeued_after, oldest first, costs the same with a million workflows as with ten
-- thousand. Walking creation order from the oldest, such a listing passed every workflow
-- completed (dequeued) before the bound: the whole history (240x at a million rows). It now
-- reads the rows created after the bound from there, and from these indexes the rows whose
-- span, creation to completion (dequeue), holds the bound: those running (queued) at it
-- (sql_listing._bound_branches). LEAST: a stamp before its creation (another process's
-- clock) makes an empty span, not an error.
-- Built CONCURRENTLY, outside a transaction, so the application's writes to workflow_status
-- go on while a big table is indexed.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_workflow_status_completed_span
    ON "{schema}".workflow_status
    USING gist (int8range(LEAST(created_at, completed_at), completed_at, '(]'))
    WHERE completed_at IS NOT NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_workflow_status_dequeued_span
    ON "{schema}".workflow_status
    USING gist (int8range(LEAST(created_at, started_at_epoch_ms), started_at_epoch_ms, '(]'))
    WHERE started_at_epoch_ms IS NOT NULL;
