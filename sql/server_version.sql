-- The server's version (`check`).
SELECT current_setting('server_version') AS server_version
