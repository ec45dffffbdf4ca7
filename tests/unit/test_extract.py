from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from listener.build.extract import GeneratedFiles, extract
from listener.queue.outcome import StepFailure

CORPUS = Path(__file__).resolve().parent.parent / "fixtures" / "model_outputs"
CASES = sorted(CORPUS.glob("*.txt"))
FENCE = "`" * 3


def expected_for(case: Path) -> dict[str, Any]:
    return json.loads(case.with_name(case.stem + ".expected.json").read_text(encoding="utf-8"))


def test_corpus_is_large_enough_and_complete() -> None:
    assert len(CASES) >= 20
    for case in CASES:
        assert case.with_name(case.stem + ".expected.json").is_file(), case.name


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_corpus(case: Path) -> None:
    expected = expected_for(case)
    # read bytes: the CRLF case must reach extract() unchanged
    output = case.read_bytes().decode("utf-8")
    if expected["error"]:
        with pytest.raises(StepFailure) as caught:
            extract(output, expected["type"])
        assert (caught.value.level, caught.value.step, caught.value.kind) == (1, "extract", "level")
        return
    files = extract(output, expected["type"])
    assert files.main_name == ("agent.sh" if expected["type"] == "claude_agent" else "script.py")
    for needle in expected["main_contains"]:
        assert needle in files.main, needle
    for needle in expected.get("main_excludes", []):
        assert needle not in files.main, needle
    assert (files.dockerfile is not None) == expected["has_dockerfile"], files.dockerfile
    for needle in expected.get("dockerfile_contains", []):
        assert files.dockerfile is not None and needle in files.dockerfile, needle
    for needle in expected.get("dockerfile_excludes", []):
        assert files.dockerfile is not None and needle not in files.dockerfile, needle
    if "starts_with" in expected:
        assert files.main.startswith(expected["starts_with"])
    assert "\r" not in files.main
    assert files.main.endswith("\n") and not files.main.startswith("\n")


def test_generated_files_as_dict() -> None:
    assert GeneratedFiles("script.py", "x = 1\n", None).as_dict() == {"script.py": "x = 1\n"}
    assert GeneratedFiles("script.py", "x = 1\n", "FROM a\n").as_dict() == {
        "script.py": "x = 1\n",
        "Dockerfile": "FROM a\n",
    }


def test_agent_keeps_an_existing_shebang() -> None:
    files = extract(f"{FENCE}bash\n#!/bin/bash\necho hi\n{FENCE}\n", "claude_agent")
    assert files.main == "#!/bin/bash\necho hi\n"


def test_agent_gets_a_shebang_when_missing() -> None:
    files = extract("=== FILE: agent.sh ===\necho hi\nclaude -p \"hello\"\n", "claude_agent")
    assert files.main == '#!/usr/bin/env bash\necho hi\nclaude -p "hello"\n'


def test_agent_ignores_a_dockerfile() -> None:
    files = extract("=== FILE: agent.sh ===\necho hi\n=== FILE: Dockerfile ===\nFROM alpine\nCMD [\"sh\"]\n", "claude_agent")
    assert files.dockerfile is None
    assert "FROM" not in files.main


def test_largest_python_block_wins() -> None:
    output = f"{FENCE}python\nimport os\n{FENCE}\n\n{FENCE}python\nimport sys\n\nprint(sys.argv)\nprint('more')\n{FENCE}\n"
    assert extract(output, "script").main == "import sys\n\nprint(sys.argv)\nprint('more')\n"


def test_script_marker_preferred_over_other_python_files() -> None:
    output = "=== FILE: helpers.py ===\nX = 1\n=== FILE: script.py ===\nprint('main')\n"
    assert extract(output, "script").main == "print('main')\n"


def test_indented_fenced_block_is_dedented() -> None:
    output = f"1. The script:\n   {FENCE}python\n   import sys\n   print(sys.argv)\n   {FENCE}\n"
    assert extract(output, "script").main == "import sys\nprint(sys.argv)\n"


def test_failure_keeps_an_excerpt_of_the_answer_in_the_log() -> None:
    answer = "I cannot write this automation without more details about the target system.\n" * 100
    with pytest.raises(StepFailure) as caught:
        extract(answer, "script")
    assert "no Python script" in caught.value.message
    assert "I cannot write this" in caught.value.log
    assert "more characters" in caught.value.log


def test_a_requirements_section_is_kept_for_scripts() -> None:
    output = ("=== FILE: script.py ===\nimport requests\nprint(requests.__version__)\n"
              "=== FILE: requirements.txt ===\nrequests==2.32.3\nhvac\n")
    files = extract(output, "script")
    assert files.requirements == "requests==2.32.3\nhvac\n"
    assert "requests==" not in files.main
    assert files.as_dict() == {"script.py": files.main, "requirements.txt": "requests==2.32.3\nhvac\n"}


def test_a_requirements_section_in_a_fence_and_for_an_agent() -> None:
    fenced = f"=== FILE: script.py ===\nprint(1)\n=== FILE: requirements.txt ===\n{FENCE}text\npyyaml\n{FENCE}\n"
    assert extract(fenced, "script").requirements == "pyyaml\n"
    agent = "=== FILE: agent.sh ===\necho hi\n=== FILE: requirements.txt ===\nrequests\n"
    assert extract(agent, "claude_agent").requirements is None
