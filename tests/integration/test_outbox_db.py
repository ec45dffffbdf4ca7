"""The outbox against a real database and a fake ntfy: an ending goes out once the durable point
saw it; one the point does not find ended (what a server crash leaves) is never announced."""

from __future__ import annotations

from typing import Any

import psycopg

from listener import notices as notify
from listener.clients.ntfy import Notifier
from listener.queue.db import Queries, connect
from listener.queue.outbox import Outbox
from tests.helpers import claim_builds, insert_idea


def test_an_ending_seen_by_the_point_goes_out_and_an_unfinished_one_never_does(
        db_url: str, operator: psycopg.Connection[Any], queries: Queries, fake_ntfy, builder_login) -> None:
    ended, running = insert_idea(operator, name="Ended", priority=1), insert_idea(operator, name="Running", priority=2)
    with connect(db_url, actor="builder:test") as conn:
        builds = claim_builds(conn, queries, ended, running)
        conn.execute(queries["transition"], {"automation_id": ended, "build_id": builds[ended], "expected": "queued",
                                             "new_status": "building", "step": "generate"})
        conn.execute(queries["finish_attempt"], {
            "automation_id": ended, "build_id": builds[ended], "expected": "building", "new_status": "awaiting_approval",
            "outcome": "succeeded", "error": None, "retry_after_s": None, "idea_status": None, "asynchronous": True})
        # the point runs as the listener's own login (a builder member, not a superuser)
        box = Outbox.over_database(Notifier(fake_ntfy.url, "agent-builder"), builder_login.url, queries, "w1")
        box.start()
        box.send(notify.Notification(title="READY Running", message="m", after_attempt=builds[running]))
        box.send(notify.Notification(title="READY Ended", message="m", after_attempt=builds[ended]))
        box.send(notify.Notification(title="Building Running", message="m"))
        box.stop()
        assert box.join(10)
    assert [m["title"] for m in fake_ntfy.published] == ["READY Ended", "Building Running"]
    assert (box.sent, box.dropped, box.points) == (2, 1, 1)
