-- The review page's overview: automations awaiting approval, longest waiting first, with how long
-- they have waited (since they last entered awaiting_approval) and the build they wait with.
SELECT a.id, a.name, a.type, a.builder_build_id AS build_id,
       extract(epoch FROM now() - h.entered_at)::float8 AS waiting_s
FROM automation_ideas a
LEFT JOIN LATERAL (
    SELECT max(changed_at) AS entered_at FROM builder_status_history
    WHERE automation_id = a.id AND new_status = 'awaiting_approval'
) h ON true
WHERE a.builder_status = 'awaiting_approval'
ORDER BY h.entered_at NULLS LAST, a.id
LIMIT %(limit)s
