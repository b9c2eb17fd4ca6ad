-- Waypoint schema version 11 (SQLite): the first page of list_workflows filtered by one
-- value of a column reads one page of an index holding the matching rows in the listing's
-- order (column, created_at, workflow_uuid), instead of walking creation order past every
-- row that does not match. Partial where most rows hold NULL (or are live).
-- Every status (not only the finished ones, as on PostgreSQL): SQLite uses a partial index
-- only when the query's own terms imply its WHERE, and ``status = ?`` with a bound value
-- implies no list of statuses.
CREATE INDEX IF NOT EXISTS idx_workflow_status_status_created
    ON workflow_status (status, created_at, workflow_uuid);
CREATE INDEX IF NOT EXISTS idx_workflow_status_name_created
    ON workflow_status (name, created_at, workflow_uuid);
CREATE INDEX IF NOT EXISTS idx_workflow_status_version_created
    ON workflow_status (application_version, created_at, workflow_uuid);
CREATE INDEX IF NOT EXISTS idx_workflow_status_user_created
    ON workflow_status (authenticated_user, created_at, workflow_uuid)
    WHERE authenticated_user IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_workflow_status_queue_name_created
    ON workflow_status (queue_name, created_at, workflow_uuid)
    WHERE queue_name IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_workflow_status_executor_created
    ON workflow_status (executor_id, created_at, workflow_uuid)
    WHERE executor_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_workflow_status_schedule_created
    ON workflow_status (schedule_name, created_at, workflow_uuid)
    WHERE schedule_name IS NOT NULL;
-- Filters that only some rows can pass (completed_*, dequeued_*, has_parent, forked,
-- attributes): creation order over those rows only, never past the backlog.
CREATE INDEX IF NOT EXISTS idx_workflow_status_finished_created
    ON workflow_status (created_at, workflow_uuid) WHERE completed_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_workflow_status_dequeued_created
    ON workflow_status (created_at, workflow_uuid)
    WHERE started_at_epoch_ms IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_workflow_status_child_created
    ON workflow_status (created_at, workflow_uuid)
    WHERE parent_workflow_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_workflow_status_was_forked_created
    ON workflow_status (created_at, workflow_uuid) WHERE was_forked_from = 1;
CREATE INDEX IF NOT EXISTS idx_workflow_status_attributes_created
    ON workflow_status (created_at, workflow_uuid) WHERE attributes IS NOT NULL;
