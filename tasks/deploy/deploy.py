"""deploy / rollback: move a project's traffic to another release with no failed request.

`doit deploy` (after the stages that are stale) takes the project lock, then:
  1. a pre-deploy backup (backup.backup), unless --no-backup;
  2. the release's migrations, once, in a one-shot container of its image (APP_ROLE=migrate: the
     entrypoint migrates and seeds under the advisory lock and exits), before traffic moves;
  3. the release's app container beside the serving one (`<project>-app-<key>`: the compose
     service's definition, same network and volumes, SKIP_MIGRATIONS=true), until it answers
     its health path;
  4. the proxy's idle server pointed at it (HAProxy runtime API: no reload);
  5. the old server drained (its requests finish) and the old container stopped and removed;
  then the workers (scheduler, queue) move to the new image, the live state pins APP_IMAGE to
  it (a later `doit up` keeps it) and the release records say what serves.
A release that fails its migrations or its health check never receives traffic, is removed, and
the command ends with one line naming the step and the saved log. `doit rollback [to=KEY]` does
3-5 with an earlier release's image, refused when the database has migrations it does not ship.

The topology is the bundle's compose file plus docker-compose.release.yaml: the proxy owns the
published port; the compose service orangescrum-app has no container of its own (scale 0).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timezone
from pathlib import Path
from typing import Protocol

from tasks.build import app, runtime
from tasks.build.image_stage import built_image_id
from tasks.core.errors import BackupError, DatabaseError, DeployError, EngineError
from tasks.core.pipeline import Pipeline, TaskDict, command_task
from tasks.core.ports import Service
from tasks.deploy import backup, bundle, live, project_lock, proxy, releases
from tasks.deploy.database import APP, DB
from tasks.formats import haproxy
from tasks.formats.releases import (
    FAILED,
    FAILED_HEALTH,
    FAILED_MIGRATIONS,
    RETIRED,
    ROLLED_BACK,
    Records,
    Release,
    other_slot,
    rollback_refusal,
    rollback_target,
)

OVERLAY = "docker-compose.release.yaml"
ONEOFF = "com.docker.compose.oneoff"
REVISION = "org.opencontainers.image.revision"
CREATED = "org.opencontainers.image.created"
WORKERS = {"orangescrum-scheduler": "", "orangescrum-queue": "queue"}  # service -> its profile
MIGRATION_WAIT = 4 * 3600  # the entrypoint bounds each step (MIGRATION_TIMEOUT); this, the whole
# The image's own health check: curl where it has it, busybox wget in the lean image.
HEALTH = (
    'url="http://127.0.0.1:${SERVER_PORT:-8080}$1"; '
    'curl -fsS -o /dev/null "$url" 2>/dev/null || wget -q -O /dev/null "$url"'
)


class RolloutEngine(Protocol):
    """What a rollout needs from the engine beyond ContainerEngine (tasks/engine/rollout.py)."""

    def find(self, name: str) -> Service | None: ...
    def exit_code(self, name: str) -> int | None: ...
    def wait(self, name: str, timeout: int) -> int: ...
    def save_logs(self, name: str, dest: Path) -> None: ...
    def remove(self, name: str) -> None: ...
    def stop(self, name: str, timeout: int) -> None: ...
    def address(self, name: str, network: str) -> str: ...
    def keep_running(self, name: str) -> None: ...
    def ensure_volume(self, name: str, labels: dict[str, str]) -> None: ...
    def image_exists(self, ref: str) -> bool: ...


def now(pipe: Pipeline) -> str:
    return pipe.clock().astimezone(timezone.utc).isoformat(timespec="seconds")


def container(pipe: Pipeline, release: Release) -> str:
    return f"{pipe.settings.compose_project}-{release.container}"


def proxy_volume(pipe: Pipeline) -> str:
    """The proxy's state: no compose project owns it, so backups and restores never see it."""
    return f"{pipe.settings.compose_project}-release-proxy"


def profiles(pipe: Pipeline) -> set[str]:
    return set(pipe.settings.compose_profiles.replace(",", " ").split())


def compose(pipe: Pipeline, *args: str, image: str) -> None:
    """`docker compose` on the bundle and the release overlay, the app at `image`."""
    overrides = {
        "APP_IMAGE": image,
        "PROXY_IMAGE": proxy.inputs(pipe).tag,
        "PROXY_STATE_VOLUME": proxy_volume(pipe),
    }
    overlay = pipe.settings.bundle_dir / OVERLAY
    bundle.compose(pipe, "-f", str(overlay), *args, overrides=overrides)


@dataclass(frozen=True)
class Topology:
    """What of the project runs now."""

    services: tuple[Service, ...]

    @classmethod
    def read(cls, pipe: Pipeline) -> Topology:
        return cls(tuple(pipe.containers.services(pipe.settings.compose_project)))

    @property
    def proxy(self) -> Service | None:
        return next((s for s in self.services if s.service == proxy.SERVICE and s.running), None)

    @property
    def plain(self) -> list[Service]:
        """App containers `doit up` made (not releases): they hold the published port."""
        return [s for s in self.services if s.service == APP and s.labels.get(ONEOFF) != "True"]

    @property
    def running(self) -> bool:
        return any(s.running for s in self.services)

    def has(self, service: str) -> bool:
        return any(s.service == service and s.running for s in self.services)


def candidate(pipe: Pipeline) -> Release:
    """The release the current build makes: the runtime stage's image and the migrations of
    the app it was built from (package/)."""
    inputs = runtime.inputs(pipe)
    image_id = built_image_id(pipe.engine, inputs)
    info = pipe.engine.image(image_id)
    labels = dict(info.labels) if info else {}
    facts = app.facts(pipe)
    return Release(
        key=inputs.key[:12],
        image=inputs.tag,
        image_id=image_id,
        commit=labels.get(REVISION, ""),
        built=labels.get(CREATED, info.created if info else ""),
        health_path=app.health_path(pipe),
        migrations=releases.shipped_migrations(pipe.settings.package_dir, facts),
    )


def log_file(pipe: Pipeline, release: Release, step: str) -> Path:
    return releases.logs_dir(pipe) / f"{release.key}-{step}.log"


# --- the steps --------------------------------------------------------------------------------


def prepare(pipe: Pipeline, rollout: RolloutEngine) -> None:
    """The proxy's state volume exists before any compose call names it."""
    rollout.ensure_volume(proxy_volume(pipe), {"io.durango.proxy": pipe.settings.compose_project})


def start_database(pipe: Pipeline, state: Topology) -> None:
    if not state.running:
        print(
            f"deploy: nothing of {pipe.settings.compose_project} is running; starting it "
            "(database, then this release behind the release proxy)",
            flush=True,
        )
    if bundle.bundled(pipe) and not state.has(DB):
        compose(pipe, "up", "--detach", "--wait", DB, image=f"{pipe.settings.runtime_image}:latest")


def pre_deploy_backup(pipe: Pipeline, no_backup: bool, first: bool) -> str:
    """The backup's folder name ("" without one). A project's first release may have nothing
    to back up yet."""
    if no_backup:
        print("deploy: no pre-deploy backup (--no-backup)", flush=True)
        return ""
    try:
        return backup.take(pipe).name
    except BackupError as exc:
        if first:
            print(f"deploy: no pre-deploy backup: {exc} (the project's first release)")
            return ""
        raise DeployError(
            f"deploy: the pre-deploy backup failed: {exc}; nothing changed (--no-backup deploys "
            "without one)"
        ) from None


def check_migrations_known(pipe: Pipeline, records: Records, release: Release, image: str) -> None:
    """Code never goes back past a migration: a release that does not ship every migration the
    database has applied is refused (deploying an old build is a rollback)."""
    try:
        applied = releases.applied_migrations(pipe, app.facts(pipe), image)
    except DatabaseError:
        return  # nothing deployed holds the database's settings yet: nothing to compare
    refusal = rollback_refusal(records, release, applied)
    if refusal:
        raise DeployError(
            "deploy: " + refusal.replace("rollback to", "deploying", 1) + "; nothing changed"
        )


def migrate(pipe: Pipeline, rollout: RolloutEngine, release: Release) -> None:
    """The release's migrations, once, in a one-shot container under the advisory lock."""
    name = f"{pipe.settings.compose_project}-migrate-{release.key}"
    rollout.remove(name)
    print(f"deploy: migrating with {release.key} (one-shot {name})", flush=True)
    compose(
        pipe, "run", "--detach", "--no-deps", "--name", name, "-e", "APP_ROLE=migrate",
        "-e", "SKIP_MIGRATIONS=false", APP, image=release.image,
    )  # fmt: skip
    try:
        code = rollout.wait(name, MIGRATION_WAIT)
    finally:
        log = log_file(pipe, release, "migrate")
        rollout.save_logs(name, log)
        rollout.remove(name)
    if code != 0:
        raise DeployError(
            f"deploy: the migrations of {release.key} failed (exit {code}); it never received "
            f"traffic and was removed; read {log}"
        )
    print(f"deploy: migrations of {release.key} done (log: {log})", flush=True)


def wait_healthy(pipe: Pipeline, rollout: RolloutEngine, name: str, path: str) -> str | None:
    """None once the container answers its health path with a success; else what went wrong."""
    timeout = pipe.settings.health_timeout
    deadline = time.monotonic() + timeout
    while True:
        code = rollout.exit_code(name)
        if code is not None:
            return f"exited ({code}) before it answered its health check {path}"
        try:
            pipe.containers.exec(name, ["sh", "-c", HEALTH, "sh", path])
            return None
        except EngineError:
            pass
        if time.monotonic() > deadline:
            return f"failed its health check: {path} did not answer a success within {timeout}s"
        time.sleep(1)


def start_release(
    pipe: Pipeline, rollout: RolloutEngine, release: Release, beside: Release | None
) -> str | None:
    """The release's app container, started and healthy: None, or what went wrong."""
    name = container(pipe, release)
    rollout.remove(name)  # a leftover of an interrupted attempt
    what = f"beside {beside.key}" if beside else "(nothing serves yet)"
    print(f"deploy: starting {release.key} {what}; waiting for {release.health_path}", flush=True)
    compose(
        pipe, "run", "--detach", "--no-deps", "--name", name, "-e", "SKIP_MIGRATIONS=true", APP,
        image=release.image,
    )  # fmt: skip
    return wait_healthy(pipe, rollout, name, release.health_path)


def start_proxy(pipe: Pipeline, rollout: RolloutEngine, config: str, state: Topology) -> str:
    """The proxy, started with `config` (moving the published port from a `doit up` app
    container: the one moment without service, once per project); its container ID."""
    project = pipe.settings.compose_project
    volume = proxy_volume(pipe)
    image = proxy.inputs(pipe).tag
    with pipe.containers.helper(image, {volume: proxy.STATE}, project=project) as helper:
        proxy.install(pipe.containers, helper.id, config)
    for plain in state.plain:
        if plain.running:
            print(
                f"deploy: moving the published port from {plain.name} to the release proxy "
                "(once per project: a moment without service)",
                flush=True,
            )
        rollout.stop(plain.name, 30)
        rollout.remove(plain.name)
    compose(pipe, "up", "--detach", "--no-deps", proxy.SERVICE, image=live_image(pipe))
    found = next(
        (s for s in pipe.containers.services(project) if s.service == proxy.SERVICE and s.running),
        None,
    )
    if found is None:
        raise DeployError(f"deploy: the release proxy did not start; read docker logs {project}")
    deadline = time.monotonic() + 30
    while True:
        try:
            proxy.Proxy(pipe.containers, found.id).stats()
            return found.id
        except (EngineError, DeployError):
            if time.monotonic() > deadline:
                raise DeployError(
                    f"deploy: the release proxy does not answer; read docker logs {found.name}"
                ) from None
            time.sleep(0.2)


def live_image(pipe: Pipeline) -> str:
    return live.read(pipe).get("APP_IMAGE") or f"{pipe.settings.runtime_image}:latest"


def move_workers(pipe: Pipeline, release: Release) -> None:
    """The scheduler (and the queue worker of the queue profile) on the release's image."""
    active = profiles(pipe)
    services = [s for s, profile in WORKERS.items() if not profile or profile in active]
    try:
        compose(pipe, "up", "--detach", "--no-deps", *services, image=release.image)
    except EngineError as exc:
        raise DeployError(
            f"deploy: {release.key} serves, but its workers ({', '.join(services)}) did not "
            f"start: {exc}"
        ) from None


def fail(
    pipe: Pipeline, rollout: RolloutEngine, records: Records, release: Release, status: str,
    problem: str,
) -> DeployError:  # fmt: skip
    """Save the failed release's log, remove its container, record it: the error to raise."""
    name = container(pipe, release)
    log = log_file(pipe, release, "start")
    rollout.save_logs(name, log)
    rollout.remove(name)
    releases.save(pipe, records.put(replace(release, status=status, note=problem)))
    return DeployError(
        f"deploy: {release.key} {problem}; it never received traffic and was removed; read {log}"
    )


def go_live(
    pipe: Pipeline,
    rollout: RolloutEngine,
    records: Records,
    release: Release,
    retire_as: str,
    failed_as: str,
) -> Records:
    """Steps 3-5: the release beside the serving one, healthy, traffic moved, the old drained."""
    serving = records.serving()
    slot = other_slot(serving.slot) if serving and serving.slot else "blue"
    name = container(pipe, release)
    problem = start_release(pipe, rollout, release, serving)
    if problem:
        raise fail(pipe, rollout, records, release, failed_as, problem)
    old = container(pipe, serving) if serving else ""
    servers = {slot: name, other_slot(slot): ""}
    config = haproxy.render(servers, enabled=slot)
    state = Topology.read(pipe)
    if state.proxy is None:
        start_proxy(pipe, rollout, config, state)
        drained = f"; {serving.key} stopped" if serving else ""
    else:
        front = proxy.Proxy(pipe.containers, state.proxy.id)
        address = rollout.address(name, f"{pipe.settings.compose_project}_default")
        front.command(haproxy.point(slot, name, address))
        if not front.wait(slot, ready=True, timeout=30):
            front.command(haproxy.retire(slot))
            problem = "was not reachable from the proxy"
            raise fail(pipe, rollout, records, release, failed_as, problem)
        front.install(config)
        drained = ""
        if serving and serving.slot:
            front.command(haproxy.drain(serving.slot))
            finished = front.wait(serving.slot, ready=False, timeout=pipe.settings.drain_timeout)
            front.command(haproxy.retire(serving.slot))
            late = "" if finished else " (drain_timeout reached)"
            drained = f"; {serving.key} drained{late} and stopped"
    rollout.keep_running(name)
    live.write(pipe, {**live.read(pipe), "APP_IMAGE": release.image})
    records = records.went_live(replace(release, slot=slot), now(pipe), retire_as)
    releases.save(pipe, records)
    if old:
        rollout.stop(old, 30)
        rollout.remove(old)
    print(f"deploy: traffic on {release.key}{drained}", flush=True)
    move_workers(pipe, release)
    return records


# --- the commands -----------------------------------------------------------------------------


def deploy(pipe: Pipeline, rollout: RolloutEngine, no_backup: bool = False) -> None:
    release = candidate(pipe)
    with project_lock.held(pipe, "deploy"):
        records = releases.load(pipe)
        serving = records.serving()
        state = Topology.read(pipe)
        prepare(pipe, rollout)
        if serving and serving.key == release.key and state.proxy is not None:
            running = [s for s in state.services if s.name == container(pipe, serving)]
            if running and running[0].running:
                print(f"deploy: {release.key} is serving already; nothing to deploy")
                return
        start_database(pipe, state)
        if serving is not None or state.plain:
            check_migrations_known(pipe, records, release, release.image_id)
        first = serving is None and not state.plain
        taken = pre_deploy_backup(pipe, no_backup, first)
        release = replace(
            release, attempted=now(pipe), backup=taken, status=FAILED, note="deploy did not finish"
        )
        records = records.put(release)
        releases.save(pipe, records)
        try:
            migrate(pipe, rollout, release)
        except DeployError as exc:
            releases.save(pipe, records.put(replace(release, status=FAILED_MIGRATIONS, note="")))
            raise exc from None
        go_live(pipe, rollout, records, release, RETIRED, FAILED_HEALTH)
        backed = f"; pre-deploy backup {taken}" if taken else ""
        print(f"deploy: {release.key} ({release.commit[:12]}) serves{backed}")


def rollback(pipe: Pipeline, rollout: RolloutEngine, to: str = "") -> None:
    with project_lock.held(pipe, "rollback"):
        records = releases.load(pipe)
        target = rollback_target(records, to)
        if isinstance(target, str):
            raise DeployError(f"rollback: {target}; nothing changed")
        serving = records.serving()
        assert serving is not None  # rollback_target said so
        if not rollout.image_exists(target.image_id):
            raise DeployError(
                f"rollback: the image of {target.key} ({target.image}) is no longer on this "
                "engine; nothing changed"
            )
        applied = releases.applied_migrations(pipe, app.facts(pipe), serving.image_id)
        refusal = rollback_refusal(records, target, applied)
        if refusal:
            raise DeployError(f"rollback: {refusal}; nothing changed")
        target = replace(target, attempted=now(pipe))
        prepare(pipe, rollout)
        go_live(pipe, rollout, records, target, ROLLED_BACK, target.status)
        print(
            f"rollback: {target.key} ({target.commit[:12]}) serves again; {serving.key} rolled back"
        )


def resume(pipe: Pipeline, rollout: RolloutEngine) -> bool:
    """Bring a released project back as its records say (what `doit up` and a restore's
    restart must call once a project has releases): the serving release's container, the
    proxy, the workers. False when the project has no release (plain `doit up` applies)."""
    records = releases.load(pipe)
    serving = records.serving()
    if serving is None:
        return False
    state = Topology.read(pipe)
    prepare(pipe, rollout)
    start_database(pipe, state)
    name = container(pipe, serving)
    found = rollout.find(name)
    if found is None or not found.running:
        rollout.remove(name)
        problem = start_release(pipe, rollout, serving, None)
        if problem:
            raise DeployError(f"up: {serving.key} {problem}; docker logs {name}")
        rollout.keep_running(name)
    state = Topology.read(pipe)
    config = haproxy.render({serving.slot: name}, enabled=serving.slot)
    if state.proxy is None:
        start_proxy(pipe, rollout, config, state)
    move_workers(pipe, serving)
    print(f"up: {serving.key} serves behind the release proxy")
    return True


# --- doit tasks -------------------------------------------------------------------------------

NO_BACKUP: Sequence[dict[str, object]] = [
    {"name": "no_backup", "long": "no-backup", "type": bool, "default": False,
     "help": "deploy without the pre-deploy backup"},
]  # fmt: skip


def task(pipe: Pipeline, rollout: RolloutEngine, name: str) -> TaskDict:
    """`deploy` (builds what is stale first) or `rollback`."""
    if name == "deploy":

        def run(no_backup: bool) -> None:
            deploy(pipe, rollout, no_backup)

        doc = "deploy the current build with no downtime: backup, migrate, start, switch, drain"
        return command_task(pipe, doc, run, task_dep=["runtime", "proxy"], params=NO_BACKUP)
    doc = "move traffic back to an earlier release (to=KEY; default: the one before)"
    return command_task(pipe, doc, lambda: rollback(pipe, rollout, pipe.settings.to))
