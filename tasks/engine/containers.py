"""The engine's bundle side: `docker compose`, the project's containers and volumes, and the
short-lived root helper containers that backups and restores work through.

Results are small dataclasses; SDK objects never leave this module, and every SDK call runs
inside images.translated, so a failure is one EngineError line.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import docker
import docker.errors
from docker.models.containers import Container

from tasks.core.errors import EngineError
from tasks.core.files import CHUNK, copy_hashing
from tasks.core.ports import ImageInfo, Service, Streamed, Volume
from tasks.engine import exec as exec_stream
from tasks.engine.images import Engine, translated
from tasks.engine.streams import container_archive

PROJECT = "com.docker.compose.project"
HELPER = "io.durango.helper"  # on helper containers: the project they work for


def _service(container: Container) -> Service:
    attrs = container.attrs
    networks = list((attrs.get("NetworkSettings") or {}).get("Networks") or {})
    return Service(
        id=container.id or "",
        name=container.name or "",
        service=container.labels.get("com.docker.compose.service", ""),
        image_id=attrs.get("Image", ""),
        running=container.status == "running",
        env=tuple((attrs.get("Config") or {}).get("Env") or []),
        network=networks[0] if networks else None,
        binds=tuple(
            (m["Source"], m["Destination"])
            for m in attrs.get("Mounts") or []
            if m.get("Type") == "bind"
        ),
        labels=dict(container.labels),
    )


class Containers:
    """The deployment bundle's containers and volumes on the pipeline's engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def client(self) -> docker.DockerClient:
        return self.engine.client

    @staticmethod
    def compose(
        compose_file: Path, env_file: Path, args: Sequence[str], env: Mapping[str, str]
    ) -> None:
        """Run `docker compose` on the deployment bundle; its output goes straight to the user."""
        cmd = ["docker", "compose", "-f", str(compose_file), "--env-file", str(env_file), *args]
        try:
            done = subprocess.run(cmd, env={**os.environ, **env}, check=False)
        except FileNotFoundError:
            raise EngineError("the docker CLI is not installed (compose needs it)") from None
        if done.returncode != 0:
            raise EngineError(f"docker compose {' '.join(args)} failed (exit {done.returncode})")

    @staticmethod
    def compose_config(
        compose_file: Path, env_file: Path, args: Sequence[str], env: Mapping[str, str]
    ) -> dict[str, object]:
        """The compose file as compose itself reads it (`config --format json`): interpolated,
        profiles applied, every short form expanded."""
        cmd = ["docker", "compose", "-f", str(compose_file), "--env-file", str(env_file), *args]
        cmd += ["config", "--format", "json"]
        try:
            done = subprocess.run(
                cmd, env={**os.environ, **env}, check=False, capture_output=True, text=True
            )
        except FileNotFoundError:
            raise EngineError("the docker CLI is not installed (compose needs it)") from None
        if done.returncode != 0:
            raise EngineError(f"docker compose config: {done.stderr.strip()[-500:]}")
        try:
            parsed = json.loads(done.stdout)
        except ValueError:
            raise EngineError("docker compose config did not print JSON") from None
        return parsed if isinstance(parsed, dict) else {}

    def services(self, project: str) -> list[Service]:
        """Every container of the project, running or not."""
        with translated(f"listing the containers of {project}"):
            found = self.client.containers.list(all=True, filters={"label": f"{PROJECT}={project}"})
            return [_service(c) for c in found]

    def service(self, project: str, name: str) -> Service | None:
        """The running container of one service (the first, with replicas), or None."""
        running = [s for s in self.services(project) if s.service == name and s.running]
        return running[0] if running else None

    def stop(self, services: Sequence[Service]) -> None:
        for service in services:
            with translated(f"stopping {service.name}"):
                self.client.containers.get(service.id).stop(timeout=30)

    def start(self, services: Sequence[Service]) -> None:
        for service in services:
            with translated(f"starting {service.name}"):
                self.client.containers.get(service.id).start()

    def volumes(self, project: str) -> dict[str, Volume]:
        """The project's named volumes, by their short (compose file) name."""
        with translated(f"listing the volumes of {project}"):
            found = self.client.volumes.list(filters={"label": f"{PROJECT}={project}"})
            return {
                v.attrs["Labels"]["com.docker.compose.volume"]: Volume(
                    v.name, v.attrs["Labels"]["com.docker.compose.volume"]
                )
                for v in found
            }

    def ensure_volume(self, project: str, short: str) -> Volume:
        """A compose volume, created with compose's labels when missing (so compose adopts it)."""
        existing = self.volumes(project).get(short)
        if existing is not None:
            return existing
        labels = {PROJECT: project, "com.docker.compose.volume": short}
        with translated(f"creating volume {project}_{short}"):
            made = self.client.volumes.create(f"{project}_{short}", labels=labels)
        return Volume(made.name, short)

    def run_once(self, image: str, cmd: Sequence[str], env: Mapping[str, str]) -> str:
        """Run a command in a throw-away container (host.docker.internal reachable); its output,
        or EngineError with it when it fails."""
        with translated(f"running `{cmd[0]}` in {image}"):
            container = self.client.containers.create(
                image,
                list(cmd),
                entrypoint=[],
                environment=dict(env),
                extra_hosts={"host.docker.internal": "host-gateway"},
            )
        try:
            with translated(f"running `{cmd[0]}` in {image}"):
                container.start()
                code = container.wait(timeout=300)["StatusCode"]
                output = container.logs().decode(errors="replace")
        finally:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True, v=True)
        if code != 0:
            raise EngineError(f"`{cmd[0]}` in {image} exited {code}: {output.strip()[-500:]}")
        return output

    # --- housekeeping: which images exist, which are in use, how much disk they take ----------

    def images_named(self, repository: str) -> list[ImageInfo]:
        """Every image with a tag in `repository` (any tag), newest first."""
        with translated(f"listing the images of {repository}"):
            found = self.client.api.images(name=repository)
            infos = [self.engine.image(str(entry["Id"])) for entry in found]
        return sorted((i for i in infos if i), key=lambda i: i.created, reverse=True)

    def images_in_use(self) -> set[str]:
        """IDs of the images any container (running or stopped) was created from."""
        with translated("listing containers"):
            return {str(c["ImageID"]) for c in self.client.api.containers(all=True)}

    def remove_image(self, image: ImageInfo) -> None:
        """Untag and remove an image (never forced: an image in use stays)."""
        with translated(f"removing image {image.short_id}"):
            for tag in image.tags:
                self.client.api.remove_image(tag)
        self.engine.forget()

    def layers_size(self) -> int:
        """Bytes the engine's image layers take on disk."""
        with translated("asking the engine for its disk usage"):
            return int(self.client.api.df().get("LayersSize") or 0)

    def image_labels(self, image_id: str) -> dict[str, str]:
        found = self.engine.image(image_id)
        return dict(found.labels) if found else {}

    def image_exists(self, ref: str) -> bool:
        return self.engine.image(ref) is not None

    def remove_helpers(self, project: str) -> None:
        """Helpers a killed backup or restore left behind (they would hold volumes)."""
        with translated("removing leftover helper containers"):
            for container in self.client.containers.list(
                all=True, filters={"label": f"{HELPER}={project}"}
            ):
                container.remove(force=True, v=True)

    @contextlib.contextmanager
    def helper(
        self, image: str, volumes: Mapping[str, str], like: Service | None = None, project: str = ""
    ) -> Iterator[Service]:
        """A root container sleeping with `volumes` (name -> mount point) mounted, removed when
        done; with `like`, it also has that container's environment, network and bind mounts
        (read-only: a DB_PASSWORD_FILE secret), to reach the same database."""
        binds = {name: {"bind": path, "mode": "rw"} for name, path in volumes.items()}
        for source, target in like.binds if like else ():
            binds[source] = {"bind": target, "mode": "ro"}
        with translated(f"starting a helper container from {image}"):
            container = self.client.containers.create(
                image,
                entrypoint=["sleep", "3600"],
                user="0",
                environment=list(like.env) if like else [],
                network=like.network if like else None,
                volumes=binds,
                extra_hosts={"host.docker.internal": "host-gateway"},
                labels={HELPER: project},
                healthcheck={"test": ["NONE"]},  # not the app: the image's check means nothing
            )
        try:
            with translated(f"starting a helper container from {image}"):
                container.start()
                container.reload()
            yield _service(container)
        finally:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True, v=True)

    def exec(
        self,
        container_id: str,
        cmd: Sequence[str],
        env: Mapping[str, str] | None = None,
        user: str = "",
    ) -> str:
        """Run a command in a running container; EngineError with its output when it fails."""
        with translated(f"running `{cmd[0]}`"):
            container = self.client.containers.get(container_id)
            code, output = container.exec_run(
                list(cmd), environment=dict(env or {}), user=user, demux=False
            )
        text = output.decode(errors="replace") if isinstance(output, bytes) else ""
        if code != 0:
            raise EngineError(
                f"`{cmd[0]}` in {container.name} exited {code}: {text.strip()[-500:]}"
            )
        return text

    @contextlib.contextmanager
    def _archive(self, container_id: str, path: str) -> Iterator[Iterator[bytes]]:
        """The engine's tar of a container path, as chunks (streams.container_archive)."""
        with container_archive(self.client, container_id, path) as response:
            if response.status_code != 200:
                raise EngineError(f"copying {path} out: {response.text.strip()[-300:]}")
            yield response.iter_content(CHUNK)

    def archive_out(self, container_id: str, path: str, dest: Path) -> tuple[str, int]:
        """Stream a path of a container, as the engine's tar, into `dest`: (sha256, size)."""
        with (
            translated(f"copying {path} out"),
            self._archive(container_id, path) as chunks,
            dest.open("wb") as out,
        ):
            return copy_hashing(chunks, out)

    def put_file(self, container_id: str, path: str, source: Path) -> None:
        """Copy one host file into a container at `path`, readable by every user there."""
        packed = io.BytesIO()
        with tarfile.open(fileobj=packed, mode="w") as tar:
            info = tar.gettarinfo(source, arcname=os.path.basename(path))
            info.mode, info.uid, info.gid, info.uname, info.gname = 0o644, 0, 0, "", ""
            with source.open("rb") as data:
                tar.addfile(info, data)
        self.unpack_bytes(container_id, os.path.dirname(path), packed.getvalue())

    def unpack_bytes(self, container_id: str, path: str, data: bytes) -> None:
        with translated(f"copying into {path}"):
            if not self.client.containers.get(container_id).put_archive(path, data):
                raise EngineError(f"the engine refused to unpack into {path}")

    def unpack(self, container_id: str, path: str, tar_file: Path) -> None:
        """Unpack a tar into a container. Owners and modes are the tar's (no copyUIDGID, which
        would give every entry the container user's)."""
        api = self.client.api
        with tar_file.open("rb") as data, translated(f"unpacking {tar_file.name}"):
            response = api.put(
                f"{api.base_url}/v{api.api_version}/containers/{container_id}/archive",
                params={"path": path},
                data=data,
            )
        if response.status_code != 200:
            raise EngineError(f"unpacking {tar_file.name} into {path}: {response.text}")

    # --- streams and volumes for data operations (backup, restore, generations) ---------------

    def exec_stream(
        self,
        container_id: str,
        cmd: Sequence[str],
        env: Mapping[str, str] | None = None,
        user: str = "",
        stdin: Path | bytes | None = None,
        stdout: Path | None = None,
    ) -> Streamed:
        """A command tethered to this process, its stdin fed from a file or bytes and its stdout
        streamed into a file (or returned): engine/exec.py."""
        with translated(f"running `{cmd[0]}`"):
            return exec_stream.run(self.client, container_id, cmd, env, user, stdin, stdout)

    def volume_labels(self, name: str) -> dict[str, str] | None:
        """A volume's labels, or None when the engine has no volume of that name."""
        with translated(f"inspecting volume {name}"):
            try:
                found = self.client.volumes.get(name)
            except docker.errors.NotFound:
                return None
            return dict(found.attrs.get("Labels") or {})

    def create_volume(self, name: str, project: str, short: str) -> Volume:
        """A new volume with compose's labels (compose adopts it as the project's `short`)."""
        labels = {PROJECT: project, "com.docker.compose.volume": short}
        with translated(f"creating volume {name}"):
            made = self.client.volumes.create(name, labels=labels)
        return Volume(made.name, short)

    def remove_volume(self, name: str) -> None:
        """Remove a volume (never forced: one a container uses stays, EngineError)."""
        with translated(f"removing volume {name}"):
            try:
                self.client.volumes.get(name).remove()
            except docker.errors.NotFound:
                return

    def project_volumes(self, project: str) -> list[Volume]:
        """Every volume labelled as the project's, every generation of each."""
        with translated(f"listing the volumes of {project}"):
            found = self.client.volumes.list(filters={"label": f"{PROJECT}={project}"})
            return [
                Volume(v.name, (v.attrs.get("Labels") or {}).get("com.docker.compose.volume", ""))
                for v in found
            ]
