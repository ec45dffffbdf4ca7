-- Who this session is: its login, whether it is a superuser, its membership of each agent-builder
-- group role (NULL while the role does not exist), whether this database's guards decide by those
-- roles (migration 0006 applied), and whether it owns (or may act as the owner of) a builder table:
-- an owner can disable the triggers that guard it.
SELECT session_user AS login,
       to_regprocedure('agent_builder_is_builder()') IS NOT NULL AS guarded,
       (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = session_user) AS superuser,
       (SELECT pg_has_role(session_user, r.oid, 'MEMBER') FROM pg_roles r WHERE r.rolname = 'agent_builder_builder') AS builder,
       (SELECT pg_has_role(session_user, r.oid, 'MEMBER') FROM pg_roles r WHERE r.rolname = 'agent_builder_operator') AS operator,
       (SELECT pg_has_role(session_user, r.oid, 'MEMBER') FROM pg_roles r WHERE r.rolname = 'agent_builder_admin') AS admin,
       ARRAY(SELECT c.relname::text FROM pg_class c
             WHERE c.oid IN (to_regclass('automation_ideas'), to_regclass('agent_builds'), to_regclass('agent_test_results'),
                             to_regclass('approval_link_uses'), to_regclass('builder_status_history'))
               AND pg_has_role(session_user, c.relowner, 'USAGE')
             ORDER BY c.relname) AS owns
