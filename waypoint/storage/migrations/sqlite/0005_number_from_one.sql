-- Waypoint schema version 5 (SQLite): a workflow's operations are numbered from 1, as DBOS
-- numbers them. Rows earlier Waypoint versions wrote (numbered from 0, recognised by owner_xid
-- in operation_outputs, which DBOS never writes) move up by one, in two passes so no key
-- collides on the way.
-- A file Waypoint adopted from DBOS before version 1 added owner_xid there gets it now (the
-- runner skips this where the column exists).
ALTER TABLE operation_outputs ADD COLUMN owner_xid TEXT;
UPDATE operation_outputs SET function_id = -function_id - 1
WHERE workflow_uuid IN (SELECT workflow_uuid FROM operation_outputs WHERE owner_xid IS NOT NULL);
UPDATE operation_outputs SET function_id = -function_id WHERE function_id < 0;

UPDATE workflow_events_history SET function_id = -function_id - 1
WHERE workflow_uuid IN (SELECT workflow_uuid FROM operation_outputs WHERE owner_xid IS NOT NULL);
UPDATE workflow_events_history SET function_id = -function_id WHERE function_id < 0;

-- Stream write keys ("wf:<id>", "step:<id>:<n>") move with the numbers, through a "#" prefix.
UPDATE streams SET function_id = function_id + 1,
    write_key = CASE
        WHEN write_key LIKE 'wf:%' THEN '#wf:' || (CAST(substr(write_key, 4) AS INTEGER) + 1)
        WHEN write_key LIKE 'step:%' THEN '#step:'
            || (CAST(substr(write_key, 6, instr(substr(write_key, 6), ':') - 1) AS INTEGER) + 1)
            || substr(write_key, 5 + instr(substr(write_key, 6), ':'))
        ELSE write_key
    END
WHERE workflow_uuid IN (SELECT workflow_uuid FROM operation_outputs WHERE owner_xid IS NOT NULL);
UPDATE streams SET write_key = substr(write_key, 2) WHERE write_key LIKE '#%';
