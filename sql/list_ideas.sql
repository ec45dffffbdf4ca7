-- `agent-builder list [--status S]`: ideas, optionally only those whose builder_status or status is S.
SELECT a.id, a.name, a.type, a.status, a.builder_status, a.priority,
       (SELECT max(h.changed_at) FROM builder_status_history h WHERE h.automation_id = a.id) AS changed_at
FROM automation_ideas a
WHERE %(status)s::text IS NULL OR a.builder_status = %(status)s::text OR a.status = %(status)s::text
ORDER BY a.id
