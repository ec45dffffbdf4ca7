-- End an attempt and move its row in one statement, only while the attempt still owns the row,
-- and give up the attempt's advisory lock. Unlocking before the commit is safe: a rescuer that
-- slips in finds the row moved on and the attempt finished, and changes nothing.
-- retry_after_s: seconds of release backoff (NULL: none); idea_status: a new automation_ideas.status
-- (NULL: unchanged; 'deployed' after a production deployment).
-- asynchronous: a build's ending commits without waiting for its WAL flush (this transaction only).
-- A server crash can lose it, together with the worker's session and lock: the row is back where
-- the attempt left it under a dead attempt, which the rescuer ends (released before Step 3, failed
-- after it; nothing that costs runs again on its own). What announces the ending waits in the
-- listener's outbox for a durable commit that has seen it (sql/durable_point.sql), so no
-- notification tells of an ending a crash undid. A deployment's ending stays durable.
WITH moved AS (
    UPDATE automation_ideas
    SET builder_status = %(new_status)s,
        status = coalesce(%(idea_status)s, status),
        builder_retry_at = CASE WHEN %(retry_after_s)s::float8 IS NULL THEN builder_retry_at
                                ELSE now() + make_interval(secs => %(retry_after_s)s::float8) END
    WHERE id = %(automation_id)s
      AND builder_build_id = %(build_id)s
      AND builder_status = %(expected)s
    RETURNING id, builder_retry_at
), done AS (
    UPDATE agent_builds
    SET finished_at = now(), outcome = %(outcome)s, error = %(error)s
    WHERE id = %(build_id)s AND finished_at IS NULL AND EXISTS (SELECT 1 FROM moved)
    RETURNING id
)
SELECT (SELECT count(*) FROM done) AS finished, (SELECT builder_retry_at FROM moved) AS retry_at,
       pg_advisory_unlock(agent_builder_lock_key(%(build_id)s::bigint)) AS unlocked,
       CASE WHEN %(asynchronous)s::boolean THEN set_config('synchronous_commit', 'off', true) END AS commit_mode
