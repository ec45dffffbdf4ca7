-- The leader's lock: one listener of a database holds it, on a dedicated session, for as long as
-- that session lives, and runs the rescuer and the sweeps; the others try again every
-- RESCUE_INTERVAL_S and one of them takes over when the leader's session ends (killed, lost).
-- The two-integer form (pg_locks: objsubid 2) never meets an attempt's key (the bigint form).
SELECT pg_try_advisory_lock(%(lock_class)s::integer, %(lock_id)s::integer) AS leading
