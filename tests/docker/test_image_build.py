"""Image builds are as confined as runs: each attack on the build is contained and ends the attempt
clearly, and a third-party dependency still works with no network in the build.

The listener's own attempt code (claim, AttemptContext, Level 2–4, finish) on a real PostgreSQL and
a real Docker engine; acceptance checks are given, so no model is involved.
"""

from __future__ import annotations

import http.server
import io
import ipaddress
import json
import socket
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from psycopg.types.json import Jsonb

from listener.queue.store import Store
from listener.config import Settings
from listener.queue.context import AttemptContext
from listener.build.extract import GeneratedFiles
from listener.queue.finish import Ending, run_attempt
from listener.clients.ntfy import Notifier
from listener.sandbox.levels import run_sandbox_levels
from listener.sandbox.naming import LABEL_BUILD, LABEL_INSTALLATION, LABEL_ROLE, installation_filter, labels
from listener.sandbox.recorder import gateway_address
from tests.helpers import builder_status, insert_idea, installation, remove_installation_objects

WHEELS = Path(__file__).resolve().parents[1] / "fixtures" / "wheels"
MARGIN_S = 25
WRITES = "open('/tmp/done.txt', 'w').write('done')\nprint('done')\n"
DONE = {"checks": [{"kind": "file_exists", "path": "/tmp/done.txt", "min_bytes": 1}]}
USES_THE_WHEEL = ("import agentbuilder_fixture_dep\n"
                  "greeting = agentbuilder_fixture_dep.greet('sandbox')\n"
                  "open('/tmp/greeting.txt', 'w').write(greeting)\nprint(greeting)\n")
GREETING = {"checks": [{"kind": "file_exists", "path": "/tmp/greeting.txt", "min_bytes": 10}]}


@dataclass
class Attempt:
    ending: Ending
    rows: list[dict[str, Any]]
    installation: str
    build_id: int
    seconds: float
    created: list[str]  # the role label of every container the engine created for this build


    def levels(self) -> list[tuple[int, str]]:
        return [(row["test_level"], row["status"]) for row in self.rows]

    def log(self, level: int) -> str:
        return next(row["execution_log"] for row in self.rows if row["test_level"] == level)


@dataclass
class Attempts:
    run: Callable[..., Attempt]
    installation: str  # of the test's database: on everything its builds make

    def __call__(self, files: GeneratedFiles, check: dict[str, Any] | None = None, **env: str) -> Attempt:
        return self.run(files, check or DONE, **env)


@pytest.fixture
def attempt(db_url, builder_conn, queries, base_image, docker_client, tmp_path) -> Iterator[Attempts]:
    """Build and test `files` through the listener's own attempt code; returns what it recorded."""
    approle = tmp_path / "approle"
    approle.mkdir()
    own = installation(db_url)

    def run(files: GeneratedFiles, check: dict[str, Any], **env: str) -> Attempt:
        settings = Settings.from_env({
            "DATABASE_URL": db_url, "SANDBOX_BASE_IMAGE": base_image, "SANDBOX_AGENT_IMAGE": base_image,
            "SANDBOX_NETWORK": "none", "SANDBOX_TIMEOUT_S": "30", "VAULT_APPROLE_DIR": str(approle),
            "AGENT_BUILDER_HOME": str(tmp_path), **env,
        })
        automation_id = insert_idea(builder_conn)
        builder_conn.execute("UPDATE automation_ideas SET acceptance_check = %s WHERE id = %s", (Jsonb(check), automation_id))
        store = Store(builder_conn, queries, "image-build-test")
        claim = store.claim_build(automation_id)
        ctx = AttemptContext(claim=claim, store=store, settings=settings, notifier=Notifier(None, "t"), stop=threading.Event())

        def handler(context: AttemptContext) -> None:
            context.start_generation()
            run_sandbox_levels(context, files)

        clock = time.monotonic()
        with CreateEvents(docker_client, own, base_image) as events:
            ending = run_attempt(ctx, handler)
            seconds = time.monotonic() - clock
        rows = builder_conn.execute("SELECT test_level, status, execution_log FROM agent_test_results"
                                    " WHERE automation_id = %s ORDER BY id", (automation_id,)).fetchall()
        assert builder_status(builder_conn, automation_id) == ("awaiting_approval" if ending is Ending.SUCCEEDED else "failed")
        created = [event["Actor"]["Attributes"].get(LABEL_ROLE, "") for event in events.seen
                   if event["Actor"]["Attributes"].get(LABEL_BUILD) == str(claim.build_id)]
        return Attempt(ending, rows, own, claim.build_id, seconds, created)

    yield Attempts(run, own)
    remove_installation_objects(docker_client, own)


class CreateEvents:
    """The engine's live `create` events for an installation's containers, from the moment the
    block begins to a sentinel container created when it ends (the stream is ordered, so every
    earlier event has arrived once the sentinel's has)."""

    def __init__(self, docker_client: Any, installation_id: str, image: str) -> None:
        self.client, self.installation, self.image = docker_client, installation_id, image
        self.seen: list[dict[str, Any]] = []
        self.sentinel_id: str | None = None
        self.sentinel_seen = threading.Event()

    def __enter__(self) -> "CreateEvents":
        self.stream = self.client.events(decode=True, filters={
            "type": "container", "event": "create", "label": [f"{LABEL_INSTALLATION}={self.installation}"]})
        self.thread = threading.Thread(target=self._collect, daemon=True)
        self.thread.start()
        return self

    def _collect(self) -> None:
        for event in self.stream:
            if event.get("id") == self.sentinel_id or event["Actor"]["Attributes"].get(LABEL_ROLE) == "test-sentinel":
                self.sentinel_seen.set()
                return
            self.seen.append(event)

    def __exit__(self, *exc: object) -> None:
        sentinel = self.client.containers.create(self.image, ["true"], network_mode="none",
                                                 labels=labels(self.installation, 0, 0, "test-sentinel"))
        self.sentinel_id = sentinel.id
        try:
            assert self.sentinel_seen.wait(30), "the engine's event stream stopped"
        finally:
            sentinel.remove(force=True)
            self.stream.close()
            self.thread.join(10)


def script(code: str, dockerfile: str | None = None, requirements: str | None = None) -> GeneratedFiles:
    return GeneratedFiles("script.py", code, dockerfile, requirements)


def leftovers(docker_client, attempt: Attempt) -> list[str]:
    """Every container and image (intermediate ones included) of that build, by its labels."""
    selected = installation_filter(attempt.installation, build=attempt.build_id)
    containers = docker_client.containers.list(all=True, filters=selected)
    images = docker_client.images.list(all=True, filters=selected)
    return [f"container {c.short_id} ({c.labels.get(LABEL_ROLE)})" for c in containers] + \
           [f"image {i.short_id} ({i.labels.get(LABEL_ROLE)})" for i in images]


# -- the daemon never fetches, nothing outside the allow-list is built --------------------------------------

class _Recording(http.server.BaseHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.requests.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"loopback secret\n")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def loopback_server() -> Iterator[tuple[int, list[str]]]:
    seen: list[str] = []
    handler = type("Handler", (_Recording,), {"requests": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], seen
    server.shutdown()
    server.server_close()


def test_add_of_a_loopback_url_is_refused_and_never_fetched(attempt, base_image, docker_client, loopback_server) -> None:
    port, seen = loopback_server
    dockerfile = (f"FROM {base_image}\nADD http://127.0.0.1:{port}/metrics /app/metrics\n"
                  "COPY script.py /app/script.py\nCMD [\"python3\", \"/app/script.py\"]\n")
    result = attempt(script(WRITES, dockerfile))
    assert result.levels() == [(2, "fail")]
    log = result.log(2)
    assert "Dockerfile line 2: ADD of a URL is refused" in log and f"http://127.0.0.1:{port}/metrics" in log
    assert seen == [], "the builder or the daemon fetched the URL"
    assert result.created == [], "refused before anything ran"
    assert leftovers(docker_client, result) == []


@pytest.mark.parametrize(("dockerfile", "expected"), [
    ("FROM busybox:latest\nCOPY script.py /app/\nCMD [\"python3\", \"/app/script.py\"]\n",
     "Dockerfile line 1: FROM names an image that is not an allowed base image"),
    ("FROM {base} AS build\nRUN echo built > /x\nFROM {base}\nCOPY script.py /app/\nCMD [\"python3\", \"/app/script.py\"]\n",
     "Dockerfile line 3: FROM again: multi-stage builds are refused"),
    ("FROM {base}\nCOPY --from=agent-builder-test-base:latest /etc/shadow /app/shadow\nCMD [\"python3\", \"/app/script.py\"]\n",
     "Dockerfile line 2: COPY --from is refused"),
], ids=["other-base", "multi-stage", "copy-from"])
def test_other_bases_multi_stage_and_copy_from_are_refused_before_anything_runs(
        attempt, base_image, docker_client, dockerfile: str, expected: str) -> None:
    result = attempt(script(WRITES, dockerfile.replace("{base}", base_image)))
    assert result.levels() == [(2, "fail")]
    assert expected in result.log(2)
    assert result.created == []


# -- RUN steps: no network, limits, deadline -------------------------------------------------------------

def _host_addresses(docker_client) -> list[str]:
    """The host as a container could reach it: the default bridge's gateway and the primary address."""
    addresses = []
    bridge = docker_client.networks.list(names=["bridge"])
    if bridge:
        gateway = gateway_address(docker_client, "bridge")
        subnet = next(iter((bridge[0].attrs.get("IPAM") or {}).get("Config") or []), {}).get("Subnet")
        if gateway is None and subnet:
            gateway = str(next(ipaddress.ip_network(subnet).hosts()))
        if gateway:
            addresses.append(gateway)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.123", 9))  # no packet is sent: this only picks the outgoing address
            primary = probe.getsockname()[0]
        except OSError:
            primary = None
    if primary and not primary.startswith("127.") and primary not in addresses:
        addresses.append(primary)
    return addresses


@pytest.fixture
def host_service() -> Iterator[tuple[int, list[Any]]]:
    """A TCP service on the host's 0.0.0.0 that records every connection it accepts."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", 0))
    server.listen(16)
    accepted: list[Any] = []

    def serve() -> None:
        while True:
            try:
                connection, peer = server.accept()
            except OSError:
                return
            accepted.append(peer)
            connection.close()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1], accepted
    server.close()


def _connect_code(addresses: list[str], port: int) -> str:
    return ("import socket\n"
            f"for host in {addresses!r}:\n"
            "    try:\n"
            f"        socket.create_connection((host, {port}), timeout=3).close()\n"
            "        print('REACHED', host, flush=True)\n"
            "    except OSError as exc:\n"
            "        print('unreachable', host, type(exc).__name__, exc, flush=True)\n")


def test_a_run_step_reaches_no_service_on_the_host(attempt, base_image, docker_client, host_service) -> None:
    port, accepted = host_service
    addresses = _host_addresses(docker_client)
    assert addresses, "no address of the host to try"
    code = _connect_code(addresses, port)
    if docker_client.networks.list(names=["bridge"]):  # the control: an ordinary container does reach it
        control = docker_client.containers.create(base_image, ["python3", "-c", code], network="bridge",
                                                  labels=labels(attempt.installation, 0, 0, "test-control"))
        try:
            control.start()
            control.wait(timeout=60)
            assert b"REACHED" in control.logs(), control.logs()
        finally:
            control.remove(force=True)
        assert accepted, "the control container did not reach the service: the test would prove nothing"
        accepted.clear()
    run = "RUN " + json.dumps(["python3", "-c", code])
    dockerfile = f"FROM {base_image}\n{run}\nCOPY script.py /app/script.py\nCMD [\"python3\", \"/app/script.py\"]\n"
    result = attempt(script(WRITES, dockerfile))
    assert accepted == [], f"a RUN step connected to the host: {accepted}"
    log = result.log(2)
    assert "REACHED" not in log
    for address in addresses:
        assert f"unreachable {address}" in log


@pytest.mark.parametrize(("step", "expected"), [
    ("RUN sleep 90", "SANDBOX_BUILD_TIMEOUT_S=20"),
    ("RUN python3 -c \"b = bytearray(1536 * 1024 * 1024); print(len(b))\"", "out of memory (SANDBOX_MEMORY=512m)"),
], ids=["sleep-90", "1.5-GiB"])
def test_a_run_past_its_limits_fails_level_2_in_time_and_leaves_nothing(attempt, base_image, docker_client,
                                                                       step: str, expected: str) -> None:
    dockerfile = (f"FROM {base_image}\nRUN echo first step > /first\nCOPY script.py /app/script.py\n{step}\n"
                  "CMD [\"python3\", \"/app/script.py\"]\n")
    result = attempt(script(WRITES, dockerfile), SANDBOX_BUILD_TIMEOUT_S="20", SANDBOX_TIMEOUT_S="20")
    assert result.levels() == [(2, "fail")]
    assert expected in result.log(2)
    assert "line 2: RUN echo first step > /first: exit code 0" in result.log(2)
    assert result.seconds < 20 + MARGIN_S, f"took {result.seconds:.1f} s"
    assert result.created == ["sandbox-build", "sandbox-build"], "each RUN step ran in its own build container"
    assert leftovers(docker_client, result) == []


def test_a_fork_bomb_in_a_run_step_hits_the_pids_limit(attempt, base_image) -> None:
    forks = ("import os, time\nn = 0\ntry:\n    for _ in range(400):\n        if os.fork() == 0:\n"
             "            time.sleep(60)\n            os._exit(0)\n        n += 1\nexcept OSError:\n    pass\n"
             "print('forked', n, flush=True)\n")
    dockerfile = (f"FROM {base_image}\nRUN {json.dumps(['python3', '-c', forks])}\nCOPY script.py /app/script.py\n"
                  "CMD [\"python3\", \"/app/script.py\"]\n")
    result = attempt(script(WRITES, dockerfile), SANDBOX_PIDS="64", SANDBOX_BUILD_TIMEOUT_S="60")
    log = result.log(2)
    forked = int(log.split("| forked ")[1].split()[0])
    assert 0 < forked < 64, f"{forked} processes started in a build step limited to 64"
    assert result.levels()[0] == (2, "pass") and result.seconds < 60, "the sleeping children died with the step"


def test_run_steps_are_confined_like_runs_and_the_image_is_root_owned(attempt, base_image, docker_client) -> None:
    report = ("import os, socket\n"
              "status = dict(line.split(':\\t', 1) for line in open('/proc/self/status').read().splitlines() if ':\\t' in line)\n"
              "def read(*paths):\n"
              "    for path in paths:\n"
              "        if os.path.exists(path):\n"
              "            return open(path).read().strip()\n"
              "print('uid', os.getuid())\n"
              "print('caps', status['CapEff'].strip(), 'nnp', status['NoNewPrivs'].strip())\n"
              "print('nics', ','.join(sorted(n for _, n in socket.if_nameindex())))\n"
              "print('memory', read('/sys/fs/cgroup/memory/memory.limit_in_bytes', '/sys/fs/cgroup/memory.max'))\n"
              "print('pids', read('/sys/fs/cgroup/pids/pids.max', '/sys/fs/cgroup/pids.max'))\n")
    dockerfile = (f"FROM {base_image}\nWORKDIR /app\nCOPY script.py .\nRUN {json.dumps(['python3', '-c', report])}\n"
                  "USER root\nCMD [\"python3\", \"/app/script.py\"]\n")
    result = attempt(script(WRITES, dockerfile), SANDBOX_PIDS="100")
    assert result.levels() == [(2, "pass"), (3, "pass"), (4, "pass")], result.rows
    log = result.log(2)
    for line in ("| uid 0", "| caps 0000000000000000 nnp 1", "| nics lo", f"| memory {512 * 1024 * 1024}", "| pids 100"):
        assert line in log, line
    assert "USER root noted" in log
    image = docker_client.images.list(filters=installation_filter(result.installation, build=result.build_id,
                                                                  role="sandbox-image"))[0]
    assert image.attrs["Config"]["User"] == "65534:65534"
    assert _entry(docker_client, image.id, "/app/script.py") == (0, 0, 0o644)
    assert _entry(docker_client, image.id, "/app")[2] == 0o1777, "the working directory is writable, sticky"
    docker_client.images.remove(image.id, force=True, noprune=False)  # as Sandbox.remove_image does
    assert leftovers(docker_client, result) == [], "the RUN step's intermediate image goes with the image"


def _entry(docker_client, image: str, path: str) -> tuple[int, int, int]:
    """(uid, gid, mode) of a path in an image, read from the engine's archive of it."""
    container = docker_client.containers.create(image, ["true"], network_mode="none")
    try:
        stream, _ = container.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
            member = archive.getmembers()[0]
            return member.uid, member.gid, member.mode & 0o7777
    finally:
        container.remove(force=True)


# -- third-party dependencies, with no network in the build ----------------------------------------------

def test_a_script_with_a_third_party_dependency_builds_and_runs_offline(attempt) -> None:
    result = attempt(script(USES_THE_WHEEL, requirements="agentbuilder-fixture-dep==1.0\n"), GREETING,
                     SANDBOX_PIP_FIND_LINKS=str(WHEELS))
    assert result.levels() == [(2, "pass"), (3, "pass"), (4, "pass")], result.rows
    assert "dependencies agentbuilder-fixture-dep==1.0: 1 wheel(s)" in result.log(2)
    assert "imports resolve: agentbuilder_fixture_dep" in result.log(2)
    assert "hello sandbox from the fixture wheel" in result.log(3)


def test_pip_install_in_a_dockerfile_becomes_wheels_usable_by_later_steps(attempt, base_image) -> None:
    dockerfile = (f"FROM {base_image}\nWORKDIR /srv\nCOPY script.py .\nRUN pip install --no-cache-dir agentbuilder-fixture-dep\n"
                  "RUN python3 -c \"import agentbuilder_fixture_dep as d; print(d.greet('build step'))\"\n"
                  "CMD [\"python3\", \"script.py\"]\n")
    result = attempt(script(USES_THE_WHEEL, dockerfile), GREETING, SANDBOX_PIP_FIND_LINKS=str(WHEELS))
    assert result.levels() == [(2, "pass"), (3, "pass"), (4, "pass")], result.rows
    log = result.log(2)
    assert "line 4: RUN pip install --no-cache-dir agentbuilder-fixture-dep became requirements" in log
    assert "| hello build step from the fixture wheel" in log


def test_a_requirement_without_a_wheel_fails_level_2_naming_it(attempt) -> None:
    result = attempt(script("import agentbuilder_missing_dep\n", requirements="agentbuilder-missing-dep>=1\n"),
                     SANDBOX_PIP_FIND_LINKS=str(WHEELS))
    assert result.levels() == [(2, "fail")]
    assert "no wheel of agentbuilder-missing-dep" in result.log(2)


def test_an_allowed_base_missing_from_the_engine_fails_level_2_naming_its_variable(attempt) -> None:
    """SANDBOX_BASE_IMAGES allows it, the engine lacks it: Level 2 says which variable and the fix."""
    missing = "agent-builder-missing-extra-base:latest"
    result = attempt(script(WRITES, f"FROM {missing}\nCOPY script.py /app/script.py\nCMD [\"python3\", \"/app/script.py\"]\n"),
                     SANDBOX_BASE_IMAGES=missing)
    assert result.levels() == [(2, "fail")]
    assert (f"base image {missing} (SANDBOX_BASE_IMAGES) is not available to the Docker engine (builds never pull): "
            f"docker pull {missing}") in result.log(2)
    assert result.created == []
