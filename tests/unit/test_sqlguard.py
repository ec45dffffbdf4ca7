"""The sql_rows validator: one plain SELECT calling only allowed pure functions, read the way
PostgreSQL's lexer reads it (quotes, E'' strings, dollar quotes, nested comments, quoted
identifiers). Whether the server agrees is tested in tests/integration/test_sql_rows.py."""

from __future__ import annotations

import pytest

from listener.sandbox.sqlguard import ALLOWED_FUNCTIONS, Accepted, check_select, tokenize
from listener.sandbox.sqlrole import condition_name


def _refused(query: str) -> str:
    result = check_select(query)
    assert isinstance(result, str), f"accepted: {result}"
    return result


def _accepted(query: str) -> Accepted:
    result = check_select(query)
    assert isinstance(result, Accepted), result
    return result


@pytest.mark.parametrize(("query", "expected"), [
    ("SELECT pg_read_file('/etc/hostname')", "calls pg_read_file(): pg_* functions are never allowed"),
    ("select cast(pg_read_file('/etc/hostname') as int)", "calls pg_read_file()"),
    ("SELECT CAST(PG_READ_FILE('/etc/hostname') AS int)", "calls pg_read_file()"),
    ('SELECT "pg_read_file"(\'/etc/hostname\')', "calls pg_read_file()"),
    ("SELECT pg_catalog.pg_read_file('/etc/hostname')", "calls pg_catalog.pg_read_file(): schema-qualified"),
    ('SELECT "pg_catalog"."pg_read_file"(\'/etc/hostname\')', "schema-qualified function calls are refused"),
    ("SELECT pg_catalog . lower('x')", "calls pg_catalog.lower(): schema-qualified"),
    ("SELECT public.count(*) FROM t", "schema-qualified"),
    ("WITH f AS (SELECT pg_read_file('/etc/hostname') AS x) SELECT * FROM f", "calls pg_read_file()"),
    ("SELECT * FROM (SELECT pg_read_file('/etc/hostname')) AS s", "calls pg_read_file()"),
    ("SELECT 1 WHERE EXISTS (SELECT pg_read_file('/etc/hostname'))", "calls pg_read_file()"),
    ("SELECT pg_read_file /* a comment */ ('/etc/hostname')", "calls pg_read_file()"),
    ("SELECT pg_read_file\n-- comment\n('/etc/hostname')", "calls pg_read_file()"),
    ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity", "calls pg_terminate_backend()"),
    ("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity", "calls pg_terminate_backend()"),
    ("SELECT lo_import('/etc/passwd')", "calls lo_import(), which is not in the allow-list"),
    ("SELECT query_to_xml('select 1', true, true, '')", "calls query_to_xml()"),
    ("SELECT dblink('host=x', 'select 1')", "calls dblink()"),
    ("SELECT set_config('statement_timeout', '0', false)", "calls set_config()"),
    ("SELECT current_setting('data_directory')", "calls current_setting()"),
    ("SELECT * FROM generate_series(1, 10)", "calls generate_series()"),
    ("SELECT * FROM t TABLESAMPLE system(10)", "calls system()"),
    ('SELECT "Lower"(x) FROM t', 'calls Lower()'),
    ('SELECT U&"\\0070g_sleep"(1)', "not in the allow-list"),
    ("SELECT xmlparse(document '<x/>')", "calls xmlparse()"),
    ("SELECT 1 + sleep(1)", "calls sleep()"),
    ("SELECT x FROM t WHERE NOT (pg_read_file('/etc/hostname') IS NULL)", "calls pg_read_file()"),
    ("SELECT x FROM t WHERE y LIKE (z)", "calls like()"),  # LIKE ( is read as a call: write LIKE z
    ("SELECT 1 OPERATOR(pg_catalog.+) 2", "uses OPERATOR"),
    ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "uses DELETE"),
    ("WITH u AS (UPDATE t SET x = 1 RETURNING *) SELECT * FROM u", "uses UPDATE"),
    ("WITH i AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM i", "uses INSERT"),
    ("WITH m AS (MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE) SELECT 1", "uses MERGE"),
    ("SELECT * INTO copy_of_t FROM t", "uses INTO"),
    ("SELECT * FROM t FOR UPDATE", "uses FOR"),
    ("SELECT * FROM t FOR SHARE", "uses FOR"),
    ("SELECT * FROM t FOR NO KEY UPDATE", "uses FOR"),
    ("COPY t TO '/tmp/t.csv'", "not COPY"),
    ("SELECT 1 FROM (COPY t TO STDOUT) AS c", "uses COPY"),
    ("LOCK TABLE t", "not LOCK"),
    ("SELECT 1; LOCK TABLE t", "found 2 statements"),
    ("SELECT 1; SELECT pg_sleep(10)", "found 2 statements"),
    ("SELECT 'a'; DELETE FROM t", "found 2 statements"),
    ("SELECT 1;;SELECT 2", "found 3 statements"),
    ("SELECT $1", "has a parameter $1"),
    ("TABLE t", "not TABLE"),
    ("VALUES (1)", "not VALUES"),
    ("EXPLAIN ANALYZE SELECT 1", "not EXPLAIN"),
    ("DO $$ BEGIN PERFORM pg_sleep(1); END $$", "not DO"),
    ("SELECT 'unterminated", "an unterminated string"),
    ("SELECT \"unterminated", "an unterminated quoted identifier"),
    ("SELECT $x$ unterminated", "an unterminated dollar quote $x$"),
    ("SELECT 1 /* unterminated /* nested */", "an unterminated /* comment"),
    ("SELECT 1pg_sleep(1)", "a number directly followed by letters"),
    ("SELECT 0xpg_sleep(1)", "a number directly followed by letters"),
    ('SELECT "" FROM t', "zero-length quoted identifier"),
    ("", 'needs a "query"'),
    ("   ", 'needs a "query"'),
    ("-- only a comment", "found 0 statements"),
])
def test_refused_queries_say_why(query: str, expected: str) -> None:
    assert expected in _refused(query)


@pytest.mark.parametrize("query", [
    # quoting that hides a call from a naive scanner hides it from PostgreSQL too
    "SELECT 'pg_read_file(1)'",
    "SELECT 'it''s pg_sleep(1)'",
    "SELECT E'\\'; SELECT pg_sleep(1) -- '",
    "SELECT e'\\\\' AS backslash",
    "SELECT $$ pg_sleep(1); $$",
    "SELECT $tag$ $$ pg_sleep(1) $$ $tag$",
    "SELECT \"pg_sleep(1)\" FROM t",
    "SELECT 1 -- pg_sleep(1)",
    "SELECT 1 /* pg_sleep(1) /* nested */ pg_sleep(1) */",
    "SELECT U&'pg_sleep(1)'",
    "SELECT B'101', X'1F', N'pg_sleep(1)'",
    # constructs that take parentheses without calling anything
    "SELECT * FROM t WHERE id IN (1, 2) AND EXISTS (SELECT 1) AND x = ANY (ARRAY[1, 2]) AND y <> ALL (SELECT 2)",
    "SELECT ROW(1, 2), ARRAY(SELECT 1), (1, 2) IN (VALUES (1, 2))",
    "SELECT CAST(x AS numeric(10,2)), x::numeric(5), x::pg_catalog.numeric(3,1), CAST(y AS character varying(10))",
    "SELECT x::timestamp(3) with time zone, '1'::varchar(2), CAST(z AS bit varying(4)) FROM t",
    "SELECT * FROM (VALUES (1, 2)) v(a, b) JOIN (SELECT 1 AS z) AS s(z) ON (true) LEFT JOIN u USING (id)",
    "SELECT count(*) FILTER (WHERE a) OVER (PARTITION BY (b) ORDER BY (c)) FROM t GROUP BY (d) HAVING (count(*) > 1)",
    "SELECT CASE WHEN (a) THEN (b) ELSE (c) END FROM t WHERE (x) OR (y) AND NOT (z) LIMIT (5) OFFSET (1)",
    "WITH RECURSIVE r AS MATERIALIZED (SELECT 1) SELECT * FROM r UNION (SELECT 2) INTERSECT (SELECT 2) EXCEPT (SELECT 3)",
    "WITH r AS NOT MATERIALIZED (SELECT 1) SELECT DISTINCT ON (a) a FROM r, LATERAL (SELECT 1) AS l",
    "SELECT x BETWEEN SYMMETRIC (1) AND (2) FROM t",
    "(SELECT 1) UNION (SELECT 2)",
    "SELECT 1;",
    "SELECT 1 ; -- done\n ;",
    "SELECT id FROM t WHERE created > now() - interval '1 day' AND date_trunc('hour', created) IS NOT NULL",
    "SELECT extract(epoch FROM now()), date_part('year', now()), age(now()), abs(-1), round(1.5)",
    "SELECT coalesce(a, b), nullif(a, b), greatest(a, b), least(a, b), length(s), upper(s), lower(s) FROM t",
    "SELECT jsonb_array_length(data), array_length(arr, 1), sum(x), avg(x), min(x), max(x) FROM t",
    'SELECT "count"(*), COUNT(DISTINCT x) FROM "Odd Table"',
])
def test_plain_selects_are_accepted(query: str) -> None:
    _accepted(query)


def test_allowed_functions_are_sent_qualified_by_pg_catalog() -> None:
    accepted = _accepted("SELECT count(*), Lower(note), coalesce(a, b), EXTRACT(epoch FROM now()) FROM t;  ")
    assert accepted.statement == "SELECT count(*), Lower(note), coalesce(a, b), EXTRACT(epoch FROM now()) FROM t"
    assert accepted.query == ("SELECT pg_catalog.count(*), pg_catalog.lower(note), coalesce(a, b), "
                              "EXTRACT(epoch FROM pg_catalog.now()) FROM t")
    assert accepted.functions == ("count", "lower", "coalesce", "extract", "now")


def test_the_allow_list_is_small_and_has_no_pg_functions() -> None:
    assert len(ALLOWED_FUNCTIONS) <= 25
    assert not [name for name in ALLOWED_FUNCTIONS if name.startswith("pg_")]


def test_the_tokenizer_keeps_quotes_whole() -> None:
    kinds = [(t.kind, t.text) for t in tokenize("SELECT E'a\\'b', 'c''d', $q$e;f$q$, \"g\"\"h\" -- x\n/* y /* z */ */;")]
    assert kinds == [("word", "SELECT"), ("string", "E'a\\'b'"), ("punct", ","), ("string", "'c''d'"), ("punct", ","),
                     ("string", "$q$e;f$q$"), ("punct", ","), ("quoted", '"g""h"'), ("semicolon", ";")]


@pytest.mark.parametrize(("code", "name"), [
    ("22P02", "invalid_text_representation"), ("42P01", "undefined_table"), ("25006", "read_only_sql_transaction"),
    ("57014", "query_canceled"), ("42501", "insufficient_privilege"), ("XX000", "internal_error"), ("ZZ999", None),
])
def test_condition_names(code: str, name: str | None) -> None:
    assert condition_name(code) == name
