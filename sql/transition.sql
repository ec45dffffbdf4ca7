-- Move an owned row from one status to the next and record the step reached, in one statement.
-- Ownership: the row must still point at this attempt and be in the expected status; a worker
-- that lost its claim changes nothing (no row comes back).
WITH moved AS (
    UPDATE automation_ideas
    SET builder_status = %(new_status)s
    WHERE id = %(automation_id)s
      AND builder_build_id = %(build_id)s
      AND builder_status = %(expected)s
    RETURNING id
)
UPDATE agent_builds
SET step = %(step)s, step_at = now()
WHERE id = %(build_id)s AND finished_at IS NULL AND EXISTS (SELECT 1 FROM moved)
RETURNING id
