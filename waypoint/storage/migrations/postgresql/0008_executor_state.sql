-- Waypoint schema version 8: an executor says when it drains and when it has handed its work
-- back ('live', 'draining', 'gone'), so peers take over a gone one at once and operators see
-- which pods are on their way out.
ALTER TABLE "{schema}".executors ADD COLUMN IF NOT EXISTS state TEXT NOT NULL DEFAULT 'live';
