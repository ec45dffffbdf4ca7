-- Sweeps: of the attempt ids found on this installation's containers, those whose attempt is over
-- (finished with any outcome) or unknown to this database. Their containers (sandbox runs and
-- builds, an unverified production candidate `-next`) have no one left to remove them.
SELECT x.build_id
FROM unnest(%(build_ids)s::bigint[]) AS x(build_id)
WHERE NOT EXISTS (SELECT 1 FROM agent_builds b WHERE b.id = x.build_id AND b.finished_at IS NULL)
