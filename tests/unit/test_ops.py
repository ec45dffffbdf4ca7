"""Pure parts of the operator commands: durations, resting statuses, idea validation, DB error lines."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from listener.ops.commands import InvalidIdea, parse_idea
from listener.ops.errors import Problem, database_problem, where
from listener.ops.history import InvalidDuration, is_resting, parse_duration


@pytest.mark.parametrize(("text", "expected"), [
    ("90s", timedelta(seconds=90)), ("15m", timedelta(minutes=15)), ("12h", timedelta(hours=12)),
    ("30d", timedelta(days=30)), ("2w", timedelta(weeks=2)), (" 1.5D ", timedelta(hours=36)),
])
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "d", "-1d", "0s", "1 year", "1e3s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(InvalidDuration):
        parse_duration(text)


@pytest.mark.parametrize(("builder_status", "status", "resting"), [
    ("failed", "ready_to_build", True), ("awaiting_approval", "ready_to_build", True), ("deployed", "x", True),
    ("rejected", "x", True), ("not_started", "idea", True), ("not_started", "ready_to_build", False),
    ("queued", "ready_to_build", False), ("building", "ready_to_build", False), ("approved", "x", False),
    ("deploying", "x", False),
])
def test_resting_statuses(builder_status: str, status: str, resting: bool) -> None:
    assert is_resting({"builder_status": builder_status, "status": status}) is resting


def idea(**overrides: object):
    args = dict(name="Disk", type_="script", spec="do it", spec_file=None, infrastructure=None, priority=None,
                checks=None, check_file=None, ready=False)
    args.update(overrides)
    return parse_idea(**args)  # type: ignore[arg-type]


def test_a_bare_list_of_checks_becomes_the_checks_object() -> None:
    parsed = idea(checks='[{"kind": "container_running", "after_s": 5}]', priority="-3", infrastructure="  ")
    assert parsed.acceptance_check == {"checks": [{"kind": "container_running", "after_s": 5}]}
    assert parsed.priority == -3 and parsed.infrastructure_requirement is None
    assert parsed.params()["status"] == "idea" and idea(ready=True).params()["status"] == "ready_to_build"


def test_a_name_too_long_is_refused() -> None:
    with pytest.raises(InvalidIdea, match="at most 200"):
        idea(name="x" * 201)


def test_database_problem_lines_name_no_password() -> None:
    url = "postgresql://u:sekrit@db.lan:5433/api"
    assert where(url) == "db.lan:5433/api" and "sekrit" not in where(url)
    unreachable = database_problem(psycopg.OperationalError("connection refused\nIs the server running?"), url)
    assert unreachable.problem is Problem.UNREACHABLE and "\n" not in unreachable.line
    assert unreachable.line.endswith("fix: start PostgreSQL there, or set DATABASE_URL to a reachable libpq URI")
    missing = database_problem(psycopg.errors.UndefinedTable('relation "automation_ideas" does not exist'), url)
    assert missing.problem is Problem.UNMIGRATED and missing.line.endswith("fix: run: agent-builder migrate")
    other = database_problem(psycopg.errors.InsufficientPrivilege("permission denied"), url)
    assert other.problem is Problem.OTHER and "permission denied" in other.line


def test_the_first_run_hint_lists_what_a_first_build_lacks_with_the_fix(tmp_path) -> None:
    from listener.ops.check import Check
    from listener.ops.embedded import EmbeddedDatabase, welcome

    database = EmbeddedDatabase(url="postgresql://listener@/postgres?host=/x", operator_url="postgresql://operator@/postgres?host=/x",
                                admin_url="postgresql://postgres:@/postgres?host=/x", pgdata=tmp_path, server=None)
    ready = [Check("ollama", True, "http://o serves m"), Check("claude", True, "claude 2 logged in"),
             Check("docker", True, "the engine has SANDBOX_BASE_IMAGE=b")]
    text = welcome(database, ready)
    assert text.endswith("a first build needs: http://o serves m; claude 2 logged in; the engine has SANDBOX_BASE_IMAGE=b"
                         " (all there)")
    lacking = welcome(database, [ready[0], Check("claude", False, "not logged in", "run: claude login"), ready[2]])
    assert "missing for a first build (1 of 3;" in lacking
    assert lacking.endswith("    claude: not logged in\n      fix: run: claude login")
    assert "ollama" not in lacking.split("missing for a first build")[1]
    assert "WHERE id = ID;" in text and "WHERE id = 1" not in text  # works every time: the id comes back


def test_where_reads_keyword_strings_and_names_no_password() -> None:
    from listener.ops.errors import where

    assert where("host=db.lan port=5433 dbname=api password=sekrit-value") == "db.lan:5433/api"
    assert where("dbname=api") == "local socket/api"
    assert where("nonsense") == "DATABASE_URL"


def test_an_unreadable_database_url_is_refused_without_echoing_it() -> None:
    import pytest

    from listener.config import ConfigError, Settings

    for name in ("DATABASE_URL", "OPERATOR_DATABASE_URL", "SANDBOX_DATABASE_URL"):
        with pytest.raises(ConfigError) as raised:
            Settings.from_env({name: "sekrit-password-not-a-dsn"})
        assert raised.value.problems[0].startswith(f"{name}: cannot be read as a libpq connection string")
        assert "sekrit" not in str(raised.value)
    assert Settings.from_env({"DATABASE_URL": "host=/run/pg dbname=api"}).database_url == "host=/run/pg dbname=api"
