SELECT changed_at, old_status, new_status, db_user, actor, build_id, override
FROM builder_status_history
WHERE automation_id = %(automation_id)s
ORDER BY id
