"""The deployment bundle against a real PostgreSQL: migrate, seed exactly once, survive restarts
and recreation, refuse to serve a half-migrated schema, keep secrets out of logs and images.
The app is examples/demo-app in a genuine FrankenPHP built by the local profile."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest
from conftest import (
    LOCAL_IMAGES,
    REPO,
    LocalBuild,
    Workspace,
    bundled_compose,
    demo_app_repo,
    make_local_project,
)
from docker.models.containers import Container

POSTGRES = "durango-local/postgres:15"
DB = {"user": "orangescrum_test", "password": "test-only-3f9a1c", "name": "orangescrum_test"}
SALT = "test-only-salt-0123456789abcdef0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(port: int, path: str, data: dict[str, str] | None = None) -> tuple[int, str]:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", data=body, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@dataclass
class Stack:
    """Containers and a network made for one test, removed afterwards."""

    engine: docker.DockerClient
    image: str
    network: str = field(default_factory=lambda: f"durango-test-{uuid.uuid4().hex[:8]}")
    containers: list[Container] = field(default_factory=list)

    def database(self, alias: str = "orangescrum-test-db", publish: int | None = None) -> Container:
        container = self.engine.containers.run(
            POSTGRES,
            detach=True,
            name=f"{self.network}-db-{len(self.containers)}",
            network=self.network,
            environment={
                "POSTGRES_USER": DB["user"],
                "POSTGRES_PASSWORD": DB["password"],
                "POSTGRES_DB": DB["name"],
            },
            ports={"5432/tcp": ("0.0.0.0", publish)} if publish else {},
        )
        self.engine.networks.get(self.network).disconnect(container)
        self.engine.networks.get(self.network).connect(container, aliases=[alias])
        self.containers.append(container)
        return container

    def app(
        self, env: dict[str, str] | None = None, image: str | None = None
    ) -> tuple[Container, int]:
        port = free_port()
        environment = {
            "DB_HOST": "orangescrum-test-db",
            "DB_NAME": DB["name"],
            "DB_USERNAME": DB["user"],
            "DB_PASSWORD": DB["password"],
            "SECURITY_SALT": SALT,
            "DB_WAIT_TIMEOUT": "60",
            **(env or {}),
        }
        container = self.engine.containers.run(
            image or self.image,
            detach=True,
            name=f"{self.network}-app-{len(self.containers)}",
            network=self.network,
            environment=environment,
            ports={"8080/tcp": ("127.0.0.1", port)},
            extra_hosts={"host.docker.internal": "host-gateway"},
        )
        self.containers.append(container)
        return container, port

    def close(self) -> None:
        for container in self.containers:
            container.remove(force=True)
        self.engine.networks.get(self.network).remove()


def sql(db: Container, query: str) -> str:
    code, out = db.exec_run(["psql", "-U", DB["user"], "-d", DB["name"], "-Atc", query])
    assert code == 0 and isinstance(out, bytes), out
    return out.decode().strip()


def wait_healthy(container: Container, port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container.reload()
        if container.status == "exited":
            raise AssertionError(f"app exited:\n{container.logs().decode()}")
        try:
            if http(port, "/home/healthcheck")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"app not healthy in {timeout}s:\n{container.logs().decode()}")


def wait_exit(container: Container, timeout: float = 120) -> tuple[int, str]:
    status = container.wait(timeout=timeout)
    return int(status["StatusCode"]), container.logs().decode()


@pytest.fixture
def stack(local_build: LocalBuild, engine: docker.DockerClient) -> Iterator[Stack]:
    subprocess.run([str(REPO / "scripts" / "make-local-images.sh"), "postgres"], check=True)
    made = Stack(engine, local_build.runtime_image)
    engine.networks.create(made.network)
    yield made
    made.close()


def assert_migrated_and_seeded(db: Container) -> None:
    assert sql(db, "SELECT count(*) FROM phinxlog") == "3"
    assert sql(db, "SELECT count(*) FROM gitsync_phinxlog") == "1"
    assert sql(db, "SELECT count(*) FROM actions") == "12"


def test_external_database_container_migrates_seeds_and_survives_recreate(stack: Stack) -> None:
    db = stack.database()
    app, port = stack.app()
    wait_healthy(app, port)
    assert_migrated_and_seeded(db)
    assert "Database seeding: done (12 rows in actions)" in app.logs().decode()

    status, body = http(port, "/api/actions", {"name": "added-after-seed"})
    assert status == 201 and json.loads(body)["id"] == 13  # sequences were reset past the seeds

    app.restart()
    wait_healthy(app, port)
    assert "Database seeding: skipped (actions has 13 rows)" in app.logs().decode()
    app.remove(force=True)
    stack.containers.remove(app)
    again, port = stack.app()
    wait_healthy(again, port)
    assert sql(db, "SELECT count(*) FROM actions") == "13"
    assert "Database seeding: skipped (actions has 13 rows)" in again.logs().decode()


def test_external_database_through_host_gateway(stack: Stack) -> None:
    published = free_port()
    db = stack.database(alias="unused-alias", publish=published)
    app, port = stack.app({"DB_HOST": "host.docker.internal", "DB_PORT": str(published)})
    wait_healthy(app, port)
    assert_migrated_and_seeded(db)


def test_three_replicas_on_an_empty_database_seed_once(stack: Stack) -> None:
    db = stack.database()
    started = [stack.app() for _ in range(3)]
    for app, port in started:
        wait_healthy(app, port)
    assert sql(db, "SELECT count(*) FROM actions") == "12"
    logs = [app.logs().decode() for app, _ in started]
    assert sum("Database seeding: done" in log for log in logs) == 1
    assert sum("Database seeding: skipped (actions has 12 rows)" in log for log in logs) == 2


def test_app_waits_for_a_database_that_comes_up_late(stack: Stack) -> None:
    app, port = stack.app({"DB_WAIT_TIMEOUT": "90"})
    time.sleep(8)
    db = stack.database()
    wait_healthy(app, port)
    assert_migrated_and_seeded(db)


def test_database_that_never_comes_up_fails_after_the_timeout(stack: Stack) -> None:
    app, _ = stack.app({"DB_HOST": "no-such-database", "DB_WAIT_TIMEOUT": "6"})
    code, logs = wait_exit(app, timeout=60)
    assert code != 0
    assert "no-such-database:5432 did not accept connections within 6s" in logs


def test_wrong_password_is_a_clear_message_without_the_secret(stack: Stack) -> None:
    stack.database()
    app, _ = stack.app({"DB_PASSWORD": "wrong-secret-5b2e"})
    code, logs = wait_exit(app)
    assert code != 0
    assert "cannot log in to orangescrum-test-db:5432/orangescrum_test" in logs
    assert "wrong-secret-5b2e" not in logs


def test_placeholder_settings_are_refused_one_line_each(stack: Stack) -> None:
    app, _ = stack.app({"DB_PASSWORD": "change-me", "SECURITY_SALT": "change-me-to-at-least-32"})
    code, logs = wait_exit(app)
    assert code != 0
    assert "Settings: DB_PASSWORD still has its placeholder value" in logs
    assert "Settings: SECURITY_SALT still has its placeholder value" in logs


def test_runtime_image_runs_as_non_root_and_holds_no_env_file(
    local_build: LocalBuild, engine: docker.DockerClient
) -> None:
    uid = engine.containers.run(local_build.runtime_image, entrypoint=["id", "-u"], remove=True)
    assert uid.decode().strip() == "10001"
    saved = b"".join(engine.images.get(local_build.runtime_image).save())
    assert b"never-in-an-image-7d1e" not in saved


def test_failing_migration_stops_the_container_before_serving(
    stack: Stack, tmp_path: Path, engine: docker.DockerClient
) -> None:
    app_repo = demo_app_repo(tmp_path / "broken-app")
    app_repo.write(
        "config/Migrations/20240301000000_Broken.sql",
        "CREATE TABLE half_done (id int);\nSELEC 1;\n",
    )
    app_repo.commit("broken migration")
    prefix = f"{LOCAL_IMAGES}-broken"
    ws = Workspace(
        make_local_project(tmp_path / "project", app_repo.path, prefix), prefix, app_repo, engine
    )
    ws.doit("runtime")
    db = stack.database()
    app, _ = stack.app(image=f"{prefix}-runtime:latest")
    code, logs = wait_exit(app)
    assert code != 0
    assert "Migrations: failed; not starting on a half-migrated schema" in logs
    assert "Server: listening" not in logs
    assert sql(db, "SELECT to_regclass('half_done') IS NULL") == "t"


def test_bundled_database_profile_with_doit_up_and_down(local_build: LocalBuild) -> None:
    ws = local_build.workspace
    port = free_port()
    project = f"durango-test-{uuid.uuid4().hex[:8]}"
    env = {
        "APP_PORT": str(port),
        "APP_BIND": "127.0.0.1",
        "DB_IMAGE": POSTGRES,
    }
    subprocess.run([str(REPO / "scripts" / "make-local-images.sh"), "postgres"], check=True)
    settings = [
        "env_file=orangescrum-ee/.env.test-bundled",
        "compose_profiles=bundled-db",
        f"compose_project={project}",
    ]
    compose = bundled_compose(ws.root, project)
    try:
        up = ws.doit("up", *settings, env=env)
        assert "runtime" in up.uptodate
        assert http(port, "/home/healthcheck")[0] == 200
        assert http(port, "/api/actions", {"name": "kept-across-down"})[0] == 201

        ws.doit("down", *settings, env=env)
        ws.doit("up", *settings, env=env)
        status, body = http(port, "/api/actions")
        assert status == 200
        names = [row["name"] for row in json.loads(body)]
        assert len(names) == 13 and "kept-across-down" in names
        logs = subprocess.run(
            [*compose, "logs", "orangescrum-app"],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            check=True,
        ).stdout
        assert "Database seeding: skipped (actions has 13 rows)" in logs
    finally:
        subprocess.run(
            [*compose, "down", "--volumes"],
            env={**os.environ, **env},
            capture_output=True,
            check=False,
        )
