-- The installation's identity: one per database (cluster system identifier + database name), so
-- that two databases whose builders share one Docker engine (staging and production, parallel test
-- runs) never touch each other's containers, images or networks. Every container, image, network
-- and label the builder makes carries it (io.agent-builder.installation).
SELECT substr(md5(s.system_identifier::text || '/' || current_database()), 1, 12) AS installation
FROM pg_control_system() AS s
