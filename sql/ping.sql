-- A round trip: the listen loop's liveness check of its connection.
SELECT 1 AS alive
