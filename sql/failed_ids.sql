-- `agent-builder retry --all-failed`: every automation whose build failed.
SELECT id FROM automation_ideas WHERE builder_status = 'failed' ORDER BY id
