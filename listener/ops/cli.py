"""The commands of interface.md. Thin: parse, call, print.

The Redactor is made here, once, from the Settings: it patches every log line and is handed to
the listener; what the commands print from the database or the dependencies goes through it."""

from __future__ import annotations

import argparse
import sys

import psycopg
from typing import Any, Sequence

from loguru import logger

from listener.config import ConfigError, Settings
from listener.queue.db import Queries
from listener.logs import setup_logging
from listener.ops.commands_cli import add_ops_commands, run_ops_command
from listener.ops.errors import EXIT_DATABASE, database_problem
from listener.redact import Redactor
from listener.version import builder_version

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_CLAIMABLE = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-builder",
        description="Turns rows of automation_ideas into tested, human-approved automations.",
    )
    parser.add_argument("--version", action="version", version=f"agent-builder {builder_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    migrate = commands.add_parser("migrate", help="apply pending database migrations")
    migrate.add_argument("--rollback", action="store_true", help="undo the last applied migration")

    commands.add_parser("listen", help="run the listener: LISTEN, claim, build, deploy approved rows")

    once = commands.add_parser("build-once", help="claim at most one automation, build it, exit")
    once.add_argument("--id", type=int, dest="automation_id", help="build this automation (only if it is ready)")

    status = commands.add_parser("status", help="counts by builder_status, builds in flight, recent failures")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    show = commands.add_parser("show", help="one automation: timeline, attempts, test results, verdict, artifact")
    show.add_argument("automation_id", type=int, metavar="ID")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.add_argument("--files", action="store_true", help="print the generated files of the latest attempt")

    commands.add_parser("check", help="check every dependency (database, Ollama, claude, Vault, ntfy, Docker)")
    commands.add_parser("config", help="print the effective configuration, secrets redacted")

    for name, help_text in OPERATOR_COMMANDS.items():
        command = commands.add_parser(name, help=help_text)
        if name == "retry":
            command.add_argument("automation_ids", type=int, nargs="*", metavar="ID")
            command.add_argument("--all-failed", action="store_true", help="retry every automation that failed")
        else:
            command.add_argument("automation_id", type=int, metavar="ID")
    add_ops_commands(commands)
    return parser


# The operator's changes, exactly the UPDATE a person would type in SQL, made through an operator
# session (OPERATOR_DATABASE_URL, the embedded default's operator login, or DATABASE_URL when its
# login is an operator).
OPERATOR_COMMANDS = {
    "approve": "approve a tested build (awaiting_approval -> approved)",
    "reject": "reject a tested build (awaiting_approval -> rejected)",
    "retry": "build again (failed or rejected -> not_started)",
}
# Their UPDATE and its answers: listener/ops/commands.py operator_change (the review page's buttons use it too).


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"agent-builder: {exc}", file=sys.stderr)
        return EXIT_ERROR
    redactor = Redactor.from_settings(settings)
    setup_logging(settings.log_format, settings.log_level, redactor)
    if args.command == "config":
        print(redactor.redact(render_config(settings)))
        return EXIT_OK
    embedded = None
    if settings.database_url is None:
        from dataclasses import replace

        from listener.ops.embedded import start_embedded, welcome

        try:
            embedded = start_embedded(settings.home)
        except Exception as exc:  # noqa: BLE001 - any failure to start is reported, with the way out
            print(f"agent-builder: DATABASE_URL is not set and the embedded PostgreSQL did not start ({exc}); "
                  "set DATABASE_URL to a libpq URI, e.g. postgresql://user@host/db", file=sys.stderr)
            return EXIT_ERROR
        # migrations run as the embedded server's superuser; everything else as the listener's own
        # builder login, and the operator's moves as its operator login.
        settings = replace(settings, database_url=embedded.admin_url if args.command == "migrate" else embedded.url,
                           operator_database_url=settings.operator_database_url or embedded.operator_url)
        if args.command == "listen":
            from listener.ops.check import first_build_needs

            print(redactor.redact(welcome(embedded, first_build_needs(settings))), flush=True)
    try:
        return _dispatch(args, settings, redactor, embedded=embedded is not None)
    except psycopg.Error as exc:
        assert settings.database_url is not None
        print(redactor.one_line(database_problem(exc, settings.database_url).line, limit=2000), file=sys.stderr)
        return EXIT_DATABASE
    finally:
        if embedded is not None:
            embedded.stop()


def render_config(settings: Settings) -> str:
    """NAME=value per setting, by the names users set; with no DATABASE_URL, the embedded
    database's URIs (the listener's and the operator's), marked as such."""
    values = settings.redacted()
    notes: dict[str, str] = {}
    if settings.database_url is None:
        from listener.ops.embedded import embedded_address

        address = embedded_address(settings.home)
        state = "running" if address.running else "not running: listen starts it"
        values["DATABASE_URL"] = address.url
        notes["DATABASE_URL"] = f"DATABASE_URL is not set: the embedded PostgreSQL under AGENT_BUILDER_HOME ({state})"
        if settings.operator_database_url is None:
            values["OPERATOR_DATABASE_URL"] = address.operator_url
            notes["OPERATOR_DATABASE_URL"] = "the embedded database's operator login (psql, approve, reject, retry)"
    return "\n".join(f"{name}={value}" + (f"  # {notes[name]}" if name in notes else "")
                     for name, value in values.items())


def _dispatch(args: argparse.Namespace, settings: Settings, redactor: Redactor, *, embedded: bool = False) -> int:
    assert settings.database_url is not None
    if args.command == "check":
        from listener.ops.check import exit_code, render, run_checks

        results = run_checks(settings)
        print(redactor.redact(render(results)))
        return exit_code(results)
    if args.command == "migrate":
        return _migrate(settings.database_url, rollback=args.rollback, embedded=embedded)
    if args.command == "listen":
        from listener.ops.check import bind_problem, listen_addresses
        from listener.service import run_listener

        # An address that cannot be bound is refused before any worker claims anything.
        for variable, address in listen_addresses(settings):
            problem = bind_problem(variable, address)
            if problem is not None:
                print(f"agent-builder: {problem}; fix: set {variable} to a free host:port (or stop what listens there)",
                      file=sys.stderr)
                return EXIT_ERROR
        return run_listener(settings, redactor)
    if args.command == "build-once":
        from listener.service import run_build_once

        return run_build_once(settings, args.automation_id, redactor)
    if args.command in ("status", "show"):
        return _inspect(settings.database_url, args, redactor)
    if args.command == "retry":
        return _retry(settings, args)
    if args.command in OPERATOR_COMMANDS:
        return _operator_changes(settings, args.command, [args.automation_id])
    ops = run_ops_command(args, settings, redactor)
    return EXIT_USAGE if ops is None else ops


def _retry(settings: Settings, args: argparse.Namespace) -> int:
    from listener.queue.db import connect
    from listener.ops.commands import failed_ids

    ids = list(dict.fromkeys(args.automation_ids))
    if args.all_failed:
        assert settings.database_url is not None
        with connect(settings.database_url, actor="cli", application="agent-builder cli") as conn:
            ids += [i for i in failed_ids(conn, Queries.load()) if i not in ids]
        if not ids:
            print("no failed automations to retry")
            return EXIT_OK
    if not ids:
        print("agent-builder retry: give one or more IDs, or --all-failed", file=sys.stderr)
        return EXIT_USAGE
    return _operator_changes(settings, "retry", ids)


def _inspect(database_url: str, args: argparse.Namespace, redactor: Redactor) -> int:
    from listener.ops import inspect
    from listener.queue.db import connect

    queries = Queries.load()
    with connect(database_url, actor="cli", application="agent-builder cli") as conn:
        if args.command == "status":
            report = inspect.status_report(conn, queries, redactor)
            print(inspect.to_json(report) if args.json else inspect.render_status(report))
            return EXIT_OK
        shown = inspect.show_report(conn, queries, args.automation_id, redactor)
    if shown is None:
        print(f"agent-builder: there is no automation with id {args.automation_id}", file=sys.stderr)
        return EXIT_NOT_CLAIMABLE
    if args.files and not args.json:
        from listener.ops.commands import render_files

        print(render_files(shown))
        return EXIT_OK
    print(inspect.to_json(shown) if args.json else inspect.render_show(shown))
    return EXIT_OK


def _operator_changes(settings: Settings, command: str, automation_ids: list[int]) -> int:
    """One operator session for every id; the worst exit code of them."""
    from listener.ops.commands_cli import operator_session

    queries = Queries.load()
    conn = operator_session(settings, queries)
    if conn is None:
        return EXIT_ERROR
    with conn:
        return max(_operator_change(conn, queries, command, automation_id) for automation_id in automation_ids)


def _operator_change(conn: psycopg.Connection[dict[str, Any]], queries: Queries, command: str,
                     automation_id: int) -> int:
    from listener.ops.commands import operator_change

    change = operator_change(conn, queries, command, automation_id)
    if change.done:
        print(change.message)
        return EXIT_OK
    print(change.message, file=sys.stderr)
    return EXIT_ERROR if change.forbidden else EXIT_NOT_CLAIMABLE


def _migrate(database_url: str, *, rollback: bool, embedded: bool = False) -> int:
    from listener.ops.migrate import migrate, role_setup

    try:
        report = migrate(database_url, rollback=rollback)
    except psycopg.OperationalError as exc:
        print(database_problem(exc, database_url).line, file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - any failure is reported and exits 1
        logger.error("migration failed: {}", exc)
        return EXIT_ERROR
    if rollback:
        print(f"rolled back: {', '.join(report.rolled_back) or 'nothing'}")
    else:
        print(f"applied: {', '.join(report.applied) or 'nothing (up to date)'}")
    print(f"schema now at: {report.current[-1] if report.current else 'empty'}")
    if not rollback:
        print(role_setup(database_url, embedded=embedded))
    return EXIT_OK
