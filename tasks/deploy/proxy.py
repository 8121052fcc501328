"""The release proxy: its image (the `proxy` stage, from orangescrum-ee/proxy/) and the commands
a rollout gives it through HAProxy's runtime API, run with `socat` inside its container.

It is what the bundle's published port belongs to once a project has releases, so it stays up
across every deploy and rollback: traffic moves by pointing its idle server at the new release
and draining the other, never by restarting or reloading it. docs/RELEASES.md says why HAProxy.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from tasks.build.content import context_files, file_digests
from tasks.build.image_stage import ImageInputs, base_image_ids, ensure_image, reason_to_build
from tasks.core.errors import DeployError, EngineError
from tasks.core.pipeline import Pipeline, StageCheck, TaskDict, action
from tasks.core.ports import ContainerEngine
from tasks.formats import haproxy

DOCKERFILE = "Dockerfile"
SERVICE = "orangescrum-proxy"  # its service in docker-compose.release.yaml
STATE = "/state"  # the proxy's state volume: the configuration it restarts with
BASE = "debian:bookworm-slim"


def folder(pipe: Pipeline) -> Path:
    return pipe.settings.bundle_dir / "proxy"


def inputs(pipe: Pipeline) -> ImageInputs:
    """Keyed like every image stage: its files, its base image's ID, its build argument."""
    where = folder(pipe)
    if not (where / DOCKERFILE).is_file():
        raise DeployError(f"proxy: {where / DOCKERFILE} is missing")
    files = context_files(where, DOCKERFILE)
    args = {"PROXY_BASE_IMAGE": BASE}
    text = (where / DOCKERFILE).read_text()
    return ImageInputs(
        "proxy", pipe.settings.proxy_image, DOCKERFILE, files, file_digests(files, pipe.hashes),
        args, base_image_ids(pipe.engine, text, args),
    )  # fmt: skip


LABELS = {"org.opencontainers.image.title": "durango release proxy (HAProxy)"}
DOC = "the release proxy's image from orangescrum-ee/proxy/ (HAProxy; key: its files)"


def task(pipe: Pipeline) -> TaskDict:
    def run() -> str:
        return ensure_image(pipe.engine, inputs(pipe), LABELS)

    return {
        "doc": DOC,
        "actions": [action(pipe, run)],
        "uptodate": [StageCheck(pipe, lambda: reason_to_build(pipe.engine, inputs(pipe)))],
        "task_dep": [],
        "verbosity": 2,
    }


class Proxy:
    """One running proxy container, driven through its runtime API."""

    def __init__(self, containers: ContainerEngine, container_id: str) -> None:
        self.containers = containers
        self.id = container_id

    def api(self, command: str) -> str:
        script = f'printf "%s\\n" "$1" | socat stdio unix-connect:{haproxy.SOCKET}'
        return self.containers.exec(self.id, ["sh", "-c", script, "sh", command])

    def stats(self) -> dict[str, haproxy.ServerStat]:
        return haproxy.parse_stat(self.api("show stat"))

    def command(self, command: str) -> None:
        """A change; HAProxy answers nothing when it took it (or a note such as "IP changed")."""
        answer = self.api(command)
        lines = answer.splitlines()
        bad = [line for line in lines if "unknown" in line.lower() or "no such" in line.lower()]
        if bad:
            raise DeployError(f"proxy: `{command}` refused: {bad[0].strip()}")

    def wait(self, slot: str, ready: bool, timeout: float) -> bool:
        """Until `slot` is up (ready=True) or has no request left (ready=False)."""
        deadline = time.monotonic() + timeout
        while True:
            stat = self.stats().get(slot)
            if stat is not None and (stat.up if ready else stat.sessions == 0 and stat.queued == 0):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)

    def install(self, text: str) -> None:
        """The configuration it starts with after a restart (written into its state volume)."""
        install(self.containers, self.id, text)


def install(containers: ContainerEngine, container_id: str, text: str) -> None:
    """Write `text` as the proxy's configuration into a container that mounts its state."""
    with tempfile.TemporaryDirectory(prefix="durango-proxy-") as tmp:
        source = Path(tmp) / "haproxy.cfg"
        source.write_text(text)
        try:
            containers.put_file(container_id, f"{STATE}/haproxy.cfg", source)
        except EngineError as exc:
            raise DeployError(f"proxy: cannot write its configuration: {exc}") from None
