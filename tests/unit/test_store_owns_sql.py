"""The store owns every query: no module of listener/ other than listener/queue/store.py (and the
stated exceptions) runs SQL or builds it. Read from the source with ast, so a new call site fails
here before it reaches review."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import listener
from listener.queue.resources import migrations_dir, sql_dir

PACKAGE = Path(listener.__file__).parent
STORE = "queue/store.py"
# Not queries on the builder's database (see the store's docstring): Level 4 reads the automation's
# own database (SANDBOX_DATABASE_URL) in a read-only session.
EXCEPTIONS = {"sandbox/checks.py", "sandbox/sqlrole.py"}
RUNS_SQL = {"execute", "executemany", "copy"}
# A statement written in Python: a string that starts like one (as text sent to a server would).
SQL_TEXT = re.compile(r"^\s*(SELECT\s.+\sFROM\s|SELECT\s+\d|INSERT\s+INTO\s|UPDATE\s+\w+\s+SET\s|DELETE\s+FROM\s"
                      r"|WITH\s+\w+\s+AS\s*\(|LISTEN\s|NOTIFY\s|COPY\s+\S+(\s*\([^)]*\))?\s+(FROM|TO)\s"
                      r"|SHOW\s+\w+$|TRUNCATE\s)", re.S)


def modules() -> list[tuple[str, ast.Module]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        found.append((name, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))))
    return found


def docstrings(tree: ast.Module) -> set[int]:
    """ids of the docstring constants (prose, not SQL sent anywhere)."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                ids.add(id(first.value))
    return ids


def offences(name: str, tree: ast.Module) -> list[str]:
    found = []
    prose = docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in RUNS_SQL:
            receiver = node.func.value
            if node.func.attr == "copy" and (not node.args or (isinstance(receiver, ast.Name) and receiver.id == "shutil")):
                continue  # dict.copy(), shutil.copy(src, dst): not psycopg's COPY
            found.append(f"{name}:{node.lineno}: calls .{node.func.attr}()")
        elif isinstance(node, ast.ImportFrom) and node.module in ("psycopg", "psycopg.sql") and (
                node.module == "psycopg.sql" or any(alias.name == "sql" for alias in node.names)):
            found.append(f"{name}:{node.lineno}: imports psycopg.sql (composes SQL)")
        elif isinstance(node, ast.Import) and any(alias.name == "psycopg.sql" for alias in node.names):
            found.append(f"{name}:{node.lineno}: imports psycopg.sql (composes SQL)")
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose
              and SQL_TEXT.match(node.value)):
            found.append(f"{name}:{node.lineno}: SQL text in Python: {node.value.strip()[:60]!r}")
    return found


def test_only_the_store_runs_or_builds_sql() -> None:
    found = [offence for name, tree in modules() if name != STORE and name not in EXCEPTIONS
             for offence in offences(name, tree)]
    assert found == [], "SQL outside listener/queue/store.py (add a named query to sql/ and a store method):\n" + "\n".join(found)


def test_the_store_is_where_the_sql_runs() -> None:
    """The rule above is not vacuous: the scanner sees what the store does."""
    (tree,) = [tree for name, tree in modules() if name == STORE]
    kinds = {offence.split(": ", 1)[1].split(" ")[0] for offence in offences(STORE, tree)}
    assert {"calls", "imports"} <= kinds


@pytest.mark.parametrize("source", [
    "conn.execute(q)",
    "cur.executemany(q, rows)",
    "with cur.copy('COPY t FROM STDIN') as c: pass",
    "from psycopg import sql",
    "import psycopg.sql",
    "from psycopg.sql import SQL",
    "query = 'SELECT id FROM automation_ideas WHERE id = %s'",
    "query = f'UPDATE automation_ideas SET builder_status = {x}'",
    "text = 'LISTEN agent_builder_ready'",
    "text = 'SHOW server_version'",
])
def test_the_scanner_catches(source: str) -> None:
    assert offences("x.py", ast.parse(source)), source


@pytest.mark.parametrize("source", [
    "env = os.environ.copy()",
    "shutil.copy(src, dst)",
    "message = \"retry with builder_status = 'not_started'\"",
    "def f():\n    'SELECT a FROM b, in prose'\n",
    "hint = 'GRANT agent_builder_builder TO alice;'",
    "step = 'COPY script.py /app/script.py'",  # a Dockerfile's COPY
])
def test_the_scanner_passes(source: str) -> None:
    assert offences("x.py", ast.parse(source)) == [], source


def test_the_attempt_lock_key_has_one_definition() -> None:
    """agent_builder_lock_key() (migration 0006) is the only place the key's class is written: every
    query, and no Python, computes it (a second copy could drift and make live attempts look dead)."""
    key_class = "424242"
    folders = {"sql": sql_dir(), "migrations": migrations_dir(), "listener": PACKAGE}
    holders = [f"{name}/{p.relative_to(folder).as_posix()}" for name, folder in folders.items()
               for p in sorted(folder.rglob("*")) if p.suffix in (".sql", ".py") and key_class in p.read_text(encoding="utf-8")]
    assert holders == ["migrations/0006_roles.sql"]
    users = [p.name for p in sorted(sql_dir().glob("*.sql")) if "agent_builder_lock_key(" in p.read_text(encoding="utf-8")]
    assert {"finish_attempt.sql", "find_dead_attempts.sql", "unlock_attempt.sql"} <= set(users)
