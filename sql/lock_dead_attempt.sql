-- Inside the rescue transaction: proves the attempt's worker is really gone (its lock is free)
-- and keeps a second rescuer out until commit.
SELECT pg_try_advisory_xact_lock(424242, (%(build_id)s::bigint %% 2147483647)::int4) AS got
