"""A DEPLOY_HANDLER for tests: the real deployment (listener.deploy.production.deploy) with one Docker failure
injected into the swap, chosen by DEPLOY_FAULT, to show that a failed swap brings the previous version back.

  rename-new     renaming the verified candidate `…-next` to its final name fails (APIError)
  tag            moving the `:production` tag fails, after both renames
  stop-previous  the previous version is really stopped, then the stop call reports an error
                 (an answer lost on the way: the undo has to start it again)

Each fault fires once; everything else is the real Docker engine.
"""

from __future__ import annotations

import os
from typing import Any

import docker.errors
from docker.models.containers import Container
from docker.models.images import Image
from unittest import mock

from listener.deploy import production as real_deploy
from listener.queue.context import AttemptContext


def _injected(what: str) -> docker.errors.APIError:
    return docker.errors.APIError(f"injected fault: {what}", explanation=f"injected fault: {what}")


def deploy(ctx: AttemptContext) -> None:
    fault = os.environ["DEPLOY_FAULT"]
    fired: list[str] = []
    rename, stop, real_tag = Container.rename, Container.stop, Image.tag

    def failing_rename(self: Container, name: str) -> Any:
        if fault == "rename-new" and not fired and self.name.endswith("-next"):
            fired.append(fault)
            raise _injected(f"rename {self.name} to {name}")
        return rename(self, name)

    def failing_stop(self: Container, **kwargs: Any) -> Any:
        result = stop(self, **kwargs)
        if fault == "stop-previous" and not fired:
            fired.append(fault)
            raise _injected(f"stop {self.name} (it did stop)")
        return result

    def failing_tag(self: Image, repository: str, tag: str | None = None, **kwargs: Any) -> Any:
        if fault == "tag" and not fired:
            fired.append(fault)
            raise _injected(f"tag {repository}:{tag}")
        return real_tag(self, repository, tag, **kwargs)

    with mock.patch.object(Container, "rename", failing_rename), mock.patch.object(Container, "stop", failing_stop), \
            mock.patch.object(Image, "tag", failing_tag):
        real_deploy.deploy(ctx)
