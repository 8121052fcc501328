"""The engine as a Docker Swarm: is it a manager, its secrets and configs, `docker stack deploy`
(the CLI: the stack file format is the CLI's), and what the services and their tasks are doing.
Results are small dataclasses; every SDK call runs inside `translated`.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from tasks.core.errors import EngineError
from tasks.engine.images import Engine, engine_address, translated

STACK_LABEL = "com.docker.stack.namespace"


@dataclass(frozen=True)
class SwarmService:
    name: str
    image: str
    replicas: int  # wanted (replicated), or the job's completions
    update_state: str  # "", updating, completed, paused, rollback_started, rollback_completed, …
    update_message: str
    iteration: int  # a job's current run (its JobIteration), -1 for other services


@dataclass(frozen=True)
class SwarmTask:
    id: str
    service: str
    node: str  # the node's hostname
    node_id: str
    state: str  # new … running, complete, failed, rejected, shutdown
    desired: str  # running, shutdown, complete
    message: str
    error: str
    iteration: int
    image: str
    slot: int


def _iteration(task: dict[str, object]) -> int:
    """Which run of a job a task belongs to (-1: not a job's task)."""
    found = task.get("JobIteration")
    return int(found.get("Index") or 0) if isinstance(found, dict) else -1


class Swarm:
    """A swarm manager: the pipeline's engine, or the one at `host` (setting swarm_host: build
    here, deploy there)."""

    def __init__(self, engine: Engine, host: str = "") -> None:
        self.engine = engine
        self.host = host
        self._client: docker.DockerClient | None = None

    @property
    def client(self) -> docker.DockerClient:
        if not self.host:
            return self.engine.client
        if self._client is None:
            try:
                self._client = docker.DockerClient(base_url=self.host, timeout=300)
                self._client.ping()
            except docker.errors.DockerException as exc:
                self._client = None
                reason = str(exc).split(": ", 1)[-1][:200]
                raise EngineError(f"no Docker engine answers at {self.host} ({reason})") from None
        return self._client

    def address(self) -> str:
        return self.host or engine_address()

    def role(self) -> str:
        """manager, worker, inactive (or pending, error, locked): what this engine is."""
        with translated("asking the engine about its swarm"):
            swarm = self.client.info().get("Swarm") or {}
        state = str(swarm.get("LocalNodeState") or "inactive")
        if state != "active":
            return state
        return "manager" if swarm.get("ControlAvailable") else "worker"

    def nodes(self) -> list[tuple[str, str, str]]:
        """(hostname, availability, state) of every node."""
        with translated("listing the swarm's nodes"):
            found = self.client.api.nodes()
        return [
            (
                str((n.get("Description") or {}).get("Hostname", "")),
                str((n.get("Spec") or {}).get("Availability", "")),
                str((n.get("Status") or {}).get("State", "")),
            )
            for n in found
        ]

    def ensure_secret(self, name: str, data: bytes, labels: dict[str, str]) -> None:
        """A secret by a name that carries its content's hash: an existing one is the same."""
        with translated(f"creating secret {name}"):
            if not self.client.api.secrets(filters={"name": name}):
                self.client.api.create_secret(name, data, labels=labels)

    def ensure_config(self, name: str, data: bytes, labels: dict[str, str]) -> None:
        with translated(f"creating config {name}"):
            if not self.client.api.configs(filters={"name": name}):
                self.client.api.create_config(name, data, labels=labels)

    def deploy_stack(self, stack: str, compose_file: Path) -> None:
        """`docker stack deploy` without asking a registry (every node has the images)."""
        cmd = ["docker", *(["-H", self.host] if self.host else []), "stack", "deploy"]
        cmd += ["--resolve-image", "never", "--detach=true"]
        cmd += ["--compose-file", str(compose_file), stack]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        except FileNotFoundError:
            raise EngineError("the docker CLI is not installed (stack deploy needs it)") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise EngineError(f"docker stack deploy {stack}: {tail[0]}")

    def service(self, name: str) -> SwarmService | None:
        with translated(f"inspecting service {name}"):
            try:
                attrs = self.client.api.inspect_service(name)
            except docker.errors.NotFound:
                return None
        spec = attrs.get("Spec") or {}
        mode = spec.get("Mode") or {}
        replicas = int(
            (mode.get("Replicated") or {}).get("Replicas")
            or (mode.get("ReplicatedJob") or {}).get("TotalCompletions")
            or 0
        )
        status = attrs.get("UpdateStatus") or {}
        # a job's run: JobIteration.Index, which the engine leaves out while it is 0
        job = attrs.get("JobStatus")
        iteration = int((job.get("JobIteration") or {}).get("Index") or 0) if job else None
        return SwarmService(
            name=name,
            image=str(((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image")),
            replicas=replicas,
            update_state=str(status.get("State") or ""),
            update_message=str(status.get("Message") or ""),
            iteration=int(iteration) if iteration is not None else -1,
        )

    def tasks(self, service: str) -> list[SwarmTask]:
        with translated(f"listing the tasks of {service}"):
            found = self.client.api.tasks(filters={"service": service})
            names = {
                str(n["ID"]): str((n.get("Description") or {}).get("Hostname", ""))
                for n in self.client.api.nodes()
            }
        tasks = []
        for task in found:
            status = task.get("Status") or {}
            node = str(task.get("NodeID") or "")
            container = (task.get("Spec") or {}).get("ContainerSpec") or {}
            tasks.append(
                SwarmTask(
                    id=str(task["ID"]),
                    service=service,
                    node=names.get(node, node),
                    node_id=node,
                    state=str(status.get("State") or ""),
                    desired=str(task.get("DesiredState") or ""),
                    message=str(status.get("Message") or ""),
                    error=str(status.get("Err") or ""),
                    iteration=_iteration(task),
                    image=str(container.get("Image") or ""),
                    slot=int(task.get("Slot") or 0),
                )
            )
        return tasks

    def remove_stack(self, stack: str) -> None:
        """The stack's services, then its networks, secrets and configs."""
        with translated(f"removing stack {stack}"):
            label = {"label": f"{STACK_LABEL}={stack}"}
            for service in self.client.api.services(filters=label):
                self.client.api.remove_service(service["ID"])
            for network in self.client.api.networks(filters=label):
                try:
                    self.client.api.remove_network(network["Id"])
                except docker.errors.APIError:
                    continue  # still in use by a task that is stopping: `docker stack rm` says so
