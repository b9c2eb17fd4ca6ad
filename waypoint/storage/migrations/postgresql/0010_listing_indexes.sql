-- Waypoint schema version 10: indexes so the first page of a listing costs the same with a
-- million finished workflows as with ten thousand (benchmarks/bigtables.py).
-- Built CONCURRENTLY, outside a transaction, so the application's writes to workflow_status
-- go on while a big table is indexed (the runner checks each index is valid before it records
-- the version; a new database gets them in its one migration transaction).
-- Workflows waiting or running, oldest first (list_queued_workflows across queues, the
-- PENDING/ENQUEUED listings): read in order from the live rows only, never past the
-- finished ones.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_workflow_status_active_created
    ON "{schema}".workflow_status (created_at, workflow_uuid)
    WHERE status IN ('ENQUEUED', 'PENDING', 'DELAYED');
-- The same for one queue (list_queued_workflows(queue_name=...)), however deep its backlog.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_workflow_status_queue_created
    ON "{schema}".workflow_status (queue_name, created_at, workflow_uuid)
    WHERE status IN ('ENQUEUED', 'PENDING', 'DELAYED');
-- Workflow ID prefixes (LIKE 'prefix%'): the primary key's collation cannot serve them.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_workflow_status_id_pattern
    ON "{schema}".workflow_status (workflow_uuid text_pattern_ops);
