-- `agent-builder logs`: one automation's test results, in the order they were written.
SELECT id, build_id, test_level, status, duration_ms, created_at, execution_log
FROM agent_test_results
WHERE automation_id = %(automation_id)s
ORDER BY id
