-- The outbox's durable point (listener/queue/outbox.py): which of these attempts have ended, read
-- by a transaction that takes a transaction id (so its commit writes a WAL record) and commits
-- waiting for its flush (at least locally, whatever the session's default). WAL is flushed in
-- order, and every ending it saw committed before it began: once it returns, they are on disk too.
SELECT array(SELECT b.id FROM agent_builds b
             WHERE b.id = ANY(%(build_ids)s::bigint[]) AND b.finished_at IS NOT NULL ORDER BY b.id) AS finished,
       pg_current_xact_id() AS point,
       CASE WHEN current_setting('synchronous_commit') = 'off' THEN set_config('synchronous_commit', 'local', true) END AS commit_mode
