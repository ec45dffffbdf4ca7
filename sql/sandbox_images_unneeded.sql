-- Sweeps: of the build ids found on this installation's sandbox images, those whose image nobody
-- needs: the attempt is over and did not pass the four levels (failed, crashed, released, stopped),
-- its rejection was cleaned up (claim_rejected_cleanup.sql), or the database does not know it.
-- Kept: a running attempt's image, and every build that passed and was not rejected: the one
-- awaiting approval, approved or deploying, the one in production (deploy_source.sql deploys only
-- kind 'build' with outcome 'succeeded') and the previous versions SANDBOX_KEEP_IMAGES keeps.
SELECT x.build_id
FROM unnest(%(build_ids)s::bigint[]) AS x(build_id)
WHERE NOT EXISTS (
    SELECT 1 FROM agent_builds b
    WHERE b.id = x.build_id
      AND (b.finished_at IS NULL OR (b.kind = 'build' AND b.outcome = 'succeeded' AND b.cleaned_at IS NULL))
)
