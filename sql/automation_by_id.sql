SELECT id, name, type, status, priority, task_description, infrastructure_requirement,
       builder_status, acceptance_check, builder_build_id, builder_retry_at
FROM automation_ideas
WHERE id = %(automation_id)s
