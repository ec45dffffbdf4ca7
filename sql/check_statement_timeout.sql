-- Level 4 sql_rows: bound the operator's query to this (read-only) transaction's statement timeout.
SELECT set_config('statement_timeout', %(timeout)s, true)
