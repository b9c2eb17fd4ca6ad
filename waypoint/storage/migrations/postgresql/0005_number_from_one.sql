-- Waypoint schema version 5: a workflow's operations are numbered from 1, as DBOS numbers them.
-- Rows that earlier Waypoint versions wrote (numbered from 0) move up by one, so a workflow left
-- unfinished replays them where the new numbering looks. They are recognised by owner_xid in
-- operation_outputs, which DBOS never writes; DBOS's own rows are left as they are. Keys move in
-- two passes (negative, then positive) so no row collides with its neighbour on the way.
UPDATE "{schema}".operation_outputs SET function_id = -function_id - 1
WHERE workflow_uuid IN (
    SELECT workflow_uuid FROM "{schema}".operation_outputs WHERE owner_xid IS NOT NULL
);
UPDATE "{schema}".operation_outputs SET function_id = -function_id WHERE function_id < 0;

UPDATE "{schema}".workflow_events_history SET function_id = -function_id - 1
WHERE workflow_uuid IN (
    SELECT workflow_uuid FROM "{schema}".operation_outputs WHERE owner_xid IS NOT NULL
);
UPDATE "{schema}".workflow_events_history SET function_id = -function_id WHERE function_id < 0;

-- Stream writes are keyed by their operation ("wf:<id>" from the body, "step:<id>:<n>" from a
-- step): the keys move with the numbers, through a "#" prefix for the same reason.
UPDATE "{schema}".streams SET function_id = function_id + 1,
    write_key = CASE
        WHEN write_key LIKE 'wf:%' THEN '#wf:' || (substr(write_key, 4)::int + 1)
        WHEN write_key LIKE 'step:%' THEN '#step:' || (split_part(write_key, ':', 2)::int + 1)
            || ':' || split_part(write_key, ':', 3)
        ELSE write_key
    END
WHERE workflow_uuid IN (
    SELECT workflow_uuid FROM "{schema}".operation_outputs WHERE owner_xid IS NOT NULL
);
UPDATE "{schema}".streams SET write_key = substr(write_key, 2) WHERE write_key LIKE '#%';
