"""Level 4 checks against real state: a real Docker engine (containers from the local base image,
a user-defined bridge network, the recording endpoint reached through its gateway), the real test
PostgreSQL and real HTTP servers. For every kind: a passing and a failing case.

Every container and network made here carries LABELS and is removed in a `finally`.
"""

from __future__ import annotations

import time
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

import psycopg
import pytest

from listener.sandbox.checks import CheckResult, RunState, evaluate, summarize, validate_spec
from listener.sandbox.recorder import Recorder, gateway_address
from tests.fakes.http_fake import FakeHTTPServer, Reply, closed_port_url

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


# -- sql_rows ------------------------------------------------------------------------------------

@pytest.fixture
def probe_db(db_url: str, operator: psycopg.Connection[Any]) -> str:
    operator.execute("CREATE TABLE level4_probe (id serial PRIMARY KEY, note text NOT NULL)")
    operator.execute("INSERT INTO level4_probe (note) VALUES ('disk report 50%')")
    return db_url


def test_sql_rows_counts_real_rows(probe_db: str) -> None:
    state = _state(sandbox_database_url=probe_db)
    result = _check({"kind": "sql_rows", "query": "SELECT * FROM level4_probe WHERE note LIKE '%50%';"}, state)
    assert result == CheckResult("sql_rows", True, "the query returned 1 row(s), at least 1 expected")
    result = _check({"kind": "sql_rows", "query": "SELECT * FROM level4_probe", "min_rows": 2}, state)
    assert not result.passed
    assert "returned 1 row(s), at least 2 expected" in result.detail


def test_sql_rows_fails_on_an_empty_result_and_on_errors(probe_db: str) -> None:
    state = _state(sandbox_database_url=probe_db)
    assert not _check({"kind": "sql_rows", "query": "SELECT * FROM level4_probe WHERE id < 0"}, state).passed
    result = _check({"kind": "sql_rows", "query": "SELECT * FROM no_such_table"}, state)
    assert not result.passed
    assert result.detail.startswith("the query failed:") and "no_such_table" in result.detail


def test_sql_rows_is_read_only_and_bounded(probe_db: str, operator: psycopg.Connection[Any]) -> None:
    state = _state(sandbox_database_url=probe_db)
    result = _check({"kind": "sql_rows", "query": "WITH gone AS (DELETE FROM level4_probe RETURNING *) SELECT * FROM gone"}, state)
    assert not result.passed
    assert "read-only transaction" in result.detail
    assert operator.execute("SELECT count(*) FROM level4_probe").fetchone()["count"] == 1
    timeout = _check({"kind": "sql_rows", "query": "SELECT 1 WHERE current_setting('statement_timeout') = '10s'"}, state)
    assert timeout.passed, timeout.detail


def test_sql_rows_without_a_database_fails(probe_db: str) -> None:
    result = _check({"kind": "sql_rows", "query": "SELECT 1"}, _state())
    assert result == CheckResult("sql_rows", False, "SANDBOX_DATABASE_URL is not set: the query cannot run")


# -- http_status ---------------------------------------------------------------------------------

@pytest.fixture
def web() -> Iterator[FakeHTTPServer]:
    with FakeHTTPServer() as server:
        yield server


def test_http_status_compares_the_real_status(web: FakeHTTPServer) -> None:
    web.script("GET", "/health", Reply(200, {"ok": True}))
    assert _check({"kind": "http_status", "url": f"{web.url}/health"}, _state()).passed
    result = _check({"kind": "http_status", "url": f"{web.url}/missing"}, _state())
    assert result == CheckResult("http_status", False, f"{web.url}/missing answered 404, 200 expected")
    assert [r.path for r in web.requests] == ["/health", "/missing"]


def test_http_status_does_not_follow_redirects(web: FakeHTTPServer) -> None:
    web.script("GET", "/moved", Reply(302, headers={"Location": "/health"}), Reply(302, headers={"Location": "/health"}))
    assert not _check({"kind": "http_status", "url": f"{web.url}/moved"}, _state()).passed
    assert _check({"kind": "http_status", "url": f"{web.url}/moved", "status": 302}, _state()).passed


def test_http_status_on_a_closed_port_fails_with_the_reason() -> None:
    url = closed_port_url() + "/health"
    result = _check({"kind": "http_status", "url": url}, _state())
    assert not result.passed
    assert result.detail.startswith(f"{url}: ConnectError")


def test_http_status_never_logs_credentials(web: FakeHTTPServer) -> None:
    url = web.url.replace("http://", "http://admin:hunter2@") + "/x"
    result = _check({"kind": "http_status", "url": url}, _state())
    assert "hunter2" not in result.detail and "***@127.0.0.1" in result.detail


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
