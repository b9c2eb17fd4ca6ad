-- Waypoint schema version 19 (PostgreSQL): nothing. On SQLite this version adds an index of
-- each partition's in-flight rows in queue order; here DBOS's
-- idx_workflow_status_partition_dequeue_v2 already holds them in that order (queue order has
-- no tie-break past created_at on PostgreSQL). The file keeps the versions aligned.
SELECT 1;
