-- Give up the session advisory lock taken by the claim.
SELECT pg_advisory_unlock(424242, (%(build_id)s::bigint %% 2147483647)::int4) AS unlocked
