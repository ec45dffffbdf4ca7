-- Ready rows whose type looks like one the builder builds but is not (a case, a space, a dash, a
-- shell or language name, or NULL): set failed in one statement, so that of several listeners
-- exactly one moves (and notifies) each row. Other types (another system's rows) are left alone.
WITH near AS (
    SELECT a.id
    FROM automation_ideas a
    WHERE a.status = 'ready_to_build'
      AND a.builder_status = 'not_started'
      AND NOT agent_builder_built_type(a.type)  -- migration 0011
      AND (a.type IS NULL
           OR regexp_replace(lower(btrim(a.type)), '[[:space:]_-]+', '_', 'g')
              IN ('', 'script', 'scripts', 'python', 'python_script', 'py', 'claude_agent', 'claudeagent', 'claude',
                  'agent', 'claude_agents', 'bash', 'bash_script', 'shell', 'shell_script', 'sh'))
    ORDER BY a.id
    LIMIT 100
    FOR UPDATE SKIP LOCKED
)
UPDATE automation_ideas a
SET builder_status = 'failed'
FROM near
WHERE a.id = near.id
RETURNING a.id, a.name, a.type, a.status, a.priority, a.task_description, a.infrastructure_requirement,
          a.builder_status, a.acceptance_check
