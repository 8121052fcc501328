"""What the pipeline needs from the Docker engine, as protocols and the plain records that cross
that boundary. The engine layer (tasks/engine/) implements them; stages and bundle operations
are written against these, so unit tests hand them fakes (tests/unit/fakes.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol


def short_id(image_id: str) -> str:
    """`sha256:0123456789ab…` -> `0123456789ab`, as docker prints it."""
    return image_id.removeprefix("sha256:")[:12]


@dataclass(frozen=True)
class ImageInfo:
    """What the pipeline reads of an image: its ID, tags, labels and environment."""

    id: str
    tags: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    created: str = ""  # RFC 3339, as the engine says
    size: int = 0
    entrypoint: tuple[str, ...] = ()

    @property
    def short_id(self) -> str:
        return short_id(self.id)


@dataclass(frozen=True)
class BuildRequest:
    """One image build. Secrets are named by where to read them (id -> `src=<file>` or
    `env=<NAME>`), never by value; `network="none"` gives RUN steps no network."""

    stage: str
    write_context: Callable[[IO[bytes]], None]
    dockerfile: str
    tags: Sequence[str]
    build_args: Mapping[str, str]
    labels: Mapping[str, str]
    secrets: Mapping[str, str] = field(default_factory=dict)
    network: str = ""
    no_cache: bool = False


@dataclass(frozen=True)
class Built:
    """What a build produced: the image ID and the build's log lines."""

    image_id: str
    log: list[str]


@dataclass(frozen=True)
class Service:
    """One container of a compose project, as much of it as the bundle operations need."""

    id: str
    name: str
    service: str
    image_id: str
    running: bool
    env: tuple[str, ...] = ()
    network: str | None = None
    binds: tuple[tuple[str, str], ...] = ()  # (host path, container path): secrets among them
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Volume:
    name: str  # the engine's name
    short: str  # the name in docker-compose.yaml


@dataclass(frozen=True)
class Streamed:
    """How a streamed command ended: its exit code, its stdout (when not written to a file) or
    the sha256 and size of what was written, and the tail of its stderr."""

    code: int
    out: bytes
    sha256: str
    size: int
    err: str


class ImageLookup(Protocol):
    """What deciding whether a stage is built needs: looking images up."""

    def image(self, ref: str) -> ImageInfo | None: ...


class ImageEngine(ImageLookup, Protocol):
    """What the image stages and the registry cache need from the engine."""

    def forget(self) -> None: ...
    def tag(self, image_id: str, repository: str, tag: str) -> None: ...
    def untag(self, ref: str) -> None: ...
    def pull(self, repository: str, tag: str) -> str: ...
    def push(self, repository: str, tag: str) -> None: ...
    def arch(self) -> str: ...
    def build(self, request: BuildRequest) -> Built: ...
    def copy_file_out(
        self, image: str, path_in_image: str, dest: Path, progress: Callable[[int, int], None]
    ) -> tuple[str, int]: ...


class ContainerEngine(Protocol):
    """What the bundle operations (up, backup, restore, tenants, prune) need from the engine."""

    def compose(
        self, compose_file: Path, env_file: Path, args: Sequence[str], env: Mapping[str, str]
    ) -> None: ...
    def compose_config(
        self, compose_file: Path, env_file: Path, args: Sequence[str], env: Mapping[str, str]
    ) -> dict[str, object]: ...
    def services(self, project: str) -> list[Service]: ...
    def service(self, project: str, name: str) -> Service | None: ...
    def stop(self, services: Sequence[Service]) -> None: ...
    def start(self, services: Sequence[Service]) -> None: ...
    def volumes(self, project: str) -> dict[str, Volume]: ...
    def ensure_volume(self, project: str, short: str) -> Volume: ...
    def run_once(self, image: str, cmd: Sequence[str], env: Mapping[str, str]) -> str: ...
    def images_named(self, repository: str) -> list[ImageInfo]: ...
    def images_in_use(self) -> set[str]: ...
    def remove_image(self, image: ImageInfo) -> None: ...
    def layers_size(self) -> int: ...
    def image_labels(self, image_id: str) -> dict[str, str]: ...
    def image_exists(self, ref: str) -> bool: ...
    def remove_helpers(self, project: str) -> None: ...
    def helper(
        self, image: str, volumes: Mapping[str, str], like: Service | None = None, project: str = ""
    ) -> contextlib.AbstractContextManager[Service]: ...
    def exec(
        self,
        container_id: str,
        cmd: Sequence[str],
        env: Mapping[str, str] | None = None,
        user: str = "",
    ) -> str: ...
    def archive_out(self, container_id: str, path: str, dest: Path) -> tuple[str, int]: ...
    def put_file(self, container_id: str, path: str, source: Path) -> None: ...
    def unpack(self, container_id: str, path: str, tar_file: Path) -> None: ...
    def exec_stream(
        self,
        container_id: str,
        cmd: Sequence[str],
        env: Mapping[str, str] | None = None,
        user: str = "",
        stdin: Path | bytes | None = None,
        stdout: Path | None = None,
    ) -> Streamed: ...
    def volume_labels(self, name: str) -> dict[str, str] | None: ...
    def create_volume(self, name: str, project: str, short: str) -> Volume: ...
    def remove_volume(self, name: str) -> None: ...
    def project_volumes(self, project: str) -> list[Volume]: ...
