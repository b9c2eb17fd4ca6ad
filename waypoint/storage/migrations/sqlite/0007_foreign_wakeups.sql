-- Waypoint schema version 7 (SQLite): nothing to do. On PostgreSQL this version makes other
-- writers (DBOS, plain SQL) wake Waypoint through NOTIFY; SQLite has no notifications and
-- every waiter polls, so it sees their writes without help. Kept so both dialects number alike.
SELECT 1;
