"""validate_spec: the acceptance_check object of interface.md, every way it can be wrong, and good ones."""

from __future__ import annotations

from typing import Any

import pytest

from listener.queue.outcome import StepFailure
from listener.sandbox.checks import CheckResult, summarize, validate_spec


def _error(spec: Any) -> str:
    with pytest.raises(StepFailure) as caught:
        validate_spec(spec)
    failure = caught.value
    assert (failure.level, failure.step, failure.kind) == (4, "level4", "level")
    return failure.message


def _one(check: dict[str, Any]) -> str:
    return _error({"checks": [check]})


# -- the object -------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, "missing (NULL)"),
        ([{"kind": "file_exists", "path": "/tmp/x"}], "must be a JSON object"),
        (42, "not a number"),
        ('{"checks": []}', "JSON string, not an object"),
        ({}, 'no "checks" list'),
        ({"check": [{"kind": "file_exists", "path": "/tmp/x"}]}, 'no "checks" list'),
        ({"checks": {"kind": "file_exists"}}, 'no "checks" list'),
        ({"checks": []}, "empty"),
        ({"checks": ["file_exists"]}, "check 1 is a string, not an object"),
    ],
)
def test_bad_objects_are_refused_with_a_clear_message(spec: Any, expected: str) -> None:
    assert expected in _error(spec)


def test_unknown_kind_names_the_known_ones() -> None:
    message = _error({"checks": [{"kind": "file_exists", "path": "/tmp/a"}, {"kind": "log_contains", "text": "ok"}]})
    assert "check 2" in message and "'log_contains'" in message
    assert "file_exists, sql_rows, http_status, http_request, container_running" in message


def test_missing_kind_is_an_unknown_kind() -> None:
    assert "unknown kind None" in _one({"path": "/tmp/a"})


# -- per kind ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("check", "expected"),
    [
        ({"kind": "file_exists"}, 'needs an absolute "path"'),
        ({"kind": "file_exists", "path": "tmp/out.txt"}, 'needs an absolute "path"'),
        ({"kind": "file_exists", "path": 7}, 'needs an absolute "path"'),
        ({"kind": "file_exists", "path": "/tmp/x", "min_bytes": -1}, '"min_bytes" must be an integer ≥ 0'),
        ({"kind": "file_exists", "path": "/tmp/x", "min_bytes": "10"}, '"min_bytes" must be an integer'),
        ({"kind": "file_exists", "path": "/tmp/x", "min_bytes": 1.5}, '"min_bytes" must be an integer'),
        ({"kind": "file_exists", "path": "/tmp/x", "min_bytes": True}, '"min_bytes" must be an integer'),
        ({"kind": "sql_rows"}, 'needs a "query"'),
        ({"kind": "sql_rows", "query": "   "}, 'needs a "query"'),
        ({"kind": "sql_rows", "query": "DELETE FROM t"}, "not DELETE"),
        ({"kind": "sql_rows", "query": "INSERT INTO t VALUES (1)"}, "not INSERT"),
        ({"kind": "sql_rows", "query": "SELECT 1; DROP TABLE t"}, "single SELECT statement, found 2"),
        ({"kind": "sql_rows", "query": "SELECT 1; SELECT 2;"}, "found 2"),
        ({"kind": "sql_rows", "query": "SELECT pg_read_file('/etc/hostname')"}, "pg_* functions are never allowed"),
        ({"kind": "sql_rows", "query": "SELECT set_config('role', 'x', false)"}, "not in the allow-list of pure functions"),
        ({"kind": "sql_rows", "query": "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d"}, "uses DELETE"),
        ({"kind": "sql_rows", "query": "SELECT * FROM t FOR UPDATE"}, "uses FOR"),
        ({"kind": "sql_rows", "query": "SELECT 'unterminated"}, "cannot be read: an unterminated string"),
        ({"kind": "sql_rows", "query": "SELECT 1", "min_rows": 0}, '"min_rows" must be an integer ≥ 1'),
        ({"kind": "sql_rows", "query": "SELECT 1", "min_rows": "1"}, '"min_rows" must be an integer'),
        ({"kind": "http_status"}, 'needs an http(s) "url"'),
        ({"kind": "http_status", "url": "ftp://example.org/x"}, 'needs an http(s) "url"'),
        ({"kind": "http_status", "url": "example.org/health"}, 'needs an http(s) "url"'),
        ({"kind": "http_status", "url": "http:///health"}, "the URL has no host"),
        ({"kind": "http_status", "url": "http://svc:99999/"}, "cannot be parsed"),
        ({"kind": "http_status", "url": "http://svc:0/"}, "port must be between 1 and 65535"),
        ({"kind": "http_status", "url": "http://svc/a b"}, "spaces, control characters"),
        ({"kind": "http_status", "url": "http://svc\\@127.0.0.1/"}, "backslashes"),
        ({"kind": "http_status", "url": "http://x/", "status": "200"}, '"status" must be an integer between 100 and 599'),
        ({"kind": "http_status", "url": "http://x/", "status": 42}, "between 100 and 599"),
        ({"kind": "http_status", "url": "http://x/", "status": 600}, "between 100 and 599"),
        ({"kind": "http_request"}, 'needs a "path" starting with /'),
        ({"kind": "http_request", "path": "hook"}, 'needs a "path" starting with /'),
        ({"kind": "http_request", "path": "/hook", "method": "PO ST"}, 'invalid "method"'),
        ({"kind": "http_request", "path": "/hook", "method": 1}, 'invalid "method"'),
        ({"kind": "container_running"}, 'needs "after_s"'),
        ({"kind": "container_running", "after_s": 0}, 'needs "after_s"'),
        ({"kind": "container_running", "after_s": -3}, 'needs "after_s"'),
        ({"kind": "container_running", "after_s": 601}, "≤ 600"),
        ({"kind": "container_running", "after_s": "5"}, 'needs "after_s"'),
        ({"kind": "container_running", "after_s": True}, 'needs "after_s"'),
    ],
)
def test_bad_fields_are_refused_with_a_clear_message(check: dict[str, Any], expected: str) -> None:
    message = _one(check)
    assert message.startswith("acceptance check unusable: check 1 (")
    assert expected in message


# -- good specs -------------------------------------------------------------------------------------

def test_defaults_are_filled_in_and_the_input_is_not_changed() -> None:
    spec = {"checks": [
        {"kind": "file_exists", "path": "/tmp/out.txt"},
        {"kind": "sql_rows", "query": "SELECT 1"},
        {"kind": "http_status", "url": "https://example.org/health"},
        {"kind": "http_request", "path": "/hook"},
        {"kind": "container_running", "after_s": 2.5},
    ]}
    checks = validate_spec(spec)
    assert checks == [
        {"kind": "file_exists", "path": "/tmp/out.txt", "min_bytes": 1},
        {"kind": "sql_rows", "query": "SELECT 1", "min_rows": 1},
        {"kind": "http_status", "url": "https://example.org/health", "status": 200},
        {"kind": "http_request", "path": "/hook", "method": "POST"},
        {"kind": "container_running", "after_s": 2.5},
    ]
    assert spec["checks"][0] == {"kind": "file_exists", "path": "/tmp/out.txt"}


def test_given_values_are_kept() -> None:
    checks = validate_spec({"checks": [
        {"kind": "file_exists", "path": "/app/data.csv", "min_bytes": 0},
        {"kind": "sql_rows", "query": "select * from t", "min_rows": 3},
        {"kind": "http_status", "url": "HTTP://svc:8080/x", "status": 404},
        {"kind": "http_request", "path": "/a/b", "method": "put"},
        {"kind": "container_running", "after_s": 600},
    ]})
    assert [c.get("min_bytes", c.get("min_rows", c.get("status", c.get("method", c.get("after_s"))))) for c in checks] \
        == [0, 3, 404, "PUT", 600]


@pytest.mark.parametrize(
    "query",
    [
        "SELECT 1;",
        "  select id from t where note = 'a;b'  ;  ",
        'SELECT "odd;name" FROM t',
        "SELECT $$x;y$$",
        "SELECT $tag$ ; $tag$",
        "-- how many?\nSELECT count(*) FROM t -- ; trailing comment",
        "/* a; b */ SELECT 1",
        "WITH recent AS (SELECT * FROM t) SELECT * FROM recent",
        "(SELECT 1) UNION (SELECT 2)",
        "SELECT 'it''s; fine'",
    ],
)
def test_single_selects_pass_whatever_they_quote(query: str) -> None:
    [check] = validate_spec({"checks": [{"kind": "sql_rows", "query": query}]})
    assert ";" not in check["query"].rstrip()[-1:]


def test_a_semicolon_hidden_after_a_quote_still_counts() -> None:
    assert "found 2" in _one({"kind": "sql_rows", "query": "SELECT 'a'; UPDATE t SET x = 1"})


def test_summarize_has_one_line_per_check() -> None:
    text = summarize([CheckResult("file_exists", True, "/tmp/a exists (3 bytes)"),
                      CheckResult("http_status", False, "http://x answered 500, 200 expected")])
    assert text.splitlines() == ["PASS file_exists: /tmp/a exists (3 bytes)",
                                 "FAIL http_status: http://x answered 500, 200 expected"]


# -- claude_called ------------------------------------------------------------------------------------

def test_claude_called_gets_its_defaults_and_keeps_its_reply() -> None:
    [check] = validate_spec({"checks": [{"kind": "claude_called"}]})
    assert check == {"kind": "claude_called", "min_calls": 1, "args_include": []}
    [check] = validate_spec({"checks": [{"kind": "claude_called", "min_calls": 2, "args_include": ["-p"], "reply": "ok"}]})
    assert check == {"kind": "claude_called", "min_calls": 2, "args_include": ["-p"], "reply": "ok"}


@pytest.mark.parametrize(("check", "expected"), [
    ({"kind": "claude_called", "min_calls": 0}, '"min_calls" must be an integer ≥ 1'),
    ({"kind": "claude_called", "args_include": "-p"}, '"args_include" must be a list of arguments'),
    ({"kind": "claude_called", "args_include": [""]}, '"args_include" must be a list of arguments'),
    ({"kind": "claude_called", "reply": 3}, '"reply" must be a text'),
    ({"kind": "claude_called", "reply": "x" * 70_000}, '"reply" must be a text of at most 65536 characters'),
    ({"kind": "http_request", "path": "/_claude"}, "the path /_claude is reserved for the claude stand-in"),
])
def test_bad_claude_called_checks_are_refused(check: dict[str, Any], expected: str) -> None:
    assert expected in _one(check)


def test_one_reply_per_run() -> None:
    assert "different \"reply\" texts" in _error({"checks": [{"kind": "claude_called", "reply": "a"},
                                                            {"kind": "claude_called", "reply": "b"}]})
    assert len(validate_spec({"checks": [{"kind": "claude_called", "reply": "a"},
                                         {"kind": "claude_called", "reply": "a", "min_calls": 2}]})) == 2
