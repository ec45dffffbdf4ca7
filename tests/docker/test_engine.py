"""The Docker engine does what the sandboxes need: confined runs, networks, reading files back, builds.

Every container here is created, started, waited for and removed by `_run` (or a `finally`), so a
test that fails leaves nothing behind (`containers.run(remove=True)` leaves a container that could
not start).
"""

from __future__ import annotations

import io
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from docker.errors import NotFound

CONFINED: dict[str, Any] = dict(
    user="65534:65534",
    cap_drop=["ALL"],
    security_opt=["no-new-privileges"],
    mem_limit="256m",
    memswap_limit="256m",
    pids_limit=64,
    nano_cpus=500_000_000,  # half a CPU
    network_mode="none",
    read_only=True,
    tmpfs={"/tmp": "size=16m"},
)


def _name(prefix: str) -> str:
    return f"ab-test-{prefix}-{uuid.uuid4().hex[:8]}"


def _run(client, image: str, command: list[str], **options: Any) -> tuple[int, str]:  # noqa: ANN001
    """Run to the end; return the exit code and the output (stdout and stderr). Always removes."""
    container = client.containers.create(image, command, name=_name("run"), **options)
    try:
        container.start()
        status = container.wait(timeout=120)["StatusCode"]
        return status, container.logs(stdout=True, stderr=True).decode(errors="replace")
    finally:
        container.remove(force=True)


def test_confined_container_runs_python(docker_client, base_image) -> None:
    script = (
        "import os, socket\n"
        "caps = open('/proc/self/status').read().split('CapEff:')[1].split()[0]\n"
        "nics = sorted(n for _, n in socket.if_nameindex())\n"
        "open('/tmp/scratch', 'w').write('x')\n"
        "try:\n"
        "    open('/root-write-test', 'w')\n"
        "    rootfs = 'writable'\n"
        "except OSError:\n"
        "    rootfs = 'read-only'\n"
        "print(os.getuid(), os.getgid(), caps, ','.join(nics), rootfs)\n"
    )
    status, out = _run(docker_client, base_image, ["python3", "-c", script], **CONFINED)
    assert status == 0, out
    assert out.split() == ["65534", "65534", "0000000000000000", "lo", "read-only"]


def test_bash_is_in_the_base_image(docker_client, base_image) -> None:
    status, out = _run(docker_client, base_image, ["bash", "-c", "echo $BASH_VERSION; command -v python3"], **CONFINED)
    assert status == 0, out
    assert out.splitlines()[1] == "/usr/bin/python3"


def test_limits_are_enforced(docker_client, base_image) -> None:
    # Memory: touching more than mem_limit gets the container killed (137), not the machine.
    status, out = _run(
        docker_client, base_image,
        ["python3", "-c", "b = bytearray(512 * 1024 * 1024)\nfor i in range(0, len(b), 4096): b[i] = 1\n"],
        **CONFINED,
    )
    assert status == 137, out
    # Processes: forking stops at pids_limit.
    forks = (
        "import os, time\n"
        "n = 0\n"
        "try:\n"
        "    for _ in range(200):\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(5)\n"
        "            os._exit(0)\n"
        "        n += 1\n"
        "except OSError:\n"
        "    pass\n"
        "print(n, flush=True)\n"
        "os._exit(0)\n"
    )
    status, out = _run(docker_client, base_image, ["python3", "-c", forks], **CONFINED)
    assert status == 0, out
    assert 0 < int(out.split()[0]) < 64


def test_user_defined_bridge_network(docker_client, base_image) -> None:
    net = docker_client.networks.create(_name("net"), driver="bridge", internal=True)
    try:
        assert docker_client.networks.get(net.id).attrs["Driver"] == "bridge"
        status, out = _run(
            docker_client, base_image,
            ["python3", "-c", "import socket; print(sorted(n for _, n in socket.if_nameindex()))"],
            network=net.name, user="65534:65534", cap_drop=["ALL"],
        )
        assert status == 0, out
        assert "eth0" in out
    finally:
        net.remove()
    with pytest.raises(NotFound):
        docker_client.networks.get(net.id)


def test_files_can_be_read_after_exit(docker_client, base_image) -> None:
    # Confined as above, but with a writable container layer (a tmpfs is gone once the container exits).
    confined = {**CONFINED, "read_only": False, "tmpfs": None}
    container = docker_client.containers.create(
        base_image,
        ["python3", "-c", "import json; json.dump({'ok': True}, open('/tmp/result.json', 'w'))"],
        name=_name("archive"), **confined,
    )
    try:
        container.start()
        assert container.wait(timeout=120)["StatusCode"] == 0
        container.reload()
        assert container.status == "exited"
        stream, stat = container.get_archive("/tmp/result.json")
        assert stat["name"] == "result.json"
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.extractfile("result.json")
            assert member is not None and member.read() == b'{"ok": true}'
    finally:
        container.remove(force=True)


def test_image_builds_from_base_with_the_sdk(docker_client, base_image, tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("print('hello from the built image')\n")
    (tmp_path / "Dockerfile").write_text(
        f"FROM {base_image}\n"
        "COPY app.py /app/app.py\n"
        "RUN python3 -c \"import ast; ast.parse(open('/app/app.py').read()); print('syntax ok')\"\n"
        "USER 65534\n"
        'CMD ["python3", "/app/app.py"]\n'
    )
    tag = f"{_name('build')}:latest"
    # pull=False: the base image is local only (no registry is reachable)
    image, logs = docker_client.images.build(path=str(tmp_path), tag=tag, rm=True, forcerm=True, pull=False)
    try:
        assert "syntax ok" in "".join(chunk.get("stream", "") for chunk in logs)
        status, out = _run(docker_client, tag, [], **CONFINED)
        assert (status, out) == (0, "hello from the built image\n")
    finally:
        docker_client.images.remove(image.id, force=True)
