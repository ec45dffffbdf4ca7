-- Move an owned row from one status to the next and record the step reached, in one statement.
-- Ownership: the row must still point at this attempt and be in the expected status; a worker
-- that lost its claim changes nothing (no row comes back).
-- The move to 'building' (Step 3 starts) commits without waiting for its WAL flush (this
-- transaction only): lost in a server crash, the row is back at 'queued' under an attempt whose
-- session died, which the rescuer releases (the row is built again). What follows it before the
-- attempt's next durable write is only the free model call (the model's output is saved, durably,
-- before the paid review), and that commit flushes this one's WAL too. Every other move is durable.
WITH moved AS (
    UPDATE automation_ideas
    SET builder_status = %(new_status)s
    WHERE id = %(automation_id)s
      AND builder_build_id = %(build_id)s
      AND builder_status = %(expected)s
    RETURNING id,
          CASE WHEN %(new_status)s::text = 'building' THEN set_config('synchronous_commit', 'off', true) END AS commit_mode
)
UPDATE agent_builds
SET step = %(step)s, step_at = now()
WHERE id = %(build_id)s AND finished_at IS NULL AND EXISTS (SELECT 1 FROM moved)
RETURNING id,
          CASE WHEN %(new_status)s::text = 'building' THEN set_config('synchronous_commit', 'off', true) END AS commit_mode
