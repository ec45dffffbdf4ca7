-- `agent-builder prune --older-than D`: finished attempts older than the cutoff and their test
-- results. Kept whatever the age: running attempts, the build each automation points at
-- (builder_build_id: what awaits approval or is deployed), the latest finished build of each
-- automation, and every build a deployment came from. builder_status_history is never touched.
WITH doomed AS (
    SELECT b.id
    FROM agent_builds b
    WHERE b.finished_at IS NOT NULL
      AND b.finished_at < %(cutoff)s
      AND NOT EXISTS (SELECT FROM automation_ideas a WHERE a.builder_build_id = b.id)
      AND NOT EXISTS (SELECT FROM agent_builds d WHERE d.source_build_id = b.id)
      AND b.id <> (SELECT max(l.id) FROM agent_builds l
                   WHERE l.automation_id = b.automation_id AND l.kind = b.kind AND l.finished_at IS NOT NULL)
),
results AS (
    DELETE FROM agent_test_results r USING doomed WHERE r.build_id = doomed.id
    RETURNING r.id
),
attempts AS (
    DELETE FROM agent_builds b USING doomed WHERE b.id = doomed.id
    RETURNING b.id
)
SELECT (SELECT count(*) FROM attempts) AS attempts, (SELECT count(*) FROM results) AS results
