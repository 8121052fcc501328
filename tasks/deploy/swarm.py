"""swarm-deploy: the current build as a Docker Swarm stack, in two `docker stack deploy`s.

  1. the engine must be a swarm manager (else one line, nothing changed);
  2. the database password and the salt become Swarm secrets, the proxy's configuration a Swarm
     config (each named by its content's hash: a change makes a new one, swapped in by the
     update; an unchanged one is reused);
  3. the stack with only the migration job (and the bundled database): the job runs the
     release's migrations once, under the advisory lock; the deploy waits for it, and a failed
     job ends the deploy there, the app untouched;
  4. the whole stack: the app's rolling update (start-first, health-gated, rolled back by Swarm
     on failure), the scheduler and the proxy; the deploy waits for it to converge.
Images are never pulled (`--resolve-image never`): every node must have them (docker save |
docker load, or a registry the nodes pull from by themselves). docs/SWARM.md.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from tasks.build import app
from tasks.core.errors import ConfigError, DeployError
from tasks.core.files import atomic_write_text
from tasks.core.pipeline import Pipeline, TaskDict, command_task
from tasks.deploy import bundle, proxy
from tasks.deploy.deploy import candidate, now
from tasks.engine.swarm import SwarmService, SwarmTask
from tasks.formats import haproxy, stack, yaml_out
from tasks.formats.releases import Release
from tasks.formats.stack import StackInputs

# What the env file holds that is not the app's environment in a stack: secrets (they become
# Swarm secrets), and the compose file's own knobs (images, port, limits).
NOT_ENVIRONMENT = {
    "DB_PASSWORD", "DB_PASSWORD_FILE", "DB_PASSWORD_SECRET", "SECURITY_SALT", "APP_IMAGE",
    "DB_IMAGE", "APP_BIND", "APP_PORT", "APP_CPUS", "APP_MEMORY", "APP_TMP_SIZE",
    "COMPOSE_PROJECT_NAME", "COMPOSE_PROFILES", "APP_ENV_FILE",
}  # fmt: skip
LABEL = "io.durango.stack"
ROLLED_BACK = ("rollback_started", "rollback_paused", "rollback_completed", "paused")


class SwarmEngine(Protocol):
    """What the stack deploy needs from the engine (tasks/engine/swarm.py)."""

    def address(self) -> str: ...
    def role(self) -> str: ...
    def ensure_secret(self, name: str, data: bytes, labels: dict[str, str]) -> None: ...
    def ensure_config(self, name: str, data: bytes, labels: dict[str, str]) -> None: ...
    def deploy_stack(self, stack: str, compose_file: Path) -> None: ...
    def service(self, name: str) -> SwarmService | None: ...
    def tasks(self, service: str) -> list[SwarmTask]: ...


def stack_name(pipe: Pipeline) -> str:
    return pipe.settings.swarm_stack or pipe.settings.compose_project


def check_manager(swarm: SwarmEngine) -> None:
    role = swarm.role()
    if role != "manager":
        what = {"inactive": "in no swarm", "worker": "a swarm worker"}.get(role, f"swarm {role}")
        raise DeployError(
            f"swarm: the engine at {swarm.address()} is {what}, not a swarm manager: run "
            "`docker swarm init` there, or point DOCKER_HOST at a manager; nothing changed"
        )


def named(stack_: str, short: str, data: bytes) -> str:
    """A secret's or config's name: its content's hash in it (Swarm's are immutable)."""
    return f"{stack_}_{short}_{hashlib.sha256(data).hexdigest()[:12]}"


def secret_values(pipe: Pipeline) -> dict[str, bytes]:
    """The database password and the salt, from the env file (or DB_PASSWORD_SECRET's file)."""
    env = bundle.env(pipe)
    password = env.get("DB_PASSWORD")
    secret_file = env.get("DB_PASSWORD_SECRET")
    if secret_file:
        where = Path(secret_file)
        where = where if where.is_absolute() else pipe.settings.bundle_dir / where
        try:
            password = where.read_text().rstrip("\n")
        except OSError as exc:
            raise ConfigError(f"DB_PASSWORD_SECRET {where}: {exc.strerror}") from None
    salt = env.get("SECURITY_SALT")
    missing = [n for n, v in (("DB_PASSWORD", password), ("SECURITY_SALT", salt)) if not v]
    if missing:
        raise ConfigError(f"{pipe.settings.env_file}: set {', '.join(missing)} (a Swarm secret)")
    return {"db_password": password.encode(), "security_salt": salt.encode()}


def stack_inputs(
    pipe: Pipeline, release: Release, secrets: dict[str, str], config: str, deploy_id: str
) -> StackInputs:
    """The stack's inputs from the env file, the facts and the settings."""
    env = bundle.env(pipe)
    facts = app.facts(pipe)
    bundled = (env.get("DB_HOST") or stack.DB) == stack.DB
    port = env.get("APP_PORT") or "8080"
    if not port.isdigit():
        raise ConfigError(f"{pipe.settings.env_file}: APP_PORT must be a port number")
    return StackInputs(
        stack=stack_name(pipe),
        image=release.image,
        proxy_image=proxy.inputs(pipe).tag,
        replicas=pipe.settings.replicas,
        health_path=release.health_path,
        port=int(port),
        environment={k: v for k, v in env.values.items() if k not in NOT_ENVIRONMENT},
        secrets=secrets,
        proxy_config=config,
        deploy_id=deploy_id,
        db_image=(env.get("DB_IMAGE") or "postgres:16-alpine") if bundled else "",
        db_user=env.get("DB_USERNAME"),
        db_name=env.get("DB_NAME"),
        volume_driver=pipe.settings.swarm_volume_driver,
        volume_options=dict(pipe.settings.swarm_volume_options),
        loopback_port=facts.loopback_port,
        cpus=env.get("APP_CPUS") or "2",
        memory=env.get("APP_MEMORY") or "2g",
    )


def until(check: Callable[[], str | None], timeout: float, every: float = 1.0) -> str | None:
    """Poll `check` until it answers (a word); None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer is not None:
            return answer
        if time.monotonic() > deadline:
            return None
        time.sleep(every)


def job_outcome(swarm: SwarmEngine, service: str, after: int) -> str | None:
    """ "complete", "failed: <why>", or None while the job's run after `after` goes on."""
    found = swarm.service(service)
    if found is None or found.iteration <= after:
        return None
    runs = [t for t in swarm.tasks(service) if t.iteration == found.iteration]
    if any(t.state == "complete" for t in runs):
        return "complete"
    ended = [t for t in runs if t.state in ("failed", "rejected", "shutdown", "orphaned")]
    if ended and not [t for t in runs if t.desired != "shutdown" and t not in ended]:
        task = ended[0]
        return f"failed: {task.error or task.message or task.state}"
    return None


def update_outcome(swarm: SwarmEngine, service: str, image: str, replicas: int) -> str | None:
    """ "converged", "rolled back: <why>", or None while the update goes on."""
    found = swarm.service(service)
    if found is None:
        return None
    if found.update_state in ROLLED_BACK:
        return f"rolled back: {found.update_message or found.update_state}"
    if found.update_state == "updating" or found.image != image:
        return None
    running = [t for t in swarm.tasks(service) if t.desired == "running" and t.state == "running"]
    if len(running) == replicas and all(t.image == image for t in running):
        return "converged"
    return None


def deploy(pipe: Pipeline, swarm: SwarmEngine) -> None:
    check_manager(swarm)
    release = candidate(pipe)
    name = stack_name(pipe)
    labels = {LABEL: name}
    secrets = {}
    for short, data in secret_values(pipe).items():
        secrets[short] = named(name, short, data)
        swarm.ensure_secret(secrets[short], data, labels)
    replicas = pipe.settings.replicas
    config = haproxy.render_swarm(f"{name}_{stack.APP}", release.health_path, replicas * 2 + 2)
    config_name = named(name, "proxy", config.encode())
    swarm.ensure_config(config_name, config.encode(), labels)
    inputs = stack_inputs(pipe, release, secrets, config_name, now(pipe))
    folder = pipe.settings.state_dir / "swarm"
    job = f"{name}_{stack.MIGRATE}"
    before = swarm.service(job)
    first = folder / f"{name}.migrate.yaml"
    atomic_write_text(first, yaml_out.dump(stack.render(inputs, "migrate")))
    print(f"swarm: migrating with {release.key} (the replicated-job {job})", flush=True)
    swarm.deploy_stack(name, first)
    wait = pipe.settings.health_timeout * 4
    outcome = until(lambda: job_outcome(swarm, job, before.iteration if before else -1), wait)
    if outcome != "complete":
        why = outcome or f"not finished within {wait}s"
        raise DeployError(
            f"swarm: the migrations of {release.key} {why}; the app was not updated; read "
            f"docker service logs {job}"
        )
    whole = folder / f"{name}.yaml"
    atomic_write_text(whole, yaml_out.dump(stack.render(inputs)))
    service = f"{name}_{stack.APP}"
    print(f"swarm: migrations done; updating {service} to {release.key}", flush=True)
    swarm.deploy_stack(name, whole)
    wait = pipe.settings.health_timeout * (replicas + 1)
    outcome = until(lambda: update_outcome(swarm, service, release.image, replicas), wait)
    if outcome != "converged":
        why = outcome or f"did not converge within {wait}s"
        raise DeployError(
            f"swarm: the update of {service} to {release.key} {why}; read docker service ps "
            f"{service} and docker service logs {service}"
        )
    front = f"{name}_{stack.PROXY}"
    outcome = until(lambda: update_outcome(swarm, front, inputs.proxy_image, 1), wait)
    if outcome != "converged":
        why = outcome or f"is not healthy within {wait}s"
        raise DeployError(
            f"swarm: {release.key} runs, but the proxy {front} {why}; read docker service ps "
            f"{front} and docker service logs {front}"
        )
    print(f"swarm: {release.key} serves on {replicas} replicas of {service} (stack file {whole})")


def task(pipe: Pipeline, swarm: SwarmEngine, name: str) -> TaskDict:
    """`swarm-deploy`, and `swarm-manager`, its first step: a target that is not a manager is
    refused before anything is built."""
    if name == "swarm-manager":
        doc = "is the engine a swarm manager? (the first step of swarm-deploy)"
        made = command_task(pipe, doc, lambda: check_manager(swarm))
        return {**made, "basename": name, "verbosity": 1}
    doc = "deploy the current build as a Docker Swarm stack (migration job first, then the app)"
    dep = ["swarm-manager", "runtime", "proxy"]
    return {**command_task(pipe, doc, lambda: deploy(pipe, swarm), task_dep=dep), "basename": name}
