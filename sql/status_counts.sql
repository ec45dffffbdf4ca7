-- Automations per builder_status (only the types the builder builds).
SELECT builder_status, count(*) AS automations
FROM automation_ideas
WHERE type IN ('claude_agent', 'script') OR builder_status <> 'not_started'
GROUP BY builder_status
ORDER BY builder_status
