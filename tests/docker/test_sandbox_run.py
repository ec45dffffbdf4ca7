"""The sandbox run on a real engine: the keeper holds against a hostile automation and ends the
container with nobody watching, the network has no way off the host but to the recorder, and the
sweeps remove exactly this installation's leftovers (never another installation's)."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import docker
import pytest

from listener.config import Settings
from listener.queue.db import Queries, connect
from listener.sandbox.engine import Sandbox, network_name, network_warning, remove_attempt_containers
from listener.sandbox.naming import LABEL_DEADLINE, LABEL_INSTALLATION, LABEL_ROLE, installation_filter, labels
from listener.sandbox.recorder import Recorder, gateway_address
from listener.sandbox.sweep import DatabaseRecords, Sweeper
from tests.e2e.listeners import ListenerProcess, base_env, wait_until
from tests.helpers import insert_idea, installation, remove_installation_objects

HOSTILE = """import ctypes, os, signal, time
libc = ctypes.CDLL(None, use_errno=True)
try:
    open('/proc/1/environ', 'rb').read()
    print('environ: READ', flush=True)
except OSError as exc:
    print('environ:', type(exc).__name__, flush=True)
print('ptrace:', 'ATTACHED' if libc.ptrace(16, 1, 0, 0) == 0 else os.strerror(ctypes.get_errno()), flush=True)
for sig in (signal.SIGSTOP, signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGSEGV, signal.SIGABRT, signal.SIGCHLD):
    os.kill(1, sig)
time.sleep(0.5)
print('pid 1 state:', open('/proc/1/stat').read().split()[2], flush=True)
print('keeper env inherited:', 'AGENT_BUILDER_KEEPER_NONCE' in os.environ, flush=True)
while True:
    time.sleep(1)
"""


@pytest.fixture
def ours(db_url: str, docker_client) -> Iterator[str]:
    """This test's installation; whatever it made on the engine is removed afterwards."""
    identity = installation(db_url)
    yield identity
    remove_installation_objects(docker_client, identity)


def sandbox_for(identity: str, tmp_path: Path, **env: str) -> Sandbox:
    settings = Settings.from_env({"VAULT_APPROLE_DIR": str(tmp_path / "no-approle"), "SANDBOX_NETWORK": "none",
                                  "SANDBOX_TIMEOUT_S": "4", "SANDBOX_HOLD_S": "2", **env})
    return Sandbox.connect(settings, identity, automation_id=1, build_id=1)


def gone(client: docker.DockerClient, container_id: str) -> bool:
    return not client.api.containers(all=True, filters={"id": container_id})  # no inspect: no race


# -- the keeper ---------------------------------------------------------------------------------------------

def test_the_keeper_cannot_be_traced_stopped_or_killed_and_kills_on_time(docker_client, base_image, ours, tmp_path) -> None:
    box = sandbox_for(ours, tmp_path)
    with box.container(base_image, ["python3", "-c", HOSTILE], {}) as container:
        started = time.monotonic()
        run = box.run_to_end(container)
        elapsed = time.monotonic() - started
        assert run.timed_out and "killed after the 4 s timeout" in run.describe(), run.logs
        assert 4 <= elapsed < 4 + 3, elapsed
        lines = run.logs.splitlines()
        assert "environ: PermissionError" in lines and "ptrace: Operation not permitted" in lines, run.logs
        assert "keeper env inherited: False" in lines
        state = next(line for line in lines if line.startswith("pid 1 state:"))
        assert state.split()[-1] in ("S", "R"), run.logs  # not stopped (T), not traced (t)


def test_with_no_listener_the_container_is_gone_after_its_deadline(docker_client, base_image, ours, tmp_path) -> None:
    box = sandbox_for(ours, tmp_path)
    context = box.container(base_image, ["sleep", "300"], {})
    container = context.__enter__()  # the listener "dies" here: nobody will ever leave this context
    try:
        container.start()
        started = time.monotonic()
        deadline = int(container.labels[LABEL_DEADLINE])
        assert time.time() < deadline <= time.time() + 15 + 4 + 2 + 1
        volumes = docker_client.volumes.list(filters=installation_filter(ours, role="sandbox-scratch"))
        assert len(volumes) == 3  # /tmp, /work and the keeper's
        wait_until(lambda: gone(docker_client, container.id), 4 + 2 + 10, "the container to go by itself")
        assert time.monotonic() - started >= 4 + 2 - 0.5
        wait_until(lambda: not docker_client.volumes.list(filters=installation_filter(ours, role="sandbox-scratch")),
                   10, "the tmpfs volumes to go with it")
    finally:
        context.__exit__(None, None, None)


def test_the_automations_exit_code_and_output_are_read_while_the_keeper_holds(docker_client, base_image, ours, tmp_path) -> None:
    box = sandbox_for(ours, tmp_path, SANDBOX_TIMEOUT_S="60")
    with box.container(base_image, ["sh", "-c", "echo out; echo err >&2; echo kept > /tmp/f; exit 3"], {}) as container:
        started = time.monotonic()
        run = box.run_to_end(container)
        assert run.exit_code == 3 and not run.timed_out and time.monotonic() - started < 10
        assert "out" in run.logs and "err" in run.logs
        container.reload()
        assert container.status == "exited" and container.attrs["State"]["ExitCode"] == 3
        stream, _stat = container.get_archive("/tmp/f")  # the tmpfs is still there
        assert b"kept" in b"".join(stream)


def test_an_image_without_bash_fails_with_the_keepers_reason(docker_client, base_image, ours, tmp_path) -> None:
    context = tmp_path / "no-bash"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {base_image}\nUSER root\nRUN rm -f /bin/bash /usr/bin/bash\n")
    image, _ = docker_client.images.build(path=str(context), pull=False, rm=True, nocache=True,
                                          labels={LABEL_INSTALLATION: ours})
    box = sandbox_for(ours, tmp_path)
    with box.container(image.id, ["true"], {}) as container:
        with pytest.raises(Exception, match="the image has no bash"):
            box.run_to_end(container)


# -- the network -----------------------------------------------------------------------------------------------

PROBE = """import json, socket, sys, urllib.request
targets = json.loads(sys.argv[1])
result = {}
for name, (host, port) in targets.items():
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((host, port))
        result[name] = 'connected'
    except OSError as exc:
        result[name] = type(exc).__name__
    finally:
        s.close()
try:
    result['recorder_http'] = urllib.request.urlopen(sys.argv[2] + '/hello', timeout=5).status
except OSError as exc:
    result['recorder_http'] = type(exc).__name__
print(json.dumps(result), flush=True)
"""


@pytest.fixture
def host_service() -> Iterator[int]:
    """A TCP service on the host's 0.0.0.0 (like a careless service would listen), counting connections."""
    server = socket.create_server(("0.0.0.0", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                server.accept()[0].close()
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    server.close()


def test_the_sandbox_reaches_the_recorder_and_nothing_off_the_host(docker_client, base_image, ours, tmp_path,
                                                                   host_service) -> None:
    box = sandbox_for(ours, tmp_path, SANDBOX_NETWORK="{installation}-probe", SANDBOX_TIMEOUT_S="30")
    network = box.ensure_network()
    attrs = docker_client.networks.get(network).attrs
    assert network == f"{ours}-probe" and attrs["Internal"] is True
    assert attrs["Labels"] == {LABEL_INSTALLATION: ours, LABEL_ROLE: "sandbox-network"}
    gateway = gateway_address(docker_client, network)
    # A stand-in for another machine: a container on the default bridge, listening.
    peer = docker_client.containers.run(base_image, ["python3", "-c", "import socket, time\ns = socket.create_server(('0.0.0.0', 8080))\ntime.sleep(120)"],
                                        detach=True, labels=labels(ours, 1, 1, "test-peer"))
    peer.reload()
    peer_ip = peer.attrs["NetworkSettings"]["IPAddress"]
    with Recorder.bound_to(gateway) as recorder:
        assert recorder._server.server_address[0] == gateway  # not 0.0.0.0
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", recorder.port), timeout=3).close()
        token = recorder.open_run()
        targets = {"recorder": [gateway, recorder.port], "peer_on_another_network": [peer_ip, 8080],
                   "host_service_on_all_interfaces": [gateway, host_service]}
        with box.container(base_image, ["python3", "-c", PROBE, json.dumps(targets), recorder.url_for(token, gateway)], {}) as container:
            run = box.run_to_end(container)
        result = json.loads(run.logs.strip().splitlines()[-1])
        assert [r.path for r in recorder.requests_for(token)] == ["/hello"]
    assert result["recorder"] == "connected" and result["recorder_http"] == 200
    assert result["peer_on_another_network"] in ("TimeoutError", "timeout", "ConnectionRefusedError", "OSError"), result
    assert result["peer_on_another_network"] != "connected"
    # Known limit (README, security model): the host owns the gateway address of an internal bridge,
    # so a host service listening on all interfaces is reachable from the sandbox.
    assert result["host_service_on_all_interfaces"] == "connected", result


def test_a_network_of_ours_that_is_not_internal_is_recreated_and_a_users_is_warned_about(docker_client, ours, tmp_path) -> None:
    old = docker_client.networks.create(f"{ours}-old", driver="bridge", labels={LABEL_INSTALLATION: ours, LABEL_ROLE: "sandbox-network"})
    box = sandbox_for(ours, tmp_path, SANDBOX_NETWORK=f"{ours}-old")
    box.ensure_network()
    recreated = docker_client.networks.get(f"{ours}-old")
    assert recreated.id != old.id and recreated.attrs["Internal"] is True
    users = docker_client.networks.create(f"{ours}-users", driver="bridge", labels={LABEL_INSTALLATION: ours})
    box = sandbox_for(ours, tmp_path, SANDBOX_NETWORK=f"{ours}-users")
    assert "is not an internal network" in (network_warning(docker_client, box.settings, ours) or "")
    box.ensure_network()
    assert docker_client.networks.get(users.id).attrs["Internal"] is False  # the user's choice: used as it is
    assert network_name(box.settings, ours) == f"{ours}-users"


# -- sweeps -------------------------------------------------------------------------------------------------------

def add_attempt(conn, automation_id: int, outcome: str | None) -> int:  # noqa: ANN001
    row = conn.execute(
        "INSERT INTO agent_builds (automation_id, worker, finished_at, outcome) VALUES (%s, 'test', "
        " CASE WHEN %s::text IS NULL THEN NULL ELSE now() END, %s) RETURNING id",
        (automation_id, outcome, outcome)).fetchone()
    return int(row["id"])


def leftover(client, base_image: str, identity: str, build_id: int, role: str = "sandbox-run",  # noqa: ANN001
             deadline: float | None = None, name: str | None = None) -> Any:
    extra = {LABEL_DEADLINE: str(int(deadline))} if deadline is not None else {}
    return client.containers.create(base_image, ["sleep", "300"], name=name,
                                    labels={**labels(identity, 1, build_id, role), **extra})


def sandbox_image(client, base_image: str, identity: str, build_id: int, tmp_path: Path) -> str:  # noqa: ANN001
    context = tmp_path / f"image-{identity}-{build_id}"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {base_image}\nLABEL test.unique={uuid.uuid4().hex}\n")
    tag = f"agent-1-sweep:build-{build_id}-{identity}"
    image, _ = client.images.build(path=str(context), tag=tag, pull=False, rm=True, nocache=True,
                                   labels=labels(identity, 1, build_id, "sandbox-image"))
    return image.id


def exists(client, kind: str, object_id: str) -> bool:  # noqa: ANN001
    try:
        getattr(client, kind).get(object_id)
        return True
    except docker.errors.NotFound:
        return False


def test_a_listener_sweeps_its_own_leftovers_at_start_and_nothing_else(db_url, builder_conn, docker_client, base_image,
                                                                      ours, tmp_path) -> None:
    other = f"test{uuid.uuid4().hex[:8]}"
    automation_id = insert_idea(builder_conn, status="idea")
    running = add_attempt(builder_conn, automation_id, None)
    # Alive: its worker (this session) holds its advisory lock, so the listener's rescuer leaves it be.
    builder_conn.execute("SELECT pg_advisory_lock(agent_builder_lock_key(%s))", (running,))
    failed = add_attempt(builder_conn, insert_idea(builder_conn, status="idea"), "failed")
    passed = add_attempt(builder_conn, insert_idea(builder_conn, status="idea"), "succeeded")
    now = time.time()
    try:
        late = leftover(docker_client, base_image, ours, running, deadline=now - 10)
        of_failed = leftover(docker_client, base_image, ours, failed, deadline=now + 600)
        live = leftover(docker_client, base_image, ours, running, deadline=now + 600)
        candidate = leftover(docker_client, base_image, ours, failed, role="production", name=f"agent-{ours}-x-next")
        theirs_late = leftover(docker_client, base_image, other, running, deadline=now - 10)
        theirs_over = leftover(docker_client, base_image, other, failed, deadline=now + 600)
        failed_image = sandbox_image(docker_client, base_image, ours, failed, tmp_path)
        passed_image = sandbox_image(docker_client, base_image, ours, passed, tmp_path)
        theirs_image = sandbox_image(docker_client, base_image, other, failed, tmp_path)

        listener = ListenerProcess(base_env(db_url, RESCUE_INTERVAL_S="300"), tmp_path / "listener.log")
        try:
            wait_until(lambda: not any(exists(docker_client, "containers", c.id) for c in (late, of_failed, candidate))
                       and not exists(docker_client, "images", failed_image), 30, "the sweep at start", listener)
        finally:
            assert listener.stop() == 0
        assert exists(docker_client, "containers", live.id) and exists(docker_client, "images", passed_image)
        for theirs in (theirs_late.id, theirs_over.id):
            assert exists(docker_client, "containers", theirs)
        assert exists(docker_client, "images", theirs_image)
        assert "sweep removed container" in listener.log()
    finally:
        remove_installation_objects(docker_client, other)


def test_two_installations_on_one_engine_never_touch_each_others_objects(pg_server, db_url, docker_client, base_image,
                                                                         ours, tmp_path) -> None:
    other_url = pg_server.new_database()
    other = installation(other_url)
    queries = Queries.load()
    try:
        with connect(db_url, actor="builder:test") as conn_a, connect(other_url, actor="builder:test") as conn_b:
            # The same ids in both databases: automation 1, attempt 1 (over in A, running in B).
            assert add_attempt(conn_a, insert_idea(conn_a, status="idea"), "crashed") == 1
            assert add_attempt(conn_b, insert_idea(conn_b, status="idea"), None) == 1
            a_run = leftover(docker_client, base_image, ours, 1, deadline=time.time() + 600)
            b_run = leftover(docker_client, base_image, other, 1, deadline=time.time() + 600)
            a_image = sandbox_image(docker_client, base_image, ours, 1, tmp_path)
            b_image = sandbox_image(docker_client, base_image, other, 1, tmp_path)

            assert remove_attempt_containers(other, 1) == 1  # B's rescue of its attempt 1 (pretend it died)
            assert exists(docker_client, "containers", a_run.id) and not exists(docker_client, "containers", b_run.id)
            b_run = leftover(docker_client, base_image, other, 1, deadline=time.time() + 600)

            report = Sweeper(ours, docker_client, DatabaseRecords(conn_a, queries)).sweep()  # A's sweep
            assert [r.found.id for r in report.containers] == [a_run.id] and len(report.images) == 1
            assert not exists(docker_client, "images", a_image)
            assert exists(docker_client, "containers", b_run.id) and exists(docker_client, "images", b_image)

            report = Sweeper(other, docker_client, DatabaseRecords(conn_b, queries)).sweep()  # B's: its attempt runs
            assert report.containers == [] and report.images == []
            conn_b.execute("UPDATE agent_builds SET finished_at = now(), outcome = 'failed' WHERE id = 1")
            report = Sweeper(other, docker_client, DatabaseRecords(conn_b, queries)).sweep()
            assert [r.found.id for r in report.containers] == [b_run.id] and len(report.images) == 1
    finally:
        remove_installation_objects(docker_client, other)
        pg_server.drop_database(other_url)
