-- Attempts whose worker is gone: unfinished, and nobody holds their session advisory lock
-- (the lock dies with the worker's connection: SIGKILL, host loss via keepalives, a cut network).
-- Also rows a builder status says are in flight with no live attempt behind them (repairs by
-- hand, a builder from before this one).
SELECT b.id AS build_id, b.automation_id, b.kind, b.step, b.worker, b.claimed_at,
       a.builder_status, (a.builder_build_id = b.id) IS TRUE AS owns_row
FROM agent_builds b
LEFT JOIN automation_ideas a ON a.id = b.automation_id
WHERE b.finished_at IS NULL
  AND NOT EXISTS (
      SELECT 1 FROM pg_locks l
      WHERE l.locktype = 'advisory'
        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND l.classid = 424242 AND l.objid = (b.id %% 2147483647) AND l.objsubid = 2
        AND l.granted)
UNION ALL
SELECT a.builder_build_id, a.id, NULL, NULL, NULL, NULL, a.builder_status, false
FROM automation_ideas a
WHERE a.builder_status IN ('queued', 'building', 'deploying')
  AND NOT EXISTS (SELECT 1 FROM agent_builds b WHERE b.automation_id = a.id AND b.finished_at IS NULL)
