"""A small in-memory Docker engine for unit tests of the sandbox run and the sweeps: it honours
label filters (so a test sees exactly what a real engine would list) and can be made to fail like
an engine that stopped answering."""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, field
from typing import Any

import docker.errors
import requests
import requests.exceptions


def _matches(labels: dict[str, str], filters: dict[str, Any] | None) -> bool:
    wanted = (filters or {}).get("label", [])
    for item in [wanted] if isinstance(wanted, str) else wanted:
        key, _, value = item.partition("=")
        if labels.get(key) != value:
            return False
    return True


def conflict(message: str) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = 409
    return docker.errors.APIError(message, response=response, explanation=message)


@dataclass
class FakeContainer:
    engine: "FakeEngine"
    id: str
    name: str
    labels: dict[str, str]
    status: str = "created"
    files: dict[str, bytes] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def attrs(self) -> dict[str, Any]:
        return {"State": {"Status": self.status, "Running": self.status == "running", "ExitCode": 0}}

    def _alive(self) -> None:
        self.engine.answer()
        if self.id not in self.engine.containers_by_id:
            raise docker.errors.NotFound(f"No such container: {self.id}")

    def start(self) -> None:
        self._alive()
        self.status = "running"

    def reload(self) -> None:
        self._alive()

    def get_archive(self, path: str) -> tuple[list[bytes], dict[str, Any]]:
        self._alive()
        if path not in self.files:
            raise docker.errors.NotFound(f"Could not find the file {path} in container {self.id}")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            info = tarfile.TarInfo(path.rsplit("/", 1)[-1])
            info.size = len(self.files[path])
            archive.addfile(info, io.BytesIO(self.files[path]))
        return [buffer.getvalue()], {"name": info.name, "size": info.size}

    def logs(self, **_kwargs: Any) -> list[bytes]:
        self._alive()
        return [b"output\n"]

    def kill(self) -> None:
        self._alive()
        self.engine.containers_by_id.pop(self.id, None)  # auto-remove

    def remove(self, force: bool = False, v: bool = False) -> None:
        self._alive()
        del self.engine.containers_by_id[self.id]


@dataclass
class FakeImage:
    id: str
    tags: list[str]
    labels: dict[str, str]
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.id[:19]


@dataclass
class FakeVolume:
    engine: "FakeEngine"
    name: str
    labels: dict[str, str]
    dangling: bool = True

    def remove(self) -> None:
        self.engine.answer()
        self.engine.volumes_by_name.pop(self.name)


class FakeEngine:
    """docker.DockerClient's containers, images and volumes, in memory. `down = True`: every call
    fails with a connection error, as when the engine stops answering."""

    def __init__(self) -> None:
        self.containers_by_id: dict[str, FakeContainer] = {}
        self.images_by_id: dict[str, FakeImage] = {}
        self.volumes_by_name: dict[str, FakeVolume] = {}
        self.down = False
        self.answers_left: int | None = None  # then down
        self.containers = _Containers(self)
        self.images = _Images(self)
        self.volumes = _Volumes(self)
        self.networks = _Networks(self)
        self._counter = 0

    def answer(self) -> None:
        if self.answers_left is not None:
            self.answers_left -= 1
            if self.answers_left < 0:
                self.down, self.answers_left = True, None
        if self.down:
            raise requests.exceptions.ConnectionError("Connection aborted: the engine is gone")

    def next_id(self) -> str:
        self._counter += 1
        return f"{self._counter:064x}"

    def add_container(self, name: str, labels: dict[str, str], status: str = "running") -> FakeContainer:
        container = FakeContainer(self, self.next_id(), name, dict(labels), status)
        self.containers_by_id[container.id] = container
        return container

    def add_image(self, tags: list[str], labels: dict[str, str], config: dict[str, Any] | None = None) -> FakeImage:
        image = FakeImage(f"sha256:{self.next_id()}", list(tags), dict(labels), {"Config": config or {}})
        self.images_by_id[image.id] = image
        return image

    def add_volume(self, labels: dict[str, str], dangling: bool = True) -> FakeVolume:
        volume = FakeVolume(self, self.next_id(), dict(labels), dangling)
        self.volumes_by_name[volume.name] = volume
        return volume


class _Containers:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    def list(self, all: bool = False, filters: dict[str, Any] | None = None,  # noqa: A002
             ignore_removed: bool = False) -> list[FakeContainer]:
        self.engine.answer()
        return [c for c in self.engine.containers_by_id.values() if _matches(c.labels, filters)]

    def create(self, image: str, command: Any = None, **options: Any) -> FakeContainer:
        self.engine.answer()
        container = self.engine.add_container(options.get("name") or "sandbox", options.get("labels") or {}, "created")
        container.options = {"image": image, "command": command, **options}
        return container


class _Images:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    def list(self, filters: dict[str, Any] | None = None) -> list[FakeImage]:
        self.engine.answer()
        return [i for i in self.engine.images_by_id.values() if _matches(i.labels, filters)]

    def get(self, reference: str) -> FakeImage:
        self.engine.answer()
        for image in self.engine.images_by_id.values():
            if reference == image.id or reference in image.tags:
                return image
        raise docker.errors.ImageNotFound(f"No such image: {reference}")

    def remove(self, reference: str, force: bool = False, noprune: bool = False) -> None:
        image = self.get(reference)
        if reference in image.tags and len(image.tags) > 1:
            image.tags.remove(reference)
            return
        in_use = [c for c in self.engine.containers_by_id.values() if c.options.get("image") == image.id]
        if in_use and not force:
            raise conflict(f"image {image.id} is used by container {in_use[0].id}")
        del self.engine.images_by_id[image.id]


class _Volumes:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    def list(self, filters: dict[str, Any] | None = None) -> list[FakeVolume]:
        self.engine.answer()
        dangling = (filters or {}).get("dangling")
        return [v for v in self.engine.volumes_by_name.values()
                if _matches(v.labels, filters) and (dangling is None or v.dangling == bool(dangling))]


class _Networks:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    def get(self, name: str) -> Any:
        self.engine.answer()
        raise docker.errors.NotFound(f"network {name} not found")
