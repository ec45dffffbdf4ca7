"""Argument parsing and output of the operator's newer commands (add, list, listeners, healthcheck,
logs, prune); cli.py only wires them in. Database errors propagate to cli.main, which prints
them as one line with the fix."""

from __future__ import annotations

import argparse
import getpass
import socket
import sys
from datetime import datetime, timezone
from typing import Any

from listener.config import Settings
from listener.queue.db import Queries, connect
from listener.redact import Redactor

EXIT_OK, EXIT_ERROR, EXIT_NOT_FOUND = 0, 1, 3


def add_ops_commands(commands: Any) -> None:
    add = commands.add_parser("add", help="add an idea (prints its id); --ready marks it ready to build")
    add.add_argument("name", help="the idea's name")
    add.add_argument("spec", nargs="?", help="what the automation must do (task_description); or --spec-file")
    add.add_argument("--spec-file", metavar="FILE", help="read the spec from FILE")
    add.add_argument("--type", dest="type_", metavar="TYPE", default="script", help="script (default) or claude_agent")
    add.add_argument("--infrastructure", metavar="TEXT", help="infrastructure_requirement, e.g. 'docker, vault'")
    add.add_argument("--priority", metavar="N", help="a whole number (1 is built before 2; none comes last)")
    add.add_argument("--checks", metavar="JSON", help='acceptance checks: {"checks": [...]} or a list of checks')
    add.add_argument("--check-file", metavar="FILE", help="read the acceptance checks (JSON) from FILE")
    add.add_argument("--check", dest="check_flags", action="append", default=[], metavar="'KIND key=value …'",
                     help="one acceptance check, repeatable: e.g. --check 'file_exists path=/tmp/disk.json min_bytes=2'")
    add.add_argument("--ready", action="store_true", help="mark it ready_to_build at once")
    add.add_argument("--json", action="store_true", help="print the new row as JSON")

    listing = commands.add_parser("list", help="ideas, optionally only those of one status")
    listing.add_argument("--status", metavar="S", help="a builder_status (failed, awaiting_approval, …) or a status")
    listing.add_argument("--json", action="store_true", help="machine-readable output")

    listeners = commands.add_parser("listeners", help="the live listeners: host, pid, version, concurrency, in flight")
    listeners.add_argument("--json", action="store_true", help="machine-readable output")
    commands.add_parser("healthcheck", help="exit 0 only while a listener of this host is live")

    logs = commands.add_parser("logs", help="one automation's steps, results and verdicts; --follow as they happen")
    logs.add_argument("automation_id", type=int, metavar="ID")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until the row rests")

    prune = commands.add_parser("prune", help="remove finished attempts and their results older than D (history stays)")
    prune.add_argument("--older-than", required=True, metavar="D", help="a duration: 90s, 15m, 12h, 30d, 2w")


def run_ops_command(args: argparse.Namespace, settings: Settings, redactor: Redactor) -> int | None:
    assert settings.database_url is not None
    if args.command == "add":
        return _add(args, settings, redactor)
    handlers = {"list": _list, "listeners": _listeners, "healthcheck": _healthcheck, "logs": _logs, "prune": _prune}
    handler = handlers.get(args.command)
    return None if handler is None else handler(args, settings.database_url, redactor)


def operator_session(settings: Settings, queries: Queries) -> Any:
    """The operator connection a command decides through (add, approve, reject, retry), or None
    after saying on stderr what to set (the listener's own login never decides)."""
    from listener.queue.db import OperatorSessionError, operator_connect

    assert settings.database_url is not None
    try:
        return operator_connect(settings.operator_database_url, settings.database_url, queries,
                                actor=f"cli:{getpass.getuser()}", application="agent-builder cli")
    except OperatorSessionError as exc:
        print(exc, file=sys.stderr)
        return None


def _add(args: argparse.Namespace, settings: Settings, redactor: Redactor) -> int:
    """Written through the operator session, as approve/reject/retry: the listener's own login is a
    builder, which may not add ideas."""
    from listener.ops import inspect
    from listener.ops.commands import InvalidIdea, add_idea, parse_idea

    try:
        idea = parse_idea(name=args.name, type_=args.type_, spec=args.spec, spec_file=args.spec_file,
                          infrastructure=args.infrastructure, priority=args.priority, checks=args.checks,
                          check_file=args.check_file, ready=args.ready, check_flags=args.check_flags)
    except InvalidIdea as exc:
        print(redactor.one_line(f"agent-builder add: {exc}", limit=2000), file=sys.stderr)
        return EXIT_ERROR
    queries = Queries.load()
    conn = operator_session(settings, queries)
    if conn is None:
        return EXIT_ERROR
    with conn:
        row = add_idea(conn, queries, idea)
    print(inspect.to_json(row) if args.json else row["id"])
    return EXIT_OK


def _list(args: argparse.Namespace, database_url: str, redactor: Redactor) -> int:
    from listener.ops import inspect
    from listener.ops.commands import list_ideas, render_list

    with connect(database_url, actor="cli", application="agent-builder cli") as conn:
        rows = list_ideas(conn, Queries.load(), args.status, redactor)
    print(inspect.to_json({"automations": rows}) if args.json else render_list(rows))
    return EXIT_OK


def _since(value: datetime) -> str:
    seconds = (datetime.now(timezone.utc) - value).total_seconds()
    return f"{value.strftime('%Y-%m-%d %H:%M:%S')} ({seconds:.0f} s ago)"


def _listeners(args: argparse.Namespace, database_url: str, redactor: Redactor) -> int:
    from dataclasses import asdict

    from listener.ops import inspect
    from listener.queue.registry import live_listeners

    with connect(database_url, actor="cli", application="agent-builder cli") as conn:
        live = live_listeners(conn, Queries.load())
    if args.json:
        print(inspect.to_json(redactor.redact_tree({"listeners": [asdict(item) for item in live]})))
        return EXIT_OK
    if not live:
        print("no live listener")
        return EXIT_OK
    print(f"{'host':<24} {'pid':>8}  {'version':<10} {'concurrency':>11} {'in flight':>9}  {'role':<8} since")
    for item in live:
        role = "leader" if item.leads else "follower"
        print(redactor.redact(f"{item.host:<24} {item.pid:>8}  {item.version:<10} {item.concurrency:>11} "
                              f"{item.in_flight:>9}  {role:<8} {_since(item.started_at)}"))
    return EXIT_OK


def _healthcheck(args: argparse.Namespace, database_url: str, redactor: Redactor) -> int:
    from listener.queue.registry import live_listeners

    host = socket.gethostname()
    with connect(database_url, actor="cli", application="agent-builder healthcheck") as conn:
        live = live_listeners(conn, Queries.load(), host=host)
    if not live:
        print(redactor.redact(f"unhealthy: no live listener on host {host}"), file=sys.stderr)
        return EXIT_ERROR
    print(redactor.redact(f"healthy: {len(live)} live listener(s) on host {host}: "
                          + ", ".join(f"pid {item.pid} ({item.in_flight} in flight)" for item in live)))
    return EXIT_OK


def _logs(args: argparse.Namespace, database_url: str, redactor: Redactor) -> int:
    import signal
    import threading

    from listener.ops.history import follow

    stop = threading.Event()

    def handle(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
    with connect(database_url, actor="cli", application="agent-builder logs") as conn:
        found = follow(conn, Queries.load(), args.automation_id, redactor, keep_following=args.follow, stop=stop,
                       out=sys.stdout)
    if not found:
        print(f"agent-builder: there is no automation with id {args.automation_id}", file=sys.stderr)
        return EXIT_NOT_FOUND
    return EXIT_OK


def _prune(args: argparse.Namespace, database_url: str, redactor: Redactor) -> int:
    from listener.ops.history import InvalidDuration, parse_duration, prune

    try:
        older_than = parse_duration(args.older_than)
    except InvalidDuration as exc:
        print(f"agent-builder prune: --older-than {exc}", file=sys.stderr)
        return EXIT_ERROR
    with connect(database_url, actor=f"cli:{getpass.getuser()}", application="agent-builder cli") as conn:
        removed = prune(conn, Queries.load(), older_than)
    print(f"pruned {removed['attempts']} finished attempt(s) and {removed['results']} test result(s) "
          f"older than {args.older_than}; the status history is kept")
    return EXIT_OK
