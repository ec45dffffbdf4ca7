-- What a deployment deploys, with every condition it must meet (listener.deploy refuses unless
-- all hold): the build this deployment was claimed for belongs to the same automation, is a build
-- that finished with outcome 'succeeded', was made by a session whose login is a member of
-- agent_builder_builder, and has passing results for levels 1-4 and no failing one. No row: the
-- deployment attempt itself is unknown.
SELECT d.automation_id, d.source_build_id, b.id AS build_id, b.automation_id AS build_automation_id,
       b.kind, b.outcome, b.built_by, b.image_id, b.artifact_sha256, b.files, b.acceptance_check, b.signature,
       (b.automation_id IS NOT DISTINCT FROM d.automation_id) AS belongs,
       (b.kind = 'build' AND b.outcome = 'succeeded' AND b.finished_at IS NOT NULL) IS TRUE AS finished,
       EXISTS (SELECT 1 FROM pg_roles r
               WHERE r.rolname = b.built_by AND pg_has_role(r.oid, 'agent_builder_builder', 'MEMBER')) AS by_builder,
       ARRAY(SELECT DISTINCT t.test_level FROM agent_test_results t
             WHERE t.build_id = b.id AND t.automation_id = b.automation_id AND t.status = 'pass'
               AND t.test_level BETWEEN 1 AND 4
             ORDER BY t.test_level) AS levels_passed,
       EXISTS (SELECT 1 FROM agent_test_results t WHERE t.build_id = b.id AND t.status = 'fail') AS any_failed
FROM agent_builds d
LEFT JOIN agent_builds b ON b.id = d.source_build_id
WHERE d.id = %(deploy_id)s AND d.kind = 'deploy'
