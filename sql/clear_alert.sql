-- End an open alert (the outage is over). A row comes back only when one was open.
UPDATE agent_builder_alerts
SET cleared_at = now()
WHERE name = %(name)s AND cleared_at IS NULL
RETURNING name, raised_at
