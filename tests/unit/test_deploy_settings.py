"""Production settings and the options of a production container (no Docker needed)."""

from __future__ import annotations

import pytest

from listener.config import ConfigError, Settings
from listener.deploy.production import Names, _daemon_time, production_options

INSTALLATION = "abc123"


def test_production_defaults() -> None:
    settings = Settings.from_env({})
    assert (settings.prod_log_max_size, settings.prod_log_max_files) == ("10m", 3)
    assert settings.prod_runtime is None and settings.prod_stop_timeout_s == 10


def test_the_runtime_follows_the_sandbox_unless_set() -> None:
    assert Settings.from_env({"SANDBOX_RUNTIME": "runsc"}).prod_runtime == "runsc"
    assert Settings.from_env({"SANDBOX_RUNTIME": "runsc", "PROD_RUNTIME": "runc"}).prod_runtime == "runc"
    assert Settings.from_env({"PROD_RUNTIME": "io.containerd.runc.v2"}).prod_runtime == "io.containerd.runc.v2"


@pytest.mark.parametrize("variable, value", [
    ("PROD_LOG_MAX_SIZE", "0"), ("PROD_LOG_MAX_SIZE", "10 MB"), ("PROD_LOG_MAX_SIZE", "-1"), ("PROD_LOG_MAX_SIZE", "big"),
    ("PROD_LOG_MAX_FILES", "0"), ("PROD_LOG_MAX_FILES", "two"),
    ("PROD_RUNTIME", "run sc"), ("PROD_RUNTIME", "../runc"), ("PROD_RUNTIME", "-x"),
    ("PROD_STOP_TIMEOUT_S", "-1"), ("PROD_STOP_TIMEOUT_S", "1.5"),
])
def test_invalid_production_settings_are_named(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({variable: value})
    assert any(problem.startswith(f"{variable}=") for problem in raised.value.problems)


def test_production_options_confine_and_rotate() -> None:
    settings = Settings.from_env({"SANDBOX_MEMORY": "300m", "SANDBOX_PIDS": "99", "PROD_LOG_MAX_SIZE": "20m",
                                  "PROD_LOG_MAX_FILES": "5", "SANDBOX_RUNTIME": "runsc", "PROD_NETWORK": "none"})
    options = production_options(settings, INSTALLATION, 7, 12, "service", "agent-7-x-next")
    assert options["mem_limit"] == options["memswap_limit"] == "300m"
    assert options["log_config"].type == "json-file"
    assert options["log_config"].config == {"max-size": "20m", "max-file": "5"}
    assert options["runtime"] == "runsc" and options["pids_limit"] == 99
    assert options["cap_drop"] == ["ALL"] and options["security_opt"] == ["no-new-privileges:true"]
    assert options["user"] == "65534:65534" and options["privileged"] is False
    assert options["network_mode"] == "none" and "network" not in options
    assert options["restart_policy"] == {"Name": "unless-stopped"}
    assert options["labels"]["io.agent-builder.installation"] == INSTALLATION
    assert options["labels"]["io.agent-builder.role"] == "production"


def test_without_a_runtime_the_engine_default_is_used() -> None:
    options = production_options(Settings.from_env({}), INSTALLATION, 7, 12, "job", "agent-7-x-next")
    assert "runtime" not in options and options["restart_policy"] == {"Name": "no"}
    assert options["network"] == "bridge"


def test_names() -> None:
    names = Names("agent-7-disk-report")
    assert (names.next, names.prev) == ("agent-7-disk-report-next", "agent-7-disk-report-prev")


def test_daemon_times_keep_their_nanoseconds() -> None:
    assert _daemon_time("1970-01-01T00:00:10.123456789Z") == pytest.approx(10.123456789)
    assert _daemon_time("1970-01-01T01:00:10+01:00") == pytest.approx(10.0)
    assert _daemon_time("2024-05-01T10:11:12Z") == pytest.approx(1714558272.0)
