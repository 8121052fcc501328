"""`doit deploy`, `doit releases` and `doit rollback` on one host, against the real engine: the
demo app built by the local profile, the bundled PostgreSQL, the release proxy.

One project goes through a story, in order (each test leans on the one before):
  1. deploy with nothing running: it starts the bundle, then the release behind the proxy;
  2. 4 clients keep asking `/` and `/home/healthcheck` through the published port while a new
     release deploys, a release whose migration fails and one whose health check fails are
     refused, and a rollback goes back: every answer is a 200, no connection fails;
  3. a rollback with no earlier release, and a deploy of what serves, change nothing;
  4. a rollback past a migration is refused, naming the pre-deploy backup to restore instead.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest
from helpers import (
    POSTGRES,
    REPO,
    AppRepo,
    Run,
    Workspace,
    demo_app_repo,
    free_port,
    git,
    make_local_project,
    remove_images,
)

PATHS = ("/", "/home/healthcheck")


class Load:
    """4 clients, each on its own keep-alive connection, asking PATHS in turn until stopped;
    every answer's status and every connection error counted."""

    def __init__(self, port: int, clients: int = 4) -> None:
        self.port = port
        self.stop = threading.Event()
        self.statuses: Counter[int] = Counter()
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(clients)]

    def client(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        n = 0
        while not self.stop.is_set():
            path = PATHS[n % len(PATHS)]
            n += 1
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                with self.lock:
                    self.errors.append(f"{time.strftime('%H:%M:%S')} {path}: {exc!r}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                continue
            with self.lock:
                self.statuses[status] += 1
        conn.close()

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def failures(self) -> str:
        bad = {s: n for s, n in self.statuses.items() if s != 200}
        return f"non-200 answers {bad}, connection errors {self.errors[:10]}"


@dataclass
class Project:
    ws: Workspace
    name: str
    port: int
    backups: Path
    settings: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {"APP_PORT": str(self.port), "APP_BIND": "127.0.0.1", "DB_IMAGE": POSTGRES}

    def doit(self, *args: str, check: bool = True) -> Run:
        return self.ws.doit(*args, *self.settings, env=self.env, check=check)

    @property
    def app(self) -> AppRepo:
        return self.ws.app

    def release_containers(self) -> list[str]:
        found = subprocess.run(
            ["docker", "ps", "-a", "--filter", f"name=^{self.name}-app-", "--format", "{{.Names}}"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return sorted(found.stdout.split())

    def records(self) -> list[dict[str, object]]:
        path = self.ws.root / ".durango" / "releases" / f"{self.name}.json"
        data = json.loads(path.read_text())
        releases: list[dict[str, object]] = data["releases"]
        return releases

    def serving(self) -> dict[str, object]:
        return next(r for r in self.records() if r["status"] == "serving")

    def get(self, path: str) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()


def last_line(run: Run) -> str:
    lines = [line for line in run.out.splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory, engine: docker.DockerClient
) -> Iterator[Project]:
    for image in ("debian", "postgres"):
        subprocess.run([str(REPO / "scripts" / "make-local-images.sh"), image], check=True)
    tmp = tmp_path_factory.mktemp("deploy")
    app = demo_app_repo(tmp / "demo-app")
    prefix = f"durango-test-deploy-{uuid.uuid4().hex[:8]}"
    config = f'proxy_image = "{prefix}-proxy"\nhealth_timeout = 60\ndrain_timeout = 30\n'
    root = make_local_project(tmp / "project", app.path, prefix, extra_config=config)
    name = prefix
    backups = tmp / "backups"
    made = Project(Workspace(root, prefix, app, engine), name, free_port(), backups)
    made.settings = [
        "env_file=orangescrum-ee/.env.test-bundled",
        "compose_profiles=bundled-db",
        f"compose_project={name}",
        f"backup_dir={backups}",
    ]
    try:
        yield made
    finally:
        bundle = root / "orangescrum-ee"
        compose = [
            "docker", "compose", "-p", name, "-f", str(bundle / "docker-compose.yaml"),
            "-f", str(bundle / "docker-compose.release.yaml"),
            "--env-file", str(bundle / ".env.test-bundled"), "--profile", "bundled-db",
        ]  # fmt: skip
        env = {**os.environ, **made.env, "PROXY_STATE_VOLUME": f"{name}-release-proxy"}
        down = [*compose, "down", "--volumes", "--remove-orphans"]  # the releases are one-offs
        subprocess.run(down, env=env, capture_output=True)
        leftovers = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"name=^{name}-"], capture_output=True, text=True
        ).stdout.split()
        if leftovers:
            subprocess.run(["docker", "rm", "-f", *leftovers], capture_output=True)
            subprocess.run(down, env=env, capture_output=True)
        subprocess.run(["docker", "volume", "rm", f"{name}-release-proxy"], capture_output=True)
        remove_images(engine, prefix)


def version(project: Project, text: str) -> None:
    project.app.write("VERSION", text + "\n")
    project.app.commit(f"version {text}")


def test_deploy_with_no_bundle_running_starts_it_then_serves_behind_the_proxy(
    project: Project,
) -> None:
    run = project.doit("deploy")
    assert "nothing of" in run.out and "is running; starting it" in run.out, run.out
    status, body = project.get("/")
    assert status == 200 and "demo-app 1.0.0" in body, body
    serving = project.serving()
    assert project.release_containers() == [f"{project.name}-app-{serving['key']}"]
    listing = project.doit("releases").out
    assert str(serving["key"]) in listing and "serving" in listing, listing
    live = (project.ws.root / ".durango" / "live" / f"{project.name}.env").read_text()
    assert f"APP_IMAGE={serving['image']}" in live


def test_deploys_refused_releases_and_a_rollback_fail_no_request(project: Project) -> None:
    first = project.serving()
    with Load(project.port) as load:
        time.sleep(3)
        version(project, "2.0.0")
        deployed = project.doit("deploy")
        assert "pre-deploy backup" in deployed.out, deployed.out
        second = project.serving()
        assert second["key"] != first["key"]
        assert "demo-app 2.0.0" in project.get("/")[1]

        # a release whose migration fails: never serves, removed, one line naming the log
        project.app.write("config/Migrations/20240301000000_Broken.sql", "SELECT 1/0;\n")
        project.app.commit("a migration that fails")
        broken = project.doit("deploy", check=False)
        assert broken.code != 0
        line = last_line(broken)
        assert "migrations of" in line and "failed" in line and "read " in line, broken.out
        assert Path(line.rsplit("read ", 1)[1].split()[0]).is_file(), line
        assert project.serving()["key"] == second["key"]
        git(project.app.path, "revert", "--no-edit", "HEAD")

        # a release whose health check fails: never serves, removed, one line naming the log
        index = project.app.path / "webroot" / "index.php"
        good = "json(200, ['status' => 'ok', 'database' => 'ok']);"
        index.write_text(index.read_text().replace(good, "json(503, ['status' => 'broken']);"))
        project.app.commit("a health check that fails")
        sick = project.doit("deploy", check=False)
        assert sick.code != 0
        line = last_line(sick)
        assert "health check" in line and "never received traffic" in line, sick.out
        assert Path(line.rsplit("read ", 1)[1].split()[0]).is_file(), line
        assert project.serving()["key"] == second["key"]
        assert project.release_containers() == [f"{project.name}-app-{second['key']}"]
        git(project.app.path, "revert", "--no-edit", "HEAD")

        back = project.doit("rollback")
        assert project.serving()["key"] == first["key"], back.out
        assert "demo-app 1.0.0" in project.get("/")[1]
        time.sleep(3)
    total = sum(load.statuses.values())
    print(f"\nload: {total} answers {dict(load.statuses)}, {len(load.errors)} connection errors")
    assert total > 200, load.failures()
    assert set(load.statuses) == {200} and not load.errors, load.failures()
    statuses = {str(r["key"]): str(r["status"]) for r in project.records()}
    assert statuses[str(first["key"])] == "serving"
    assert statuses[str(second["key"])] == "rolled back"
    assert list(statuses.values()).count("failed: migrations") == 1, statuses
    assert list(statuses.values()).count("failed: health check") == 1, statuses


def test_a_rollback_with_no_earlier_release_and_a_redeploy_change_nothing(
    project: Project,
) -> None:
    before = project.records()
    run = project.doit("rollback", check=False)
    assert run.code != 0
    assert "no earlier release" in last_line(run) and "nothing changed" in last_line(run)
    assert project.records() == before
    git(project.app.path, "reset", "--hard", "HEAD~5")  # the first release's tree
    again = project.doit("deploy")
    assert "is serving already; nothing to deploy" in again.out, again.out
    assert project.records() == before


def test_a_rollback_past_a_migration_is_refused_naming_the_pre_deploy_backup(
    project: Project,
) -> None:
    first = project.serving()
    notes = "CREATE TABLE notes (id integer PRIMARY KEY, body text NOT NULL);\n"
    project.app.write("config/Migrations/20240401000000_CreateNotes.sql", notes)
    project.app.commit("a new table")
    project.doit("deploy")
    third = project.serving()
    assert third["backup"], third
    refused = project.doit("rollback", f"to={first['key']}", check=False)
    assert refused.code != 0
    line = last_line(refused)
    assert "refused" in line and "20240401000000" in line, refused.out
    assert f"doit restore --from {third['backup']}" in line, line
    assert (project.backups / str(third["backup"]) / "manifest.json").is_file()
    assert project.serving()["key"] == third["key"]
    assert project.get("/")[0] == 200
