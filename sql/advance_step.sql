-- Record the step an attempt has reached (what the rescuer and `status` report).
UPDATE agent_builds
SET step = %(step)s, step_at = now()
WHERE id = %(build_id)s AND finished_at IS NULL
RETURNING id
