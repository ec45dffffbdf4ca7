-- Rows whose session is gone (killed listeners): nobody holds their lock any more.
DELETE FROM agent_builder_listeners l
WHERE NOT EXISTS (
    SELECT FROM pg_locks k
    WHERE k.locktype = 'advisory' AND k.granted
      AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND k.classid = %(lock_class)s::integer::oid AND k.objid = l.id::oid AND k.objsubid = 2
      AND k.pid = l.backend_pid
)
