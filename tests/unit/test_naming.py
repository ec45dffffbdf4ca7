import re

import pytest

from listener.sandbox.naming import build_tag, repository, slug


@pytest.mark.parametrize(("name", "expected"), [
    ("Disk usage report", "disk-usage-report"),
    ("Bäckup «nightly» — ünïcode", "backup-nightly-unicode"),
    ("it's \"quoted\"; rm -rf /", "it-s-quoted-rm-rf"),
    ("日本語だけ", "automation"),
    ("", "automation"),
    (None, "automation"),
    ("---", "automation"),
    ("UPPER_case__and..dots", "upper-case-and-dots"),
])
def test_slug(name, expected) -> None:
    assert slug(name) == expected


def test_slug_is_bounded_and_never_ends_with_a_dash() -> None:
    value = slug("a" * 39 + " b" + "c" * 100)
    assert len(value) <= 40 and not value.endswith("-")


@pytest.mark.parametrize("name", ["x" * 500, "🚀" * 50, "a b\nc\td", "../../etc/passwd", "$(whoami)"])
def test_image_references_are_valid_docker_names(name) -> None:
    tag = build_tag(12, name, 345, "0123abcdef45")
    repo, _, version = tag.partition(":")
    assert re.fullmatch(r"[a-z0-9]+(?:-[a-z0-9]+)*", repo)
    assert version == "build-345-0123abcdef45"
    assert repository(12, name).startswith("agent-12-")
