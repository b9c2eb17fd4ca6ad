-- Waypoint schema version 10 (SQLite): live workflows in creation order, across queues and
-- per queue, so listings never read past the finished ones.
CREATE INDEX IF NOT EXISTS idx_workflow_status_active_created
    ON workflow_status (created_at, workflow_uuid)
    WHERE status IN ('ENQUEUED', 'PENDING', 'DELAYED');
CREATE INDEX IF NOT EXISTS idx_workflow_status_queue_created
    ON workflow_status (queue_name, created_at, workflow_uuid)
    WHERE status IN ('ENQUEUED', 'PENDING', 'DELAYED');
