-- Waypoint schema version 11: the first page of list_workflows filtered by one value of a
-- column (newest or oldest first) reads one page of an index that holds the matching rows in
-- the listing's order (column, created_at, workflow_uuid), instead of walking creation order
-- past every row that does not match: with a deep backlog the newest rows are all ENQUEUED,
-- and a filter on finished workflows read past all of them (5-20x slower at a million rows,
-- benchmarks/bigtables.py). Partial where most rows hold NULL (or are live), so those rows
-- cost no entry on the enqueue and claim path.
-- Built CONCURRENTLY, outside a transaction, so the application's writes to workflow_status
-- go on while a big table is indexed (the runner checks each index is valid before it records
-- the version; a new database gets them in its one migration transaction).
-- Finished workflows by status (live ones: idx_workflow_status_active_created).
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_workflow_status_status_created
    ON "{schema}".workflow_status (status, created_at, workflow_uuid)
    WHERE status IN ('SUCCESS', 'ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED');
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_workflow_status_name_created
    ON "{schema}".workflow_status (name, created_at, workflow_uuid);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_workflow_status_version_created
    ON "{schema}".workflow_status (application_version, created_at, workflow_uuid);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_workflow_status_user_created
    ON "{schema}".workflow_status (authenticated_user, created_at, workflow_uuid)
    WHERE authenticated_user IS NOT NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_workflow_status_queue_name_created
    ON "{schema}".workflow_status (queue_name, created_at, workflow_uuid)
    WHERE queue_name IS NOT NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_workflow_status_executor_created
    ON "{schema}".workflow_status (executor_id, created_at, workflow_uuid)
    WHERE executor_id IS NOT NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_workflow_status_schedule_created
    ON "{schema}".workflow_status (schedule_name, created_at, workflow_uuid)
    WHERE schedule_name IS NOT NULL;
-- Filters that only some rows can pass (completed_*, dequeued_*, has_parent, forked,
-- attributes): creation order over those rows only, never past the backlog.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_workflow_status_finished_created
    ON "{schema}".workflow_status (created_at, workflow_uuid) WHERE completed_at IS NOT NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_workflow_status_dequeued_created
    ON "{schema}".workflow_status (created_at, workflow_uuid)
    WHERE started_at_epoch_ms IS NOT NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_workflow_status_child_created
    ON "{schema}".workflow_status (created_at, workflow_uuid)
    WHERE parent_workflow_id IS NOT NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_workflow_status_was_forked_created
    ON "{schema}".workflow_status (created_at, workflow_uuid) WHERE was_forked_from;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_workflow_status_attributes_created
    ON "{schema}".workflow_status (created_at, workflow_uuid) WHERE attributes IS NOT NULL;
