-- Waypoint schema version 18 (SQLite): nothing. On PostgreSQL this version adds the function
-- that sends a message from a workflow and delivers it to a receive waiting in the sender's
-- process in one statement; SQLite's store does that in one transaction of plain statements.
-- The file keeps the versions aligned.
SELECT 1;
