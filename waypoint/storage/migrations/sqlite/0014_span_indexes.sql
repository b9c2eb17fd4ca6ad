-- Waypoint schema version 14 (SQLite): nothing. PostgreSQL's version 14 indexes each
-- workflow's span (creation to completion, to dequeue) with GiST, which SQLite lacks; here the
-- rows running at a completed_after/dequeued_after bound are found by the completion (dequeue)
-- index of version 1 (sql_base.Dialect.running_at), reading every row stamped after the bound.
SELECT 1;
