-- Waypoint schema version 16 (PostgreSQL): nothing. On SQLite this version files each
-- workflow's span by its length class, SQLite's stand-in for version 14's GiST span indexes.
-- The file keeps the versions aligned.
SELECT 1;
