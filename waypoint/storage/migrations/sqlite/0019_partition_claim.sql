-- Waypoint schema version 19 (SQLite): each partition's in-flight rows in queue order
-- (priority, age, then the rowid every SQLite index ends in), so a claim of a partitioned
-- queue reads the first rows of each partition and stops (sql_queues.QueueSql._partition_heads).
-- DBOS's idx_workflow_status_partition_dequeue_v2 ends in workflow_uuid instead, which orders
-- rows enqueued within one millisecond by their IDs, not by their arrival; without statistics
-- SQLite preferred the queue's in-flight index to it and read the whole backlog per partition.
CREATE INDEX IF NOT EXISTS idx_workflow_status_partition_claim
    ON workflow_status (queue_name, status, queue_partition_key, priority, created_at)
    WHERE status IN ('ENQUEUED', 'PENDING') AND queue_partition_key IS NOT NULL;
