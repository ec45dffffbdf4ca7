-- Attempts whose worker is gone: unfinished, and no builder session holds their session advisory
-- lock (the lock dies with the worker's connection: SIGKILL, host loss via keepalives, a cut
-- network). A lock held by a session that is not a builder's is not trusted: such an attempt
-- counts as dead, and `squatters` names the holders so that the rescuer can report them.
-- The locks are read once per sweep (and only when some attempt is unfinished).
-- Also rows a builder status says are in flight with no live attempt behind them (repairs by
-- hand, a builder from before this one).
WITH held AS MATERIALIZED (
    SELECT key, pid, login, application, builder FROM agent_builder_lock_holders_all()
)
SELECT b.id AS build_id, b.automation_id, b.kind, b.step, b.worker, b.claimed_at,
       a.builder_status, (a.builder_build_id = b.id) IS TRUE AS owns_row,
       (SELECT string_agg(format('pid %%s (login %%s, application %%L)', h.pid, coalesce(h.login::text, '?'),
                                 coalesce(h.application, '')), ', ' ORDER BY h.pid)
        FROM held h WHERE h.key = agent_builder_lock_key(b.id) AND NOT h.builder) AS squatters
FROM agent_builds b
LEFT JOIN automation_ideas a ON a.id = b.automation_id
WHERE b.finished_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM held h WHERE h.key = agent_builder_lock_key(b.id) AND h.builder)
UNION ALL
SELECT a.builder_build_id, a.id, NULL, NULL, NULL, NULL, a.builder_status, false, NULL
FROM automation_ideas a
WHERE a.builder_status IN ('queued', 'building', 'deploying')
  AND NOT EXISTS (SELECT 1 FROM agent_builds b WHERE b.automation_id = a.id AND b.finished_at IS NULL)
