-- Why one automation cannot be claimed for a build now, in the words `build-once <id>` prints:
-- the row's own reason (agent_builder_unbuildable_reason(), migration 0011: the definition the
-- claim uses), else a running attempt or another builder's lock on it.
SELECT CASE
           WHEN a.id IS NULL THEN 'there is no automation with id ' || w.wanted
           ELSE coalesce(agent_builder_unbuildable_reason(a.type, a.status, a.builder_status),
                         'another builder holds it right now')
       END AS reason
FROM (SELECT %(automation_id)s::bigint AS wanted) w
LEFT JOIN automation_ideas a ON a.id = w.wanted
