-- `agent-builder logs`: one automation's builder_status changes, in order.
SELECT id, changed_at, old_status, new_status, db_user, actor, build_id
FROM builder_status_history
WHERE automation_id = %(automation_id)s
ORDER BY id
