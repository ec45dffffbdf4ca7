-- One agent_test_results row per level run (level 0: a failure outside the four levels).
INSERT INTO agent_test_results (automation_id, build_id, test_level, status, execution_log, duration_ms)
VALUES (%(automation_id)s, %(build_id)s, %(test_level)s, %(status)s, %(execution_log)s, %(duration_ms)s)
RETURNING id
