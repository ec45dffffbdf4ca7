-- The logins (and roles) that are direct members of each agent-builder group role: what `migrate`
-- reports next to the GRANT statements that finish the set-up.
SELECT g.rolname AS role, coalesce(array_agg(m.rolname::text ORDER BY m.rolname) FILTER (WHERE m.rolname IS NOT NULL), '{}') AS members
FROM pg_roles g
LEFT JOIN pg_auth_members am ON am.roleid = g.oid
LEFT JOIN pg_roles m ON m.oid = am.member
WHERE g.rolname IN ('agent_builder_builder', 'agent_builder_operator', 'agent_builder_admin')
GROUP BY g.rolname
ORDER BY array_position(ARRAY['agent_builder_builder', 'agent_builder_operator', 'agent_builder_admin'], g.rolname::text)
