-- Move a row whose attempt died (or that has no live attempt) by the playbook's rule.
UPDATE automation_ideas
SET builder_status = %(new_status)s,
    builder_retry_at = CASE WHEN %(retry_after_s)s::float8 IS NULL THEN builder_retry_at
                            ELSE now() + make_interval(secs => %(retry_after_s)s::float8) END
WHERE id = %(automation_id)s
  AND builder_status = %(expected)s
  AND builder_build_id IS NOT DISTINCT FROM %(build_id)s
RETURNING id, name, type, status, priority, task_description, infrastructure_requirement,
          builder_status, acceptance_check
