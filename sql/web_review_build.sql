-- Which build a review page shows: the given attempt (NULL: the one the row points at) when it is
-- this automation's, or, for a deployment attempt, the build it deploys. No row: the row points at
-- none, or the attempt is not this automation's.
SELECT b.id AS attempt_id, b.kind,
       CASE WHEN b.kind = 'deploy' THEN b.source_build_id ELSE b.id END AS build_id
FROM automation_ideas a
JOIN agent_builds b ON b.id = coalesce(%(build_id)s::bigint, a.builder_build_id) AND b.automation_id = a.id
WHERE a.id = %(automation_id)s
