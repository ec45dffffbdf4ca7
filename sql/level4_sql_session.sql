-- Level 4 sql_rows: the settings of one check, local to its read-only transaction. Bounded in time
-- (lock waits included), strings read the way the builder's tokenizer reads them ('…' without
-- backslash escapes), and no notices sent back (their text would be the server's).
SELECT set_config('statement_timeout', %(timeout)s, true),
       set_config('lock_timeout', %(timeout)s, true),
       set_config('standard_conforming_strings', 'on', true),
       set_config('client_min_messages', 'error', true)
