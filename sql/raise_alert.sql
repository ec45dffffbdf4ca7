-- Open an alert, or refresh the detail of an open one. `opened` is true only for the statement that
-- opened it (there was no row: xmax = 0, or the last one was cleared: raised_at becomes this
-- statement's now()); that caller notifies, so an outage is notified once, across listeners.
INSERT INTO agent_builder_alerts AS a (name, detail)
VALUES (%(name)s, %(detail)s)
ON CONFLICT (name) DO UPDATE
SET detail     = EXCLUDED.detail,
    raised_at  = CASE WHEN a.cleared_at IS NULL THEN a.raised_at ELSE now() END,
    cleared_at = NULL
RETURNING (xmax = 0 OR raised_at = now()) AS opened
