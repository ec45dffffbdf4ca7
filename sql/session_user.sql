-- The login of a session (the listener's own, whose backends a Level 4 role must not be able to signal).
SELECT session_user AS role
