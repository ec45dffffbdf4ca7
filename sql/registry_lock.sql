-- Held by the registering session for its whole life: the row is live exactly while it is held.
SELECT pg_try_advisory_lock(%(lock_class)s::integer, %(listener_id)s::integer) AS locked
