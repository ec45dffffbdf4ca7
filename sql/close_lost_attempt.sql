-- End an attempt that no longer owns its row (its row was changed by hand or rescued).
UPDATE agent_builds
SET finished_at = now(), outcome = %(outcome)s, error = %(error)s
WHERE id = %(build_id)s AND finished_at IS NULL
RETURNING id
