-- The live listeners: rows whose registering session still holds the row's advisory lock, and
-- whether each one leads: its leader session (application name %(leader_application)s, a space
-- and the worker's name: listener/queue/leader.py) holds the leader's lock (sql/leader_try_lock.sql). Only a label for
-- people (an application name is the client's to set); nothing decides by it.
-- %(host)s NULL: every host.
SELECT l.id, l.host, l.pid, l.worker, l.version, l.concurrency, l.in_flight, l.started_at, l.heartbeat_at,
       EXISTS (
         SELECT FROM pg_locks k JOIN pg_stat_activity a ON a.pid = k.pid
         WHERE k.locktype = 'advisory' AND k.granted
           AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND k.classid = %(leader_class)s::integer::oid AND k.objid = %(leader_id)s::integer::oid AND k.objsubid = 2
           AND a.application_name = left(%(leader_application)s::text || ' ' || l.worker, 63)  -- application names stop at 63 bytes
       ) AS leads
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
