"""Free, before Step 3: is the image a build starts from on the Docker engine? Builds never pull,
so without it Level 2 would fail after the paid review; asked here, it costs one API call to the
engine. A script starts from SANDBOX_BASE_IMAGE (the only base the generation prompt names), a
claude_agent from SANDBOX_AGENT_IMAGE."""

from __future__ import annotations

from dataclasses import dataclass

import docker
import docker.errors
import requests

from listener.config import Settings

ENGINE_TIMEOUT_S = 10


@dataclass(frozen=True)
class BaseImage:
    variable: str
    image: str

    @classmethod
    def for_type(cls, settings: Settings, automation_type: str) -> "BaseImage":
        if automation_type.strip() == "claude_agent":
            return cls("SANDBOX_AGENT_IMAGE", settings.sandbox_agent_image)
        return cls("SANDBOX_BASE_IMAGE", settings.sandbox_base_image)

    def fix(self) -> str:
        if self.variable == "SANDBOX_AGENT_IMAGE":
            return f"build it (docker build -t {self.image} - < docker/claude-agent.Dockerfile), or set {self.variable}"
        return f"docker pull {self.image}, or set {self.variable} to an image the engine has"


def base_image_problem(settings: Settings, automation_type: str) -> str | None:
    """None when the build's base image is on the engine; otherwise why not, naming the variable
    and the fix."""
    base = BaseImage.for_type(settings, automation_type)
    client = None
    try:
        client = docker.from_env(timeout=ENGINE_TIMEOUT_S)
        client.images.get(base.image)
    except docker.errors.ImageNotFound:
        return (f"the sandbox base image {base.variable}={base.image} is not on the Docker engine "
                f"(builds never pull); fix: {base.fix()}")
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        return (f"the Docker engine is unreachable (DOCKER_HOST or /var/run/docker.sock), so the sandbox base image "
                f"{base.variable}={base.image} cannot be checked: {' '.join(str(exc).split())[:200]}")
    finally:
        if client is not None:
            client.close()
    return None
