"""The engine's image side: the connection, inspect, tag, pull/push, builds, copying a binary out.

Inspect, tag and copy-out go through the docker SDK; builds through buildx.py. Every SDK call runs
inside `translated`, so engine failures become one clear EngineError line, never a traceback.
The bundle's containers and volumes are in containers.py. Stages depend on the `ImageEngine`
protocol of core/ports.py, which this class meets; SDK objects never leave this layer.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sys
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import docker
import docker.errors
import requests

from tasks.core.errors import EngineError, RegistryError
from tasks.core.files import CHUNK, copy_hashing
from tasks.core.ports import BuildRequest, Built, ImageInfo
from tasks.engine import buildx
from tasks.engine.streams import ChunkReader, container_archive

DEFAULT_HOST = "unix:///var/run/docker.sock"


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_HOST


@contextlib.contextmanager
def translated(doing: str) -> Iterator[None]:
    """Run SDK calls; their failures become EngineError("<doing>: <the engine's words>")."""
    try:
        yield
    except docker.errors.APIError as exc:
        raise EngineError(f"{doing}: {exc.explanation or exc}") from None
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise EngineError(f"{doing}: {exc}") from None


def image_info(attrs: Mapping[str, object]) -> ImageInfo:
    """From the engine's inspect data (Config may be null, Labels, Env and Entrypoint absent)."""
    config = attrs.get("Config")
    config = config if isinstance(config, dict) else {}
    env = dict(str(e).partition("=")[::2] for e in config.get("Env") or [])
    tags = attrs.get("RepoTags")
    size = attrs.get("Size")
    return ImageInfo(
        str(attrs["Id"]),
        tuple(tags) if isinstance(tags, list) else (),
        dict(config.get("Labels") or {}),
        env,
        str(attrs.get("Created") or ""),
        size if isinstance(size, int) else 0,
        tuple(str(word) for word in config.get("Entrypoint") or ()),
    )


def _registry_error(ref: str, message: str) -> RegistryError:
    lowered = message.lower()
    missing = "manifest unknown" in lowered or "not found" in lowered
    return RegistryError(f"{ref}: {message.strip()}", missing=missing)


class Engine:
    """A connection to one Docker engine (DOCKER_HOST or the local socket), opened lazily."""

    def __init__(self) -> None:
        self._client: docker.DockerClient | None = None
        self._inspected: dict[str, ImageInfo | None] = {}  # per run; reset on any change

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                # API version negotiation is the first request: it proves the engine answers.
                self._client = docker.from_env(timeout=300)
            except docker.errors.DockerException as exc:
                reason = str(exc).split(": ", 1)[-1][:200]
                raise EngineError(
                    f"no Docker engine answers at {engine_address()} ({reason}); "
                    "start dockerd or point DOCKER_HOST at a running engine"
                ) from None
        return self._client

    def forget(self) -> None:
        self._inspected.clear()

    def image(self, ref: str) -> ImageInfo | None:
        """What the engine knows of an image reference, or None when it does not exist."""
        if ref not in self._inspected:
            with translated(f"inspecting image {ref}"):
                try:
                    attrs = self.client.api.inspect_image(ref)
                    self._inspected[ref] = image_info(attrs)
                except docker.errors.NotFound:
                    self._inspected[ref] = None
        return self._inspected[ref]

    def tag(self, image_id: str, repository: str, tag: str) -> None:
        self._inspected.clear()
        with translated(f"tagging {repository}:{tag}"):
            self.client.api.tag(image_id, repository, tag)

    def untag(self, ref: str) -> None:
        """Remove a tag (the image goes with its last tag)."""
        self._inspected.clear()
        with translated(f"removing {ref}"), contextlib.suppress(docker.errors.NotFound):
            self.client.api.remove_image(ref)

    def _transfer(
        self, verb: Callable[..., Iterable[Mapping[str, object]]], repository: str, tag: str
    ) -> None:
        """Run a pull or push to its end; errors reported only inside the stream count too."""
        ref = f"{repository}:{tag}"
        try:
            for event in verb(repository, tag, stream=True, decode=True):
                if "error" in event:
                    raise _registry_error(ref, str(event["error"]))
        except docker.errors.APIError as exc:
            raise _registry_error(ref, str(exc.explanation or exc)) from None
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise _registry_error(ref, str(exc)) from None

    def pull(self, repository: str, tag: str) -> str:
        """Pull an image; its ID."""
        self._transfer(self.client.api.pull, repository, tag)
        ref = f"{repository}:{tag}"
        found = self.image(ref)
        if found is None:
            raise RegistryError(f"pulled {ref} but the engine does not have it")
        return found.id

    def push(self, repository: str, tag: str) -> None:
        """Push an image (auth or quota errors arrive inside the stream)."""
        self._transfer(self.client.api.push, repository, tag)

    def arch(self) -> str:
        """The engine's CPU architecture as binaries name it (x86_64, aarch64)."""
        with translated("asking the engine for its architecture"):
            return str(self.client.info().get("Architecture", "x86_64"))

    def build(self, request: BuildRequest) -> Built:
        """Build with BuildKit (buildx.py), after checking the engine answers at all."""
        self.client  # noqa: B018 - fail early with the engine message, not buildx's
        self._inspected.clear()
        return buildx.build(request)

    def copy_file_out(
        self, image: str, path_in_image: str, dest: Path, progress: Callable[[int, int], None]
    ) -> tuple[str, int]:
        """Stream one file out of an image to `dest`, atomically; returns (sha256, size).

        The file is written to a temp file beside `dest` and renamed only when complete, so an
        interrupt (Ctrl-C, SIGTERM) leaves `dest` as it was. Memory stays flat: 1 MiB chunks.
        """
        with translated(f"creating a container from {image}"):
            container = self.client.containers.create(image, entrypoint=["/durango-extract"])
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        try:
            with (
                translated(f"copying {path_in_image} out of {image}"),
                container_archive(self.client, str(container.id), path_in_image) as response,
            ):
                return self._receive(response, image, path_in_image, tmp, dest, progress)
        finally:
            tmp.unlink(missing_ok=True)
            try:
                container.remove(force=True, v=True)
            except docker.errors.APIError as exc:  # pragma: no cover - best effort cleanup
                print(f"warning: could not remove container {container.id}: {exc}", file=sys.stderr)

    @staticmethod
    def _receive(
        response: requests.Response,
        image: str,
        path_in_image: str,
        tmp: Path,
        dest: Path,
        progress: Callable[[int, int], None],
    ) -> tuple[str, int]:
        if response.status_code == 404:
            raise EngineError(f"{path_in_image} does not exist in image {image}")
        if response.status_code != 200:
            raise EngineError(f"copying {path_in_image} out of {image}: {response.text}")
        header = response.headers.get("X-Docker-Container-Path-Stat")
        total = int(json.loads(base64.b64decode(header)).get("size", 0)) if header else 0
        with tarfile.open(fileobj=ChunkReader(response.iter_content(CHUNK)), mode="r|") as tar:
            member = tar.next()
            source = tar.extractfile(member) if member is not None else None
            if source is None:
                raise EngineError(f"{path_in_image} in image {image} is not a regular file")
            with tmp.open("wb") as out:
                sha256, size = copy_hashing(
                    iter(lambda: source.read(CHUNK), b""), out, lambda done: progress(done, total)
                )
        tmp.chmod(0o755)
        os.replace(tmp, dest)
        progress(size, total)
        return sha256, size
