-- How many attempts in a row were released (transient failure) or crashed before the last
-- decisive one: the exponent of the release backoff.
SELECT count(*) AS streak
FROM agent_builds
WHERE automation_id = %(automation_id)s
  AND kind = 'build'
  AND outcome IN ('released', 'crashed')
  AND id > coalesce((SELECT max(id) FROM agent_builds
                     WHERE automation_id = %(automation_id)s AND outcome IN ('succeeded', 'failed')), 0)
