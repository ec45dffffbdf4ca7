"""The README's operator sections say what the code does: every setting the builder reads is in the
configuration tables (and nothing else), and every acceptance_check example is valid, one per kind."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from listener.config import Settings
from listener.ops.commands import check_from_flag
from listener.sandbox.checks import KINDS, validate_spec
from tests.unit.test_config_names import Recording

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
NOT_OURS = {"DOCKER_HOST"}  # read by the Docker SDK, listed because a build needs it


def section(title: str) -> str:
    start = README.index(title)
    following = re.search(r"^##+ ", README[start + len(title):], re.MULTILINE)
    return README[start: start + len(title) + (following.start() if following else len(README))]


def test_the_configuration_tables_list_every_setting_and_only_those() -> None:
    text = section("## Configure it")
    listed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            listed |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", first))
    env = Recording()
    Settings.from_env(env)
    read = {name for name in env.asked if name not in ("TEST_DATABASE_URL",)}
    assert listed - NOT_OURS == read, (sorted(listed - NOT_OURS - read), sorted(read - listed))
    for group in ("**Required**", "**Common**", "**Sandbox**", "**Production**", "**Tuning**"):
        assert group in text


def test_every_acceptance_check_kind_has_a_valid_example() -> None:
    text = section("### Acceptance checks (`acceptance_check`)")
    examples = [json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", text, re.DOTALL)]
    kinds = []
    for example in examples:
        validated = validate_spec(example)
        kinds += [check["kind"] for check in validated]
    assert sorted(kinds) == sorted(KINDS)
    for kind in KINDS:
        assert f"| `{kind}` |" in text
    command = re.search(r"```bash\n(.*?)\n```", text, re.DOTALL).group(1).replace("\\\n", " ")
    words = shlex.split(command)
    flags = [words[i + 1] for i, word in enumerate(words) if word == "--check"]
    assert flags and validate_spec({"checks": [check_from_flag(flag) for flag in flags]})


def test_the_commands_table_names_the_exit_codes_of_check() -> None:
    text = section("### Commands")
    line = next(line for line in text.splitlines() if line.startswith("| `agent-builder check`"))
    assert "0 every required check passed (WARN allowed), 1 one or more required checks failed" in line
