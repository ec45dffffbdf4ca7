"""The sandbox run without an engine: the options every container is created with, the keeper's
command and record, the settings, and what a sweep selects (over an in-memory engine)."""

from __future__ import annotations

import math
from pathlib import Path
import pytest

from listener.config import ConfigError, Settings
from listener.sandbox.engine import (EngineError, KeptContainer, Limits, Sandbox, automation_argv, network_name)
from listener.sandbox.keeper import KEEPER, NONCE_VARIABLE, STAGE1, STATUS_PATH, keeper_command, parse_status
from listener.sandbox.naming import (LABEL_AUTOMATION, LABEL_BUILD, LABEL_DEADLINE, LABEL_INSTALLATION, LABEL_ROLE,
                                     labels)
from listener.sandbox.sweep import Found, Sweeper, select_containers, select_images
from tests.unit.fake_docker import FakeEngine

OURS, THEIRS = "0000aaaa0000", "0000bbbb0000"
NOW = 1_800_000_000.0


def settings(**env: str) -> Settings:
    return Settings.from_env({"SANDBOX_NETWORK": "none", "VAULT_APPROLE_DIR": "/nonexistent-approle", **env})


def sandbox(engine: FakeEngine | None = None, **env: str) -> Sandbox:
    config = settings(**env)
    return Sandbox(client=engine or FakeEngine(), settings=config, limits=Limits.from_settings(config),
                   installation=OURS, automation_id=7, build_id=42, network="none")


# -- what every sandbox container is created with ----------------------------------------------------

def test_container_options_confine_the_run_and_carry_the_deadline() -> None:
    box = sandbox(SANDBOX_TIMEOUT_S="30", SANDBOX_HOLD_S="5", SANDBOX_TMP_SIZE="64m", SANDBOX_MEMORY="256m")
    options = box.container_options({"VAULT_ADDR": "http://vault:8200"}, argv=["python3", "script.py"], source_dir="/app",
                                    limit_s=30, nonce="n0nce", now=NOW)
    assert options["user"] == "65534:65534" and options["cap_drop"] == ["ALL"] and options["privileged"] is False
    assert options["security_opt"] == ["no-new-privileges:true"]
    assert options["mem_limit"] == options["memswap_limit"] == "256m" and options["pids_limit"] == 256
    assert options["read_only"] is True and options["auto_remove"] is True
    assert options["working_dir"] == "/work" and options["network_mode"] == "none"
    mounts = {m["Target"]: m for m in options["mounts"]}
    assert sorted(mounts) == ["/run/agent-builder", "/tmp", "/work"]
    for target in ("/tmp", "/work"):
        driver = mounts[target]["VolumeOptions"]["DriverConfig"]
        assert driver["Name"] == "local" and driver["Options"]["type"] == "tmpfs"
        assert driver["Options"]["o"] == "size=64m,mode=1777,nosuid,nodev"
        assert mounts[target]["VolumeOptions"]["Labels"][LABEL_INSTALLATION] == OURS
    assert options["labels"][LABEL_DEADLINE] == str(math.ceil(NOW + 15 + 30 + 5))
    assert {k: options["labels"][k] for k in (LABEL_INSTALLATION, LABEL_AUTOMATION, LABEL_BUILD, LABEL_ROLE)} == {
        LABEL_INSTALLATION: OURS, LABEL_AUTOMATION: "7", LABEL_BUILD: "42", LABEL_ROLE: "sandbox-run"}
    assert options["environment"] == {"HOME": "/work", "VAULT_ADDR": "http://vault:8200", NONCE_VARIABLE: "n0nce"}
    assert options["entrypoint"] == ["/bin/sh", "-c", STAGE1, "agent-builder-keeper"]
    assert options["command"] == [KEEPER, "30", "5", "/work", "/app", "python3", "script.py"]
    assert options["log_config"]["Config"] == {"max-size": str(1 << 20), "max-file": "1"}
    assert "volumes" not in options and "runtime" not in options


def test_container_options_mount_the_approle_directory_read_only_and_use_the_runtime(tmp_path: Path) -> None:
    box = sandbox(VAULT_APPROLE_DIR=str(tmp_path), SANDBOX_RUNTIME="runsc")
    box.network = "agent-builder-sandbox-" + OURS
    options = box.container_options({}, argv=["true"], source_dir="/", limit_s=10, nonce="n", now=NOW)
    assert options["volumes"] == {str(tmp_path.resolve()): {"bind": "/opt/appdata/docker/docker-compose/vault/approle", "mode": "ro"}}
    assert options["runtime"] == "runsc" and options["network"] == box.network and "network_mode" not in options


def test_the_automation_runs_what_docker_would_run() -> None:
    image = {"Entrypoint": ["tini", "--"], "Cmd": ["python3", "script.py"]}
    assert automation_argv(image, None, None) == ["tini", "--", "python3", "script.py"]
    assert automation_argv(image, ["--once"], None) == ["tini", "--", "--once"]
    assert automation_argv(image, None, ["python3", "-c", "x"]) == ["python3", "-c", "x"]  # like docker run --entrypoint
    assert automation_argv(image, ["a"], ["/app/agent.sh"]) == ["/app/agent.sh", "a"]
    with pytest.raises(EngineError, match="no command"):
        automation_argv({}, None, None)


@pytest.mark.parametrize("workdir", ["/tmp", "/work", "/work/app", "/run/agent-builder"])
def test_an_image_whose_files_the_scratch_space_would_hide_is_refused(workdir: str) -> None:
    engine = FakeEngine()
    engine.add_image(["img:1"], {}, {"WorkingDir": workdir, "Cmd": ["python3", "x.py"]})
    with pytest.raises(EngineError, match="empty tmpfs"):
        with sandbox(engine).container("img:1", None, {}):
            pass
    assert engine.containers_by_id == {}


def test_a_container_is_created_under_the_keeper_and_removed_on_exit() -> None:
    engine = FakeEngine()
    engine.add_image(["img:1"], {}, {"WorkingDir": "/app", "Cmd": ["python3", "script.py"]})
    with sandbox(engine, SANDBOX_TIMEOUT_S="20").container("img:1", None, {}, limit_s=50) as kept:
        created = engine.containers_by_id[kept.id]
        assert created.options["command"][1:7] == ["50", "60", "/work", "/app", "python3", "script.py"]
        assert kept.limit_s == 50 and kept.deadline == int(created.labels[LABEL_DEADLINE])
    assert engine.containers_by_id == {}


# -- the keeper ----------------------------------------------------------------------------------------

def test_keeper_command_rounds_the_limits_up_and_passes_the_argv_last() -> None:
    entrypoint, command = keeper_command(["sh", "-c", "echo $HOME"], limit_s=2.2, hold_s=0.5, workdir="/work", source_dir="/srv")
    assert entrypoint[:2] == ["/bin/sh", "-c"]
    assert command == [KEEPER, "3", "1", "/work", "/srv", "sh", "-c", "echo $HOME"]


def test_the_keeper_record_must_carry_the_runs_nonce() -> None:
    assert parse_status("n0nce exit=3 oom=0 timeout=0\n", "n0nce").exit_code == 3
    killed = parse_status("n0nce exit=137 oom=0 timeout=1\n", "n0nce")
    assert killed.timed_out and killed.exit_code is None
    assert parse_status("n0nce exit=137 oom=2 timeout=0\n", "n0nce").oom_kills == 2
    assert parse_status("n0nce error=the image has no bash\n", "n0nce").error == "the image has no bash"
    assert parse_status("forged exit=0 oom=0 timeout=0\n", "n0nce") is None  # written by the automation
    assert parse_status("n0nce exit=0 oom=0 time", "n0nce") is None  # not complete yet
    assert parse_status("", "n0nce") is None


def test_the_kept_container_reports_the_automations_state_not_the_keepers() -> None:
    engine = FakeEngine()
    raw = engine.add_container("sandbox", {})
    kept = KeptContainer(raw, "n0nce", 10, 0)
    kept.reload()
    assert kept.status == "running" and kept.attrs["State"]["Running"] is True
    raw.files[STATUS_PATH] = b"n0nce exit=4 oom=0 timeout=0\n"
    kept.reload()
    assert kept.status == "exited" and kept.attrs["State"]["ExitCode"] == 4 and kept.short_id == raw.short_id
    engine.containers_by_id.clear()
    gone = KeptContainer(raw, "n0nce", 10, 0)
    assert gone.read_status() is None and gone.vanished and gone.status == "exited"


def test_an_engine_that_stops_answering_during_the_run_is_an_engine_error() -> None:
    engine = FakeEngine()
    engine.add_image(["img:1"], {}, {"Cmd": ["sleep", "300"]})
    box = sandbox(engine)
    with pytest.raises(EngineError, match="stopped answering"):
        with box.container("img:1", None, {}) as kept:
            engine.answers_left = 2  # the start, one look at the keeper's record, then nothing
            box.run_for(kept, 5)
    assert len(engine.containers_by_id) == 1  # left behind: the keeper ends it, a sweep removes it


# -- settings --------------------------------------------------------------------------------------------

def test_sandbox_settings_defaults() -> None:
    config = Settings.from_env({})
    assert config.sandbox_tmp_size == "256m" and config.sandbox_hold_s == 60
    assert config.sandbox_network == "agent-builder-sandbox-{installation}"
    assert network_name(config, OURS) == f"agent-builder-sandbox-{OURS}"
    assert network_name(settings(SANDBOX_NETWORK="lab-net"), OURS) == "lab-net"


@pytest.mark.parametrize(("name", "value", "message"), [
    ("SANDBOX_TMP_SIZE", "0", "at least 1m"),
    ("SANDBOX_TMP_SIZE", "lots", "a size like 512m"),
    ("SANDBOX_HOLD_S", "0", "at least 1"),
    ("SANDBOX_NETWORK", "net-{id}", "only placeholder"),
])
def test_bad_sandbox_settings_are_named(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        Settings.from_env({name: value})
    assert name in str(raised.value)


# -- what a sweep selects ------------------------------------------------------------------------------------

def found(role: str, build_id: int | None, deadline: int | None = None, name: str = "c") -> Found:
    return Found(ref=None, id=f"id-{role}-{build_id}-{name}", name=name, role=role, automation_id="1",
                 build_id=build_id, deadline=deadline)


def test_sweep_selects_sandbox_containers_past_their_deadline_or_of_attempts_that_are_over() -> None:
    past, future = int(NOW) - 1, int(NOW) + 100
    containers = [
        found("sandbox-run", 1, past), found("sandbox-run", 2, future), found("sandbox-build", 3, future),
        found("sandbox-run", 4, future), found("production", 5, name="agent-5-x-next"),
        found("production", 6, name="agent-6-x"), found("production", 7, name="agent-7-x-next"),
        found("sandbox-run", None, None),
    ]
    chosen = select_containers(containers, NOW, over={3, 4, 5, 6})
    assert {(r.found.role, r.found.build_id) for r in chosen} == {
        ("sandbox-run", 1), ("sandbox-build", 3), ("sandbox-run", 4), ("production", 5)}
    assert "deadline" in next(r.reason for r in chosen if r.found.build_id == 1)
    # Without a database: deadlines only.
    assert [r.found.build_id for r in select_containers(containers, NOW, over=None)] == [1]


def test_sweep_selects_only_unneeded_sandbox_images_and_layers_of_builds_that_are_over() -> None:
    images = [found("sandbox-image", 1), found("sandbox-image", 2), found("production", 1),
              found("sandbox-build", 3), found("sandbox-build", 4)]
    assert [(r.found.role, r.found.build_id) for r in select_images(images, {1}, over={1, 3})] == [
        ("sandbox-image", 1), ("sandbox-build", 3)]
    assert [r.found.build_id for r in select_images(images, {1}, over=None)] == [1]  # no database answer: layers kept


class Records:
    def __init__(self, over: set[int], unneeded: set[int]) -> None:
        self._over, self._unneeded = over, unneeded
        self.asked: list[list[int]] = []

    def over(self, build_ids: list[int]) -> set[int]:
        self.asked.append(sorted(build_ids))
        return self._over & set(build_ids)

    def unneeded_images(self, build_ids: list[int]) -> set[int]:
        return self._unneeded & set(build_ids)


def run_labels(installation: str, build_id: int, role: str = "sandbox-run", deadline: float | None = None) -> dict[str, str]:
    extra = {LABEL_DEADLINE: str(int(deadline))} if deadline is not None else {}
    return {**labels(installation, 1, build_id, role), **extra}


def test_a_sweep_touches_only_its_own_installation() -> None:
    engine = FakeEngine()
    mine_late = engine.add_container("mine-late", run_labels(OURS, 1, deadline=NOW - 5))
    mine_live = engine.add_container("mine-live", run_labels(OURS, 2, deadline=NOW + 60))
    theirs_late = engine.add_container("theirs-late", run_labels(THEIRS, 1, deadline=NOW - 5))
    theirs_over = engine.add_container("theirs-over", run_labels(THEIRS, 3, deadline=NOW + 60))
    mine_failed = engine.add_image([f"agent-1-x:build-3-{OURS}"], run_labels(OURS, 3, "sandbox-image"))
    mine_passed = engine.add_image([f"agent-1-x:build-4-{OURS}"], run_labels(OURS, 4, "sandbox-image"))
    in_production = engine.add_image([f"agent-1-x:build-5-{OURS}", f"agent-1-x:production-{OURS}"],
                                     run_labels(OURS, 5, "sandbox-image"))
    theirs_image = engine.add_image([f"agent-1-x:build-3-{THEIRS}"], run_labels(THEIRS, 3, "sandbox-image"))
    mine_layer = engine.add_image([], run_labels(OURS, 3, "sandbox-build"))
    theirs_layer = engine.add_image([], run_labels(THEIRS, 3, "sandbox-build"))
    mine_volume = engine.add_volume(run_labels(OURS, 1, "sandbox-scratch"))
    theirs_volume = engine.add_volume(run_labels(THEIRS, 1, "sandbox-scratch"))

    records = Records(over={3}, unneeded={3, 5})
    report = Sweeper(OURS, engine, records, clock=lambda: NOW).sweep()

    assert set(engine.containers_by_id) == {mine_live.id, theirs_late.id, theirs_over.id}
    assert set(engine.images_by_id) == {mine_passed.id, in_production.id, theirs_image.id, theirs_layer.id}
    assert mine_layer.id not in engine.images_by_id
    assert engine.images_by_id[in_production.id].tags == [f"agent-1-x:production-{OURS}"]  # untagged, kept
    assert set(engine.volumes_by_name) == {theirs_volume.name}
    assert [r.found.name for r in report.containers] == ["mine-late"] and report.volumes == 1
    assert records.asked == [[1, 2], [3]]  # only its own containers' and layers' attempts were looked up
    assert mine_late.id not in engine.containers_by_id and mine_failed.id not in engine.images_by_id
    assert mine_volume.name not in engine.volumes_by_name


def test_an_image_a_container_still_uses_is_kept() -> None:
    engine = FakeEngine()
    image = engine.add_image([f"agent-1-x:build-3-{OURS}"], run_labels(OURS, 3, "sandbox-image"))
    engine.add_container("agent-1-x", run_labels(OURS, 9, "production")).options["image"] = image.id
    Sweeper(OURS, engine, Records(over=set(), unneeded={3}), clock=lambda: NOW).sweep()
    assert image.id in engine.images_by_id


def test_an_engine_outage_during_a_run_leaks_nothing_after_the_next_sweep() -> None:
    engine = FakeEngine()
    engine.add_image(["img:1"], {}, {"Cmd": ["sleep", "300"]})
    box = sandbox(engine)
    with pytest.raises(EngineError):
        with box.container("img:1", None, {}) as kept:
            engine.answers_left = 3  # the engine stops answering mid-run: nothing can be removed now
            box.run_to_end(kept)
    assert len(engine.containers_by_id) == 1
    with pytest.raises(Exception, match="engine is gone"):
        Sweeper(OURS, engine, Records(over={42}, unneeded=set())).sweep()
    engine.down = False  # back, before the deadline; the attempt was closed meanwhile (the rescuer)
    report = Sweeper(OURS, engine, Records(over={42}, unneeded=set())).sweep()
    assert engine.containers_by_id == {} and [r.reason for r in report.containers] == ["its attempt is over"]


def test_without_a_database_a_sweep_applies_deadlines_only_and_keeps_images() -> None:
    engine = FakeEngine()
    late = engine.add_container("late", run_labels(OURS, 1, deadline=NOW - 1))
    over = engine.add_container("over", run_labels(OURS, 2, deadline=NOW + 60))
    image = engine.add_image([f"agent-1-x:build-2-{OURS}"], run_labels(OURS, 2, "sandbox-image"))
    report = Sweeper(OURS, engine, None, clock=lambda: NOW).sweep()
    assert set(engine.containers_by_id) == {over.id} and image.id in engine.images_by_id
    assert late.id not in engine.containers_by_id and report.database is False
