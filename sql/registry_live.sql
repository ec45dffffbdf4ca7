-- The live listeners: rows whose registering session still holds the row's advisory lock.
-- %(host)s NULL: every host.
SELECT l.id, l.host, l.pid, l.worker, l.version, l.concurrency, l.in_flight, l.started_at, l.heartbeat_at
FROM agent_builder_listeners l
WHERE (%(host)s::text IS NULL OR l.host = %(host)s::text)
  AND EXISTS (
    SELECT FROM pg_locks k
    WHERE k.locktype = 'advisory' AND k.granted
      AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND k.classid = %(lock_class)s::integer::oid AND k.objid = l.id::oid AND k.objsubid = 2
      AND k.pid = l.backend_pid
  )
ORDER BY l.started_at, l.id
