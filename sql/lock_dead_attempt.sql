-- Inside the rescue transaction: lock the row and the attempt (automation_ideas first, then
-- agent_builds, the order every other writer uses; SKIP LOCKED, so a rescuer never waits on a
-- worker) and keep a second rescuer out until commit. got: the attempt is still unfinished and both
-- locks are ours. alive: a builder session holds the attempt's advisory lock (its worker lives; a
-- lock held by any other session proves nothing).
WITH idea AS (
    SELECT id FROM automation_ideas WHERE id = %(automation_id)s FOR UPDATE SKIP LOCKED
), attempt AS (
    SELECT b.id FROM agent_builds b
    WHERE b.id = %(build_id)s AND b.finished_at IS NULL
      AND (EXISTS (SELECT 1 FROM idea)
           OR NOT EXISTS (SELECT 1 FROM automation_ideas WHERE id = %(automation_id)s))
    FOR UPDATE OF b SKIP LOCKED
)
SELECT EXISTS (SELECT 1 FROM attempt) AS got,
       EXISTS (SELECT 1 FROM agent_builder_lock_holders(%(build_id)s) h WHERE h.builder) AS alive
