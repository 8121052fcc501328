"""The one module that talks to the Docker engine.

Inspect, tag and copy-out go through the docker SDK; builds go through `docker buildx build`
(BuildKit), which the SDK cannot drive. Engine failures become typed errors with one clear line.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors

from tasks.errors import BuildError, EngineError, RegistryError

DEFAULT_HOST = "unix:///var/run/docker.sock"
_CHUNK = 1 << 20


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_HOST


class _ChunkReader(io.RawIOBase):
    """A file object over an iterator of byte chunks, so tarfile can read a stream lazily."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def write_stream(
    chunks: Iterable[bytes], out: IO[bytes], progress: Callable[[int], None] | None = None
) -> tuple[str, int]:
    """Write chunks to `out`, hashing as they pass, and fsync: (sha256, size). Memory stays flat."""
    digest = hashlib.sha256()
    size = 0
    last = time.monotonic()
    for chunk in chunks:
        out.write(chunk)
        digest.update(chunk)
        size += len(chunk)
        if progress is not None and time.monotonic() - last > 1.0:
            progress(size)
            last = time.monotonic()
    out.flush()
    os.fsync(out.fileno())
    return digest.hexdigest(), size


def summarize_build_failure(stage: str, lines: Sequence[str]) -> str:
    """From buildx plain progress output: the failing step, its error and the tail of its log."""
    failed = None
    for line in lines:
        match = re.match(r"#(\d+) ERROR: (.*)", line)
        if match:
            failed = match
    if failed is None:
        tail = [line for line in lines if line.strip()][-15:]
        return f"{stage}: docker buildx build failed:\n" + "\n".join(f"    | {t}" for t in tail)
    step_id, error = failed.group(1), failed.group(2)
    title = next(
        (line.split(" ", 1)[1] for line in lines if re.match(rf"#{step_id} \[", line)),
        f"#{step_id}",
    )
    log = [m.group(1) for line in lines if (m := re.match(rf"#{step_id} \d+\.\d+ (.*)", line))][
        -15:
    ]
    body = "\n".join(f"    | {entry}" for entry in log)
    return f"{stage}: build step {title} failed: {error}" + (f"\n{body}" if body else "")


def _registry_error(ref: str, message: str) -> RegistryError:
    lowered = message.lower()
    missing = "manifest unknown" in lowered or "not found" in lowered
    return RegistryError(f"{ref}: {message.strip()}", missing=missing)


class Engine:
    """A connection to one Docker engine (DOCKER_HOST or the local socket), opened lazily."""

    def __init__(self) -> None:
        self._client: docker.DockerClient | None = None
        self._inspected: dict[str, dict[str, Any] | None] = {}  # per run; reset on any change

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

    def image_attrs(self, ref: str) -> dict[str, Any] | None:
        """The engine's inspect data for an image reference, or None when it does not exist."""
        if ref not in self._inspected:
            try:
                self._inspected[ref] = dict(self.client.api.inspect_image(ref))
            except docker.errors.ImageNotFound:
                self._inspected[ref] = None
            except docker.errors.APIError as exc:
                if exc.status_code != 404:
                    raise EngineError(f"inspecting image {ref}: {exc.explanation or exc}") from None
                self._inspected[ref] = None
        return self._inspected[ref]

    def tag(self, image_id: str, repository: str, tag: str) -> None:
        self._inspected.clear()
        try:
            self.client.api.tag(image_id, repository, tag)
        except docker.errors.APIError as exc:
            raise EngineError(f"tagging {repository}:{tag}: {exc.explanation or exc}") from None

    def _transfer(self, verb: Callable[..., Any], repository: str, tag: str) -> None:
        """Run a pull or push to its end; errors reported only inside the stream count too."""
        ref = f"{repository}:{tag}"
        try:
            for event in verb(repository, tag, stream=True, decode=True):
                if "error" in event:
                    raise _registry_error(ref, str(event["error"]))
        except docker.errors.APIError as exc:
            raise _registry_error(ref, str(exc.explanation or exc)) from None

    def pull(self, repository: str, tag: str) -> str:
        """Pull an image; its ID."""
        self._transfer(self.client.api.pull, repository, tag)
        ref = f"{repository}:{tag}"
        attrs = self.image_attrs(ref)
        if attrs is None:
            raise RegistryError(f"pulled {ref} but the engine does not have it")
        return str(attrs["Id"])

    def push(self, repository: str, tag: str) -> None:
        """Push an image (auth or quota errors arrive inside the stream)."""
        self._transfer(self.client.api.push, repository, tag)

    def arch(self) -> str:
        """The engine's CPU architecture as binaries name it (x86_64, aarch64)."""
        return str(self.client.info().get("Architecture", "x86_64"))

    def build(
        self,
        stage: str,
        write_context: Callable[[IO[bytes]], None],
        dockerfile: str,
        tags: Sequence[str],
        build_args: Mapping[str, str],
        labels: Mapping[str, str],
    ) -> str:
        """Build with BuildKit from a context streamed on stdin; returns the new image ID.

        Progress is printed live, prefixed with the stage; a failing step raises BuildError with
        the step and the tail of its log. Nothing is tagged unless the whole build succeeds.
        """
        self.client  # noqa: B018 - fail early with the engine message, not buildx's
        self._inspected.clear()
        with tempfile.TemporaryDirectory(prefix="durango-build-") as tmp:
            iidfile = Path(tmp, "iid")
            cmd = ["docker", "buildx", "build", "--progress=plain", "--load"]
            cmd += ["-f", dockerfile, "--iidfile", str(iidfile)]
            for tag in tags:
                cmd += ["-t", tag]
            for name, value in sorted(build_args.items()):
                cmd += ["--build-arg", f"{name}={value}"]
            for name, value in sorted(labels.items()):
                cmd += ["--label", f"{name}={value}"]
            cmd.append("-")
            lines = self._run_buildx(stage, cmd, write_context)
            if not iidfile.exists():
                raise BuildError(summarize_build_failure(stage, lines))
            return iidfile.read_text().strip()

    @staticmethod
    def _run_buildx(
        stage: str, cmd: list[str], write_context: Callable[[IO[bytes]], None]
    ) -> list[str]:
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
        except FileNotFoundError:
            raise EngineError(
                "the docker CLI is not installed (needed for docker buildx)"
            ) from None
        assert proc.stdin is not None and proc.stdout is not None
        stdin = proc.stdin
        send_error: list[BaseException] = []

        def send() -> None:
            try:
                write_context(stdin)
            except BrokenPipeError:
                pass  # buildx stopped reading: its own output says why
            except BaseException as exc:  # reported after buildx exits
                send_error.append(exc)
            finally:
                with contextlib.suppress(BrokenPipeError):
                    stdin.close()

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        lines: deque[str] = deque(maxlen=4000)
        try:
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                lines.append(line)
                if line.strip():
                    print(f"{stage} | {line}", flush=True)
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        sender.join()
        if send_error:
            raise send_error[0]
        if code != 0:
            text = "\n".join(lines)
            if "is not a docker command" in text:
                raise EngineError("the docker buildx plugin is not installed")
            raise BuildError(summarize_build_failure(stage, list(lines)))
        return list(lines)

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

    # --- the deployment bundle's containers and volumes (backups) -------------------------------

    def service_container(self, project: str, service: str) -> Any | None:
        """The running container of a compose service, or None."""
        labels = [f"com.docker.compose.project={project}", f"com.docker.compose.service={service}"]
        found = self.client.containers.list(filters={"label": labels, "status": "running"})
        return found[0] if found else None

    def project_volumes(self, project: str) -> dict[str, Any]:
        """The named volumes of a compose project, by their short (compose file) name."""
        volumes = self.client.volumes.list(
            filters={"label": f"com.docker.compose.project={project}"}
        )
        return {v.attrs["Labels"]["com.docker.compose.volume"]: v for v in volumes}

    def ensure_volume(self, project: str, short: str) -> Any:
        """A compose volume, created with compose's labels when missing (so compose adopts it)."""
        existing = self.project_volumes(project).get(short)
        if existing is not None:
            return existing
        labels = {"com.docker.compose.project": project, "com.docker.compose.volume": short}
        return self.client.volumes.create(f"{project}_{short}", labels=labels)

    def exec(
        self,
        container: Any,
        cmd: Sequence[str],
        env: Mapping[str, str] | None = None,
        user: str = "",
    ) -> str:
        """Run a command in a running container; EngineError with its output when it fails."""
        try:
            code, output = container.exec_run(
                list(cmd), environment=dict(env or {}), user=user, demux=False
            )
        except docker.errors.APIError as exc:
            container.reload()
            state = container.attrs.get("State", {})
            logs = container.logs(tail=5).decode(errors="replace").strip()
            raise EngineError(
                f"cannot run `{cmd[0]}` in {container.name} ({state.get('Status')}, exit "
                f"{state.get('ExitCode')} {state.get('Error', '')}): {exc.explanation} {logs}"
            ) from None
        text = output.decode(errors="replace") if isinstance(output, bytes) else ""
        if code != 0:
            raise EngineError(
                f"`{cmd[0]}` in {container.name} exited {code}: {text.strip()[-500:]}"
            )
        return text

    def helper_container(
        self, image: str, volumes: Mapping[str, str], like: Any | None = None
    ) -> Any:
        """A root container sleeping with `volumes` (name -> mount point) mounted, to copy and
        run commands in; with `like`, it also gets that container's environment and network (to
        reach the same database). Remove it when done."""
        binds = {name: {"bind": path, "mode": "rw"} for name, path in volumes.items()}
        attrs = like.attrs if like is not None else {}
        networks = list((attrs.get("NetworkSettings") or {}).get("Networks") or {})
        helper = self.client.containers.create(
            image,
            entrypoint=["sleep", "3600"],
            user="0",
            environment=(attrs.get("Config") or {}).get("Env") or [],
            network=networks[0] if networks else None,
            volumes=binds,
            extra_hosts={"host.docker.internal": "host-gateway"},
        )
        helper.start()
        return helper

    def archive_out(self, container: Any, path: str, dest: Path) -> tuple[str, int]:
        """Stream a path of a container, as the engine's tar, into `dest`: (sha256, size)."""
        chunks, _ = container.get_archive(path, chunk_size=_CHUNK)
        with dest.open("wb") as out:
            return write_stream(chunks, out)

    def file_out(self, container: Any, path: str, dest: Path) -> tuple[str, int]:
        """Stream one file out of a container into `dest`: (sha256, size)."""
        chunks, _ = container.get_archive(path, chunk_size=_CHUNK)
        with tarfile.open(fileobj=_ChunkReader(iter(chunks)), mode="r|") as tar:
            member = tar.next()
            source = tar.extractfile(member) if member is not None else None
            if source is None:
                raise EngineError(f"{path} in {container.name} is not a regular file")
            with dest.open("wb") as out:
                return write_stream(iter(lambda: source.read(_CHUNK), b""), out)

    def archive_in(self, container: Any, path: str, tar_file: Path) -> None:
        """Unpack a tar into a container keeping owners (copyUIDGID), like `docker cp -a`."""
        api = self.client.api
        with tar_file.open("rb") as data:
            response = api.put(
                f"{api.base_url}/v{api.api_version}/containers/{container.id}/archive",
                params={"path": path, "copyUIDGID": "true"},
                data=data,
            )
        if response.status_code != 200:
            raise EngineError(
                f"copying {tar_file.name} into {container.name}:{path}: {response.text}"
            )

    @staticmethod
    def _path_stat(response: Any) -> dict[str, Any]:
        header = response.headers.get("X-Docker-Container-Path-Stat")
        return dict(json.loads(base64.b64decode(header))) if header else {}

    def copy_file_out(
        self, image: str, path_in_image: str, dest: Path, progress: Callable[[int, int], None]
    ) -> tuple[str, int]:
        """Stream one file out of an image to `dest`, atomically; returns (sha256, size).

        The file is written to a temp file beside `dest` and renamed only when complete, so an
        interrupt (Ctrl-C, SIGTERM) leaves `dest` as it was. Memory stays flat: 1 MiB chunks.
        """
        try:
            container = self.client.containers.create(image, entrypoint=["/durango-extract"])
        except docker.errors.APIError as exc:
            raise EngineError(f"creating a container from {image}: {exc.explanation}") from None
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        api = self.client.api
        # The archive endpoint via the SDK's own session, so the response can be closed on
        # interrupt: the engine will not remove a container while it still streams from it.
        response = api.get(
            f"{api.base_url}/v{api.api_version}/containers/{container.id}/archive",
            params={"path": path_in_image},
            stream=True,
        )
        try:
            if response.status_code == 404:
                raise EngineError(f"{path_in_image} does not exist in image {image}")
            if response.status_code != 200:
                raise EngineError(f"copying {path_in_image} out of {image}: {response.text}")
            total = int(self._path_stat(response).get("size", 0))
            chunks = response.iter_content(_CHUNK)
            with tarfile.open(fileobj=_ChunkReader(chunks), mode="r|") as tar:
                member = tar.next()
                source = tar.extractfile(member) if member is not None else None
                if source is None:
                    raise EngineError(f"{path_in_image} in image {image} is not a regular file")
                with tmp.open("wb") as out:
                    sha256, size = write_stream(
                        iter(lambda: source.read(_CHUNK), b""),
                        out,
                        lambda done: progress(done, total),
                    )
            tmp.chmod(0o755)
            os.replace(tmp, dest)
            progress(size, total)
            return sha256, size
        finally:
            response.close()
            tmp.unlink(missing_ok=True)
            try:
                container.remove(force=True)
            except docker.errors.APIError as exc:  # pragma: no cover - best effort cleanup
                print(f"warning: could not remove container {container.id}: {exc}", file=sys.stderr)
