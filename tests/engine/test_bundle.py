"""The deployment bundle against a real PostgreSQL: migrate, seed exactly once, survive restarts
and recreation, refuse to serve a half-migrated schema, keep secrets out of logs and images.
The app is examples/demo-app in a genuine FrankenPHP built by the local profile."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from datetime import datetime
from pathlib import Path

import docker
from helpers import (
    LOCAL_IMAGES,
    POSTGRES,
    REPO,
    LocalBuild,
    Stack,
    Workspace,
    assert_migrated_and_seeded,
    bundled_compose,
    demo_app_repo,
    free_port,
    http,
    make_local_project,
    sql,
    wait_exit,
    wait_healthy,
)


def test_external_database_container_migrates_seeds_and_survives_recreate(stack: Stack) -> None:
    db = stack.database()
    app, port = stack.app()
    wait_healthy(app, port)
    assert_migrated_and_seeded(db)
    assert "Database seeding: done (12 rows in actions;" in app.logs().decode()

    status, body = http(port, "/api/actions", {"name": "added-after-seed"})
    assert status == 201 and json.loads(body)["id"] == 13  # sequences were reset past the seeds

    app.restart()
    wait_healthy(app, port)
    assert "Database seeding: skipped (seeded already" in app.logs().decode()
    app.remove(force=True, v=True)
    stack.containers.remove(app)
    again, port = stack.app()
    wait_healthy(again, port)
    assert sql(db, "SELECT count(*) FROM actions") == "13"
    assert "Database seeding: skipped (seeded already" in again.logs().decode()


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
    assert sum("Database seeding: skipped (seeded already" in log for log in logs) == 2


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
        assert "Database seeding: skipped (seeded already" in logs
    finally:
        subprocess.run(
            [*compose, "down", "--volumes"],
            env={**os.environ, **env},
            capture_output=True,
            check=False,
        )


def test_queue_worker_starts_after_migrations(local_build: LocalBuild) -> None:
    ws = local_build.workspace
    project = f"durango-test-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "APP_PORT": str(free_port()),
        "APP_BIND": "127.0.0.1",
        "DB_IMAGE": POSTGRES,
        "APP_IMAGE": local_build.runtime_image,
    }
    compose = [*bundled_compose(ws.root, project), "--profile", "queue"]
    try:
        up = subprocess.run([*compose, "up", "--detach", "--wait"], env=env, capture_output=True)
        assert up.returncode == 0, up.stderr.decode()[-2000:]

        def inspect(service: str) -> dict:
            container = subprocess.run(
                [*compose, "ps", "-q", service], env=env, capture_output=True, text=True
            ).stdout.strip()
            return json.loads(
                subprocess.run(["docker", "inspect", container], capture_output=True).stdout
            )[0]

        app, queue = inspect("orangescrum-app"), inspect("orangescrum-queue")
        first_healthy = min(
            probe["End"] for probe in app["State"]["Health"]["Log"] if probe["ExitCode"] == 0
        )
        assert moment(queue["State"]["StartedAt"]) > moment(first_healthy)  # after migrations
        assert queue["State"]["Health"]["Status"] == "healthy"
        logs = subprocess.run(
            [*compose, "logs", "orangescrum-queue"], env=env, capture_output=True, text=True
        ).stdout
        assert "Server: starting the queue worker" in logs and "Migrations" not in logs
    finally:
        subprocess.run([*compose, "down", "--volumes"], env=env, capture_output=True)


def moment(stamp: str) -> datetime:
    """The engine's RFC 3339 time with nanoseconds, to the microsecond."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(whole).replace(microsecond=int((fraction + "000000")[:6]))
