-- A listener's registry row, written from the session that then holds the row's advisory lock.
INSERT INTO agent_builder_listeners (host, pid, worker, version, concurrency)
VALUES (%(host)s, %(pid)s, %(worker)s, %(version)s, %(concurrency)s)
RETURNING id
