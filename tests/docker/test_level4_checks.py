"""Level 4 checks against real state: a real Docker engine (containers from the local base image,
a user-defined bridge network, the recording endpoint reached through its gateway), the real test
PostgreSQL and real HTTP servers. For every kind: a passing and a failing case.

http_status is made from a probe container on the sandbox network: it reaches a service container
there, never the listener's loopback, and a model-derived URL at the listener's host is refused.
Full level runs show that a refused or failing check leaves no trace of what it tried to read.
(sql_rows alone, without Docker: tests/integration/test_sql_rows.py.)

Every container and network made here carries LABELS (or the test installation's labels) and is
removed in a `finally`.
"""

from __future__ import annotations

import ipaddress
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

import psycopg
import pytest

from listener.config import Settings
from listener.sandbox.checks import CheckResult, RunState, evaluate, summarize, validate_spec
from listener.sandbox.engine import Limits, Sandbox
from listener.sandbox.naming import installation_filter
from listener.sandbox.probe import ProbeRequest, run_probe
from listener.sandbox.recorder import Recorder, gateway_address
from listener.sandbox.urls import parse
from tests.fakes.http_fake import FakeHTTPServer, Reply
from tests.helpers import remove_installation_objects

LABELS = {"io.agent-builder.test": "level4-checks"}

WRITES_FILES = (
    "import os\n"
    "open('/tmp/out.txt', 'w').write('hello')\n"
    "open('/tmp/big.bin', 'wb').write(b'z' * (5 << 20))\n"
    "os.symlink('/tmp/out.txt', '/tmp/link.txt')\n"
    "os.symlink('out.txt', '/tmp/relative.txt')\n"
    "os.symlink('/tmp/gone.txt', '/tmp/dangling.txt')\n"
    "os.makedirs('/tmp/reports', exist_ok=True)\n"
)

CALLS_HOME = (
    "import os, urllib.request\n"
    "request = urllib.request.Request(os.environ['SANDBOX_HTTP_URL'] + '{path}', data=b'{{\"free_gb\": 12}}',\n"
    "                                 method='POST', headers={{'Content-Type': 'application/json'}})\n"
    "print(urllib.request.urlopen(request, timeout=10).status)\n"
)


def _name(what: str) -> str:
    return f"ab-test-l4-{what}-{uuid.uuid4().hex[:8]}"


@contextmanager
def _container(client: Any, image: str, script: str, *, wait: bool = True, network: str | None = None,
               environment: dict[str, str] | None = None) -> Iterator[Any]:
    """A container running `python3 -c script`: waited for (exited, not removed) or left running."""
    options: dict[str, Any] = {"network": network} if network else {"network_mode": "none"}
    container = client.containers.create(image, ["python3", "-c", script], name=_name("run"), labels=LABELS,
                                         environment=environment or {}, detach=True, **options)
    try:
        container.start()
        if wait:
            status = container.wait(timeout=120)["StatusCode"]
            assert status == 0, container.logs().decode(errors="replace")
        yield container
    finally:
        container.remove(force=True)


def _state(container: Any = None, **changes: Any) -> RunState:
    fields: dict[str, Any] = {"container": container, "recorder": None, "run_token": "unused",
                              "sandbox_database_url": None, **changes}
    return RunState(**fields)


def _check(check: dict[str, Any], state: RunState) -> CheckResult:
    [result] = evaluate(validate_spec({"checks": [check]}), state)
    return result


# -- file_exists ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exited(docker_client, base_image) -> Iterator[Any]:  # noqa: ANN001
    with _container(docker_client, base_image, WRITES_FILES) as container:
        container.reload()
        assert container.status == "exited"
        yield container


def test_file_written_before_exit_exists(exited) -> None:  # noqa: ANN001
    result = _check({"kind": "file_exists", "path": "/tmp/out.txt"}, _state(exited))
    assert result == CheckResult("file_exists", True, "/tmp/out.txt exists (5 bytes)")


def test_file_exists_min_bytes_is_compared_with_the_real_size(exited) -> None:  # noqa: ANN001
    assert _check({"kind": "file_exists", "path": "/tmp/out.txt", "min_bytes": 5}, _state(exited)).passed
    result = _check({"kind": "file_exists", "path": "/tmp/out.txt", "min_bytes": 6}, _state(exited))
    assert not result.passed
    assert "5 bytes, at least 6 expected" in result.detail


def test_missing_file_fails(exited) -> None:  # noqa: ANN001
    result = _check({"kind": "file_exists", "path": "/tmp/never-written.txt"}, _state(exited))
    assert not result.passed
    assert "no such file" in result.detail


def test_a_directory_is_not_a_file(exited) -> None:  # noqa: ANN001
    result = _check({"kind": "file_exists", "path": "/tmp/reports"}, _state(exited))
    assert not result.passed
    assert "is a directory" in result.detail


@pytest.mark.parametrize("link", ["/tmp/link.txt", "/tmp/relative.txt"])
def test_a_symlink_counts_as_its_target(exited, link: str) -> None:  # noqa: ANN001
    result = _check({"kind": "file_exists", "path": link, "min_bytes": 5}, _state(exited))
    assert result.passed, result.detail
    assert "(5 bytes)" in result.detail


def test_a_dangling_symlink_is_no_file(exited) -> None:  # noqa: ANN001
    result = _check({"kind": "file_exists", "path": "/tmp/dangling.txt"}, _state(exited))
    assert not result.passed and "no such file" in result.detail


def test_a_large_file_is_sized_from_its_header_and_the_engine_stays_usable(exited) -> None:  # noqa: ANN001
    started = time.monotonic()
    results = evaluate(validate_spec({"checks": [
        {"kind": "file_exists", "path": "/tmp/big.bin", "min_bytes": 5 << 20},
        {"kind": "file_exists", "path": "/tmp/big.bin", "min_bytes": 1},
        {"kind": "file_exists", "path": "/tmp/out.txt"},
    ]}), _state(exited))
    assert [r.passed for r in results] == [True, True, True], summarize(results)
    assert f"({5 << 20} bytes)" in results[0].detail
    assert time.monotonic() - started < 30


def test_a_container_that_is_gone_fails_instead_of_raising(docker_client, base_image) -> None:  # noqa: ANN001
    with _container(docker_client, base_image, "open('/tmp/out.txt', 'w').write('x')") as container:
        pass  # removed on leaving the block
    result = _check({"kind": "file_exists", "path": "/tmp/out.txt"}, _state(container))
    assert not result.passed
    assert result.detail.startswith("the check could not run: NotFound")


# -- http_request --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bridge(docker_client) -> Iterator[str]:  # noqa: ANN001
    name = _name("net")
    network = docker_client.networks.create(name, driver="bridge", labels=LABELS)
    try:
        yield name
    finally:
        network.remove()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    with Recorder() as server:
        yield server


def test_gateway_address(docker_client, bridge) -> None:  # noqa: ANN001
    gateway = gateway_address(docker_client, bridge)
    assert gateway and gateway.count(".") == 3
    assert gateway_address(docker_client, "none") is None
    assert gateway_address(docker_client, "ab-test-l4-no-such-network") is None


def test_http_request_made_by_the_container_passes(docker_client, base_image, bridge, recorder) -> None:  # noqa: ANN001
    token = recorder.open_run()
    url = recorder.url_for(token, gateway_address(docker_client, bridge) or "no-gateway")
    with _container(docker_client, base_image, CALLS_HOME.format(path="/report"), network=bridge,
                    environment={"SANDBOX_HTTP_URL": url}) as container:
        result = _check({"kind": "http_request", "method": "POST", "path": "/report"},
                        _state(container, recorder=recorder, run_token=token))
    assert result == CheckResult("http_request", True, "POST /report reached SANDBOX_HTTP_URL and got 200")
    [seen] = recorder.requests_for(token)
    assert seen.body_excerpt == '{"free_gb": 12}'


def test_http_request_not_made_fails(docker_client, base_image, bridge, recorder) -> None:  # noqa: ANN001
    token = recorder.open_run()
    url = recorder.url_for(token, gateway_address(docker_client, bridge) or "no-gateway")
    other = recorder.open_run()  # a concurrent run that does call: its request must not count here
    other_url = recorder.url_for(other, gateway_address(docker_client, bridge) or "no-gateway")
    with _container(docker_client, base_image, "print('done, but told nobody')", network=bridge,
                    environment={"SANDBOX_HTTP_URL": url}):
        pass
    with _container(docker_client, base_image, CALLS_HOME.format(path="/report"), network=bridge,
                    environment={"SANDBOX_HTTP_URL": other_url}):
        pass
    result = _check({"kind": "http_request", "method": "POST", "path": "/report"}, _state(recorder=recorder, run_token=token))
    assert not result.passed
    assert "requests seen: none" in result.detail
    assert len(recorder.requests_for(other)) == 1


def test_http_request_to_another_path_or_method_fails(docker_client, base_image, bridge, recorder) -> None:  # noqa: ANN001
    token = recorder.open_run()
    url = recorder.url_for(token, gateway_address(docker_client, bridge) or "no-gateway")
    with _container(docker_client, base_image, CALLS_HOME.format(path="/other"), network=bridge,
                    environment={"SANDBOX_HTTP_URL": url}):
        pass
    state = _state(recorder=recorder, run_token=token)
    wrong_path = _check({"kind": "http_request", "method": "POST", "path": "/report"}, state)
    assert not wrong_path.passed and "POST /other (200)" in wrong_path.detail
    assert not _check({"kind": "http_request", "method": "GET", "path": "/other"}, state).passed
    assert _check({"kind": "http_request", "method": "post", "path": "/other"}, state).passed


def test_http_request_without_a_recorder_fails() -> None:
    result = _check({"kind": "http_request", "path": "/report"}, _state())
    assert not result.passed and "no recording endpoint" in result.detail


# -- container_running ---------------------------------------------------------------------------

def test_a_service_still_running_passes_after_the_wait(docker_client, base_image) -> None:  # noqa: ANN001
    with _container(docker_client, base_image, "import time; time.sleep(30)", wait=False) as container:
        started = time.monotonic()
        result = _check({"kind": "container_running", "after_s": 1}, _state(container))
        assert result == CheckResult("container_running", True, "container still running 1 s after it started")
        assert time.monotonic() - started < 10


def test_a_container_that_exits_fails_without_waiting_the_whole_time(docker_client, base_image) -> None:  # noqa: ANN001
    with _container(docker_client, base_image, "raise SystemExit(3)", wait=False) as container:
        container.wait(timeout=60)
        started = time.monotonic()
        result = _check({"kind": "container_running", "after_s": 30}, _state(container))
        assert not result.passed
        assert "exited (exit code 3)" in result.detail
        assert time.monotonic() - started < 10


def test_a_container_that_exits_during_the_wait_fails(docker_client, base_image) -> None:  # noqa: ANN001
    with _container(docker_client, base_image, "import time; time.sleep(1)", wait=False) as container:
        result = _check({"kind": "container_running", "after_s": 4}, _state(container))
        assert not result.passed
        assert "exited (exit code 0)" in result.detail


# -- http_status: from the sandbox network -------------------------------------------------------

SERVICE = (
    "import http.server, os\n"
    "os.makedirs('/tmp/www/sub', exist_ok=True)\n"
    "os.chdir('/tmp/www')\n"
    "open('index.html', 'w').write('ok')\n"
    "server = http.server.ThreadingHTTPServer(('', 8000), http.server.SimpleHTTPRequestHandler)\n"
    "print('ready', flush=True)\n"
    "server.serve_forever()\n"
)


@pytest.fixture(scope="module")
def probe_installation(docker_client) -> Iterator[str]:  # noqa: ANN001
    """The installation identity of this module's probes; nothing of it is left afterwards."""
    ident = f"l4{uuid.uuid4().hex[:10]}"
    yield ident
    left = docker_client.containers.list(all=True, filters=installation_filter(ident))
    remove_installation_objects(docker_client, ident)
    assert not left, f"probe containers left behind: {[c.name for c in left]}"


def _sandbox(client: Any, base_image: str, network: str, installation: str) -> Sandbox:
    settings = Settings.from_env({"SANDBOX_BASE_IMAGE": base_image, "SANDBOX_NETWORK": network,
                                  "VAULT_APPROLE_DIR": "/nonexistent/approle"})
    return Sandbox(client=client, settings=settings, limits=Limits(timeout_s=60), installation=installation,
                   automation_id=1, build_id=1, network=network)


@pytest.fixture(scope="module")
def sandbox(docker_client, base_image, bridge, probe_installation) -> Sandbox:  # noqa: ANN001
    return _sandbox(docker_client, base_image, bridge, probe_installation)


@pytest.fixture(scope="module")
def service(docker_client, base_image, bridge) -> Iterator[Any]:  # noqa: ANN001
    """A service container on the sandbox network, as a long-running automation leaves it."""
    with _container(docker_client, base_image, SERVICE, wait=False, network=bridge) as container:
        for line in container.logs(stream=True, follow=True):  # blocks until the server is bound
            if b"ready" in line:
                break
        container.reload()
        yield container


def _http(url: str, state: RunState, status: int = 200) -> CheckResult:
    return _check({"kind": "http_status", "url": url, "status": status}, state)


def _client_addresses(container: Any) -> list[str]:
    """The client address of every request the http.server service logged."""
    lines = container.logs(stdout=False, stderr=True).decode(errors="replace").splitlines()
    return [line.split(" ", 1)[0] for line in lines if '"GET ' in line]


def test_http_status_from_the_sandbox_network_reaches_the_service(sandbox, service, docker_client, bridge) -> None:  # noqa: ANN001
    before = len(_client_addresses(service))
    result = _http("http://automation:8000/", _state(service, sandbox=sandbox))
    assert result == CheckResult("http_status", True, "http://automation:8000/ answered 200, 200 expected")
    clients = _client_addresses(service)[before:]
    assert len(clients) == 1
    config = docker_client.networks.get(bridge).attrs["IPAM"]["Config"][0]
    client = ipaddress.ip_address(clients[0])
    assert client in ipaddress.ip_network(config["Subnet"])  # from a container on the network...
    assert str(client) != config["Gateway"].split("/")[0]  # ...not from the host through the gateway
    assert str(client) != service.attrs["NetworkSettings"]["Networks"][bridge]["IPAddress"]


def test_http_status_reaches_the_service_by_its_container_name(sandbox, service) -> None:  # noqa: ANN001
    url = f"http://{service.name}:8000/index.html"
    assert _http(url, _state(service, sandbox=sandbox)).passed


def test_http_status_compares_the_real_status_and_follows_no_redirect(sandbox, service) -> None:  # noqa: ANN001
    state = _state(service, sandbox=sandbox)
    assert _http("http://automation:8000/missing", state) == CheckResult(
        "http_status", False, "http://automation:8000/missing answered 404, 200 expected")
    assert _http("http://automation:8000/sub", state, status=301).passed  # http.server redirects /sub to /sub/
    assert not _http("http://automation:8000/sub", state).passed


def test_http_status_failures_say_why(sandbox, service) -> None:  # noqa: ANN001
    state = _state(service, sandbox=sandbox)
    assert _http("http://automation:8001/", state) == CheckResult(
        "http_status", False, "http://automation:8001/: connection refused")
    assert _http("http://ab-no-such-host-xyz:8000/", state) == CheckResult(
        "http_status", False, "http://ab-no-such-host-xyz:8000/: ab-no-such-host-xyz does not resolve on the sandbox network")


def test_an_operator_check_at_127_0_0_1_never_reaches_the_listeners_host(sandbox, service) -> None:  # noqa: ANN001
    """From the probe, 127.0.0.1 is the probe itself: a server on the listener's loopback sees nothing."""
    with FakeHTTPServer() as web:
        web.script("GET", "/", Reply(200, {"ok": True}))
        result = _http(f"http://127.0.0.1:{web.port}/", _state(service, sandbox=sandbox))
        assert result == CheckResult("http_status", False, f"http://127.0.0.1:{web.port}/: connection refused")
        assert web.requests == []


def test_the_gateway_is_reached_by_an_operator_check_and_refused_for_a_derived_one(sandbox, service, docker_client, bridge) -> None:  # noqa: ANN001
    """The recorder listens on all interfaces, like a careless host service: an operator may point a
    check at it (their choice, made from the sandbox network); a model-derived check may not."""
    gateway = gateway_address(docker_client, bridge)
    assert gateway
    with Recorder() as recorder:
        token = recorder.open_run()
        url = f"{recorder.url_for(token, gateway)}/probe"
        operator = _http(url, _state(service, sandbox=sandbox))
        assert operator.passed, operator.detail
        assert [r.path for r in recorder.requests_for(token)] == ["/probe"]
        derived = _http(url, _state(service, sandbox=sandbox, derived=True))
        assert not derived.passed
        assert derived.detail == (f"{url}: refused, a model-derived check never reaches the listener's host: "
                                  f"{gateway} is an address of the Docker host (a network gateway)")
        assert len(recorder.requests_for(token)) == 1


@pytest.mark.parametrize(("host", "reason"), [
    ("0", "the unspecified address"), ("2130706433", "a loopback address"), ("0x7f000001", "a loopback address"),
    ("017700000001", "a loopback address"), ("127.1", "a loopback address"), ("[::ffff:127.0.0.1]", "IPv6 form of 127.0.0.1"),
    ("[::1]", "the loopback address"), ("user@127.0.0.1", "a loopback address"), ("localhost.", "names the listener's machine"),
    ("api.localhost", "names the listener's machine"), ("[fe80::1%25eth0]", "a link-local address"),
    ("169.254.169.254", "link-local address (cloud metadata"), ("host.docker.internal", "the Docker host"),
])
def test_a_derived_check_at_any_spelling_of_the_host_is_refused_without_a_request(sandbox, service, host: str, reason: str) -> None:  # noqa: ANN001
    result = _http(f"http://{host}:8000/", _state(service, sandbox=sandbox, derived=True))
    assert not result.passed
    assert "refused, a model-derived check never reaches the listener's host: " in result.detail and reason in result.detail


def test_the_probe_refuses_a_name_that_resolves_into_a_forbidden_network(sandbox, service, bridge) -> None:  # noqa: ANN001
    """A derived check's host name is resolved inside the sandbox network; an answer in a forbidden
    network (here: the service's own address) stops the probe before it connects."""
    address = service.attrs["NetworkSettings"]["Networks"][bridge]["IPAddress"]
    target = parse(f"http://{service.name}:8000/")
    assert not isinstance(target, str)
    before = len(_client_addresses(service))
    answer = run_probe(sandbox, sandbox.settings.sandbox_base_image, ProbeRequest(
        target=target, connect=service.name, forbidden=(f"{address}/32",), timeout_s=5))
    assert answer.status is None and answer.problem is not None
    assert answer.problem.startswith(f"refused: {service.name} resolves to {address}")
    assert len(_client_addresses(service)) == before


def test_the_probe_is_confined_like_a_sandbox_run(sandbox, service, monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
                                                 probe_installation: str, bridge: str) -> None:
    seen: list[dict[str, Any]] = []
    original = sandbox.container

    @contextmanager
    def watched(*args: Any, **kwargs: Any) -> Iterator[Any]:
        with original(*args, **kwargs) as container:
            yield container
            container.reload()
            seen.append(container.attrs)

    monkeypatch.setattr(sandbox, "container", watched)
    assert _http("http://automation:8000/", _state(service, sandbox=sandbox)).passed
    [attrs] = seen
    assert attrs["Config"]["User"] == "65534:65534"
    assert attrs["Config"]["Image"] == sandbox.settings.sandbox_base_image
    assert attrs["HostConfig"]["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in attrs["HostConfig"]["SecurityOpt"]
    assert attrs["HostConfig"]["NetworkMode"] == bridge
    assert attrs["HostConfig"]["PidsLimit"] == sandbox.limits.pids
    assert attrs["Config"]["Labels"]["io.agent-builder.installation"] == probe_installation


def test_with_no_network_http_status_fails_with_the_reason(docker_client, base_image, probe_installation) -> None:  # noqa: ANN001
    none = _sandbox(docker_client, base_image, "none", probe_installation)
    result = _http("http://automation:8000/", _state(None, sandbox=none))
    assert result == CheckResult("http_status", False, "http://automation:8000/: SANDBOX_NETWORK=none: the sandbox has "
                                                       "no network, so no URL can be reached from it")


def test_without_a_sandbox_http_status_is_not_made_from_the_listener() -> None:
    result = _http("http://example.org/", _state())
    assert not result.passed and "never from the listener's host" in result.detail


def test_the_automation_alias_needs_a_running_container(sandbox, exited) -> None:  # noqa: ANN001
    result = _http("http://automation:8000/", _state(exited, sandbox=sandbox))
    assert not result.passed and "the automation's container has no address on" in result.detail


def test_http_status_never_shows_credentials(sandbox, service) -> None:  # noqa: ANN001
    result = _http("http://admin:hunter2@automation:8000/", _state(service, sandbox=sandbox))
    assert result.passed and "hunter2" not in result.detail and "***@automation:8000" in result.detail


# -- full level runs: what a failing check leaves behind ---------------------------------------

SERVICE_SCRIPT = (
    "import http.server\n"
    "server = http.server.ThreadingHTTPServer(('', 8000), http.server.SimpleHTTPRequestHandler)\n"
    "print('serving on 8000', flush=True)\n"
    "server.serve_forever()\n"
)


@pytest.fixture
def levels(db_url, builder_conn, queries, base_image, bridge, fake_ollama, tmp_path, docker_client):  # noqa: ANN001, ANN201
    """run(script, check, **env) -> (Ending, [(level, status, log)]): the listener's own attempt code
    (claim, AttemptContext, Levels 2-4, finish) on the test database and the real engine."""
    from listener.queue.store import Store
    from listener.queue.context import AttemptContext
    from listener.build.extract import GeneratedFiles
    from listener.queue.finish import run_attempt
    from listener.clients.ntfy import Notifier
    from listener.sandbox.levels import run_sandbox_levels
    from psycopg.types.json import Jsonb
    from tests.helpers import insert_idea, installation

    def run(script: str, check: Any, **env: str) -> tuple[Any, list[tuple[int, str, str]]]:
        settings = Settings.from_env({
            "DATABASE_URL": db_url, "SANDBOX_BASE_IMAGE": base_image, "SANDBOX_AGENT_IMAGE": base_image,
            "SANDBOX_NETWORK": bridge, "SANDBOX_TIMEOUT_S": "30", "VAULT_APPROLE_DIR": str(tmp_path / "no-approle"),
            "OLLAMA_URL": fake_ollama.url, "AGENT_BUILDER_HOME": str(tmp_path), **env})
        automation_id = insert_idea(builder_conn)
        if check is not None:
            builder_conn.execute("UPDATE automation_ideas SET acceptance_check = %s WHERE id = %s", (Jsonb(check), automation_id))
        store = Store(builder_conn, queries, "level4-test")
        claim = store.claim_build(automation_id)
        ctx = AttemptContext(claim=claim, store=store, settings=settings, notifier=Notifier(None, "t"),
                             stop=threading.Event())

        def handler(context: AttemptContext) -> None:
            context.start_generation()
            run_sandbox_levels(context, GeneratedFiles(main_name="script.py", main=script, dockerfile=None))

        ending = run_attempt(ctx, handler)
        rows = builder_conn.execute("SELECT test_level, status, execution_log FROM agent_test_results"
                                    " WHERE automation_id = %s ORDER BY id", (automation_id,)).fetchall()
        return ending, [(r["test_level"], r["status"], r["execution_log"]) for r in rows]

    try:
        yield run
    finally:
        remove_installation_objects(docker_client, installation(db_url))


def test_a_service_passes_http_status_from_the_sandbox_network(levels) -> None:  # noqa: ANN001
    ending, rows = levels(SERVICE_SCRIPT, {"checks": [
        {"kind": "container_running", "after_s": 1},
        {"kind": "http_status", "url": "http://automation:8000/", "status": 200},
    ]})
    assert [(level, status) for level, status, _ in rows] == [(2, "pass"), (3, "pass"), (4, "pass")], rows
    assert "PASS check 2 http_status: http://automation:8000/ answered 200, 200 expected" in rows[2][2]
    assert "check 2 http_status: did not hold: http://automation:8000/: the automation's container has no address" in rows[2][2]


def test_a_derived_check_at_the_listeners_host_is_refused_in_the_level_4_log(levels, fake_ollama) -> None:  # noqa: ANN001
    fake_ollama.script("POST", "/api/generate", Reply(200, {
        "model": "llama3.1:8b", "done": True, "done_reason": "stop", "prompt_eval_count": 10,
        "response": '{"checks": [{"kind": "http_status", "url": "http://0x7f000001:8787/metrics", "status": 200}]}'}))
    ending, rows = levels("print('done')\n", None)
    assert [(level, status) for level, status, _ in rows] == [(2, "pass"), (3, "pass"), (4, "fail")], rows
    log = rows[2][2]
    assert "check 1 (http_status http://0x7f000001:8787/metrics) is refused: 0x7f000001 is 127.0.0.1, a loopback address" in log


@pytest.fixture
def sandbox_reader(db_url: str) -> Iterator[tuple[str, str, str]]:
    """(reader URL, secret path, secret content): a read-only role of the test database, and a file
    on the database server that only the owner's view can read."""
    from tests.sandbox_db import login_role, server_secret_file

    with psycopg.connect(db_url, autocommit=True) as admin, server_secret_file(admin) as (path, content):
        admin.execute(f"CREATE FUNCTION level4_owner_read() RETURNS text SECURITY DEFINER LANGUAGE sql"
                      f" AS $$ SELECT pg_read_file('{path}') $$")
        admin.execute("CREATE VIEW level4_leak AS SELECT level4_owner_read() AS f")
        with login_role(db_url, tables=("level4_leak",)) as url:
            yield url, path, content


@pytest.mark.parametrize(("query", "expected"), [
    ("SELECT CAST(f AS int) FROM level4_leak", "the query failed: SQLSTATE 22P02 (invalid_text_representation)"),
    ("SELECT cast(pg_read_file('{path}') as int)", "calls pg_read_file(): pg_* functions are never allowed"),
    ("WITH x AS (SELECT \"pg_read_file\"('{path}') AS f) SELECT * FROM x", "calls pg_read_file()"),
    ("SELECT count(*) FROM (SELECT pg_catalog.pg_read_file('{path}')) AS s", "schema-qualified function calls are refused"),
    ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid IN ({pids})", "calls pg_terminate_backend()"),
])
def test_a_sql_check_that_tries_to_read_or_kill_leaves_no_trace(levels, sandbox_reader, db_url, builder_conn,  # noqa: ANN001
                                                              log_lines: list[str], query: str, expected: str) -> None:
    from listener.queue.db import connect
    from tests.sandbox_db import dump_tables

    url, path, content = sandbox_reader
    others = [connect(db_url, actor=f"builder:level4-{i}") for i in range(2)]
    try:
        pids = [builder_conn.info.backend_pid, *(conn.info.backend_pid for conn in others)]
        text = query.format(path=path, pids=", ".join(map(str, pids)))
        ending, rows = levels("print('nothing to see')\n", {"checks": [{"kind": "sql_rows", "query": text}]},
                              SANDBOX_DATABASE_URL=url)
        assert [(level, status) for level, status, _ in rows] == [(2, "pass"), (3, "pass"), (4, "fail")], rows
        assert expected in rows[2][2]
        with psycopg.connect(db_url) as admin:
            alive = {row[0] for row in admin.execute("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,))}
            assert alive == set(pids)  # the listener's connections are alive...
            for conn in (builder_conn, *others):
                assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}  # ...and usable
            assert content not in dump_tables(admin)  # not in any table (results, builds, history)
        assert content not in "\n".join(log_lines)  # not in any log line or notification
    finally:
        for conn in others:
            conn.close()
