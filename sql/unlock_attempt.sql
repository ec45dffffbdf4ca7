-- Give up the session advisory lock taken by the claim.
SELECT pg_advisory_unlock(agent_builder_lock_key(%(build_id)s::bigint)) AS unlocked
