-- Paid overseer calls since midnight UTC, across every builder (OVERSEER_DAILY_LIMIT).
SELECT count(*) AS calls
FROM agent_builds
WHERE overseer_called_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
