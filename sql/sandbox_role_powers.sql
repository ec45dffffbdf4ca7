-- The powers of the role Level 4 sql_rows checks run as (SANDBOX_DATABASE_URL): it may read, and
-- nothing more. Refused: a superuser, a member of a role that reads or writes server files, runs
-- server programs or signals backends (pg_terminate_backend), a role that may grant itself those
-- (CREATEROLE), and a member of the listener's own login (it could signal the listener's
-- backends). Both the login and the current role count. listener_role: the listener's login, or NULL.
SELECT string_agg(DISTINCT r.rolname, ', ') AS role,
       bool_or(r.rolsuper) AS superuser,
       bool_or(r.rolcreaterole) AS createrole,
       bool_or(pg_has_role(r.oid, 'pg_signal_backend', 'MEMBER')) AS signal_backend,
       bool_or(pg_has_role(r.oid, 'pg_read_server_files', 'MEMBER')) AS read_server_files,
       bool_or(pg_has_role(r.oid, 'pg_write_server_files', 'MEMBER')) AS write_server_files,
       bool_or(pg_has_role(r.oid, 'pg_execute_server_program', 'MEMBER')) AS execute_server_program,
       coalesce(bool_or(pg_has_role(r.oid, to_regrole(quote_ident(%(listener_role)s::text))::oid, 'MEMBER')), false)
           AS listener_member
FROM pg_catalog.pg_roles AS r
WHERE r.rolname IN (current_user, session_user)
