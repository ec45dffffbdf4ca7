-- `agent-builder add`: a new idea, as an operator would INSERT it (ready_to_build with --ready).
INSERT INTO automation_ideas (name, type, status, priority, task_description, infrastructure_requirement,
                              acceptance_check)
VALUES (%(name)s, %(type)s, %(status)s, %(priority)s, %(task_description)s, %(infrastructure_requirement)s,
        %(acceptance_check)s)
RETURNING id, status, builder_status
