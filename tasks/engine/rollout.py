"""The engine calls a release rollout needs beyond the bundle's (containers.py): one container by
name (its state, exit code, address, log), waiting for a one-shot container, its restart policy,
and a volume that no compose project owns (the proxy's state: backups and restores of the
project never see it). Results are plain values; every SDK call runs inside `translated`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests

from tasks.core.errors import EngineError
from tasks.core.files import atomic_write_bytes
from tasks.core.ports import Service
from tasks.engine.containers import _service
from tasks.engine.images import Engine, translated


class Rollout:
    """Containers of a rollout, by name, on the pipeline's engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def client(self) -> docker.DockerClient:
        return self.engine.client

    def find(self, name: str) -> Service | None:
        """The container called `name` (running or not), or None."""
        with translated(f"inspecting container {name}"):
            try:
                return _service(self.client.containers.get(name))
            except docker.errors.NotFound:
                return None

    def exit_code(self, name: str) -> int | None:
        """None while it runs (or is starting); its exit code once it stopped."""
        with translated(f"inspecting container {name}"):
            state = self.client.api.inspect_container(name)["State"]
        return None if state.get("Running") or state.get("Restarting") else int(state["ExitCode"])

    def wait(self, name: str, timeout: int) -> int:
        """Its exit code, once it exits (EngineError after `timeout` seconds)."""
        try:
            with translated(f"waiting for {name}"):
                return int(self.client.api.wait(name, timeout=timeout)["StatusCode"])
        except requests.exceptions.ReadTimeout:
            raise EngineError(f"{name} did not finish within {timeout}s") from None

    def save_logs(self, name: str, dest: Path) -> None:
        """Its whole log (stdout and stderr, with times) into `dest`."""
        with translated(f"reading the log of {name}"):
            data = self.client.api.logs(name, stdout=True, stderr=True, timestamps=True)
        atomic_write_bytes(dest, data if isinstance(data, bytes) else b"", mode=0o600)

    def remove(self, name: str) -> None:
        with translated(f"removing container {name}"), contextlib.suppress(docker.errors.NotFound):
            self.client.api.remove_container(name, force=True, v=False)

    def stop(self, name: str, timeout: int) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds."""
        with translated(f"stopping {name}"), contextlib.suppress(docker.errors.NotFound):
            self.client.api.stop(name, timeout=timeout)

    def address(self, name: str, network: str) -> str:
        """Its IP address on `network` ("" when it is not attached)."""
        with translated(f"inspecting container {name}"):
            networks = self.client.api.inspect_container(name)["NetworkSettings"]["Networks"]
        return str((networks.get(network) or {}).get("IPAddress") or "")

    def keep_running(self, name: str) -> None:
        """Restarted by the engine after a crash or a reboot until it is stopped on purpose
        (`compose run` gives its containers no restart policy)."""
        with translated(f"updating {name}"):
            policy: Any = {"Name": "unless-stopped"}
            self.client.api.update_container(name, restart_policy=policy)

    def ensure_volume(self, name: str, labels: dict[str, str]) -> None:
        with translated(f"creating volume {name}"):
            try:
                self.client.api.inspect_volume(name)
            except docker.errors.NotFound:
                self.client.api.create_volume(name, labels=labels)

    def image_exists(self, ref: str) -> bool:
        return self.engine.image(ref) is not None
