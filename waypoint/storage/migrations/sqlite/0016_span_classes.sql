-- Waypoint schema version 16 (SQLite): the rows running at a completed_after/dequeued_after
-- bound T (created before T, stamped at or after it), found without reading every row stamped
-- after T. PostgreSQL indexes each row's span with GiST (version 14); SQLite has no GiST, so
-- each row is filed by the length class of its span, the number of octal digits of
-- (stamp - created_at): a row of class L spans less than 8^L ms, so one running at T was
-- created after T - 8^L, and each class is one created_at range of this index
-- (sql_base.Dialect.running_at). What a listing reads is the rows of each class created that
-- close to T, a few times those running at T, however long the history.
CREATE INDEX IF NOT EXISTS idx_workflow_status_completed_span
    ON workflow_status (length(printf('%o', max(completed_at - created_at, 0))), created_at)
    WHERE completed_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_workflow_status_dequeued_span
    ON workflow_status (length(printf('%o', max(started_at_epoch_ms - created_at, 0))), created_at)
    WHERE started_at_epoch_ms IS NOT NULL;
