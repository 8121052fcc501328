"""Fixtures that build real things once: a local base image, git repos, project workspaces, the
local profile's build. A workspace is a copy of the project layout (dodo.py, tasks/, builder/,
orangescrum-ee/) whose Dockerfiles are fast fixtures on a local busybox image, with image names
unique to the test, so tests never see each other's images. Tests run `python -m doit` in it, as
a user would. Shared code is in helpers.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from helpers import (
    BUSYBOX,
    LOCAL_IMAGES,
    POSTGRES,
    REPO,
    STAGES,
    AppRepo,
    Bundle,
    LocalBuild,
    Stack,
    Workspace,
    bundled_compose,
    cakephp_fixture,
    demo_app_repo,
    free_port,
    make_local_project,
    make_workspace,
    new_app_repo,
    remove_images,
)


@pytest.fixture(scope="session")
def engine() -> docker.DockerClient:
    """The real Docker engine; under CI=true its absence is a failure, never a skip."""
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but no Docker engine answers: {exc}", pytrace=False)
        pytest.skip(f"no Docker engine: {exc}")
    return client


@pytest.fixture(scope="session")
def busybox_image(engine: docker.DockerClient) -> str:
    """The local base image, made by the project's own script (no registry needed)."""
    subprocess.run([str(REPO / "scripts" / "make-local-images.sh"), "busybox"], check=True)
    return BUSYBOX


@pytest.fixture
def app_repo(tmp_path: Path) -> AppRepo:
    files = {
        "webroot/index.php": "<?php echo 'hello v1';\n",
        "src/Lib.php": "<?php // library\n",
        "config/app.php": "<?php return ['debug' => false];\n",
    }
    return new_app_repo(tmp_path / "app", files)


@pytest.fixture
def workspace(
    tmp_path: Path, app_repo: AppRepo, engine: docker.DockerClient, busybox_image: str
) -> Iterator[Workspace]:
    ws = make_workspace(tmp_path, app_repo, engine)
    yield ws
    remove_images(engine, ws.prefix)


@pytest.fixture
def built(workspace: Workspace) -> Workspace:
    """A workspace whose whole pipeline has been built once."""
    run = workspace.doit()
    assert run.executed == STAGES, run.out
    return workspace


@pytest.fixture(scope="session")
def local_build(
    tmp_path_factory: pytest.TempPathFactory, engine: docker.DockerClient
) -> LocalBuild:
    subprocess.run([str(REPO / "scripts" / "make-local-images.sh"), "debian"], check=True)
    tmp = tmp_path_factory.mktemp("local")
    app = demo_app_repo(tmp / "demo-app")
    root = make_local_project(tmp / "project", app.path)
    # A secret next to the bundle must never reach the runtime image.
    (root / "orangescrum-ee" / ".env").write_text("DB_PASSWORD=never-in-an-image-7d1e\n")
    ws = Workspace(root, LOCAL_IMAGES, app, engine)
    ws.doit("verify")
    ws.doit("runtime")
    manifest = json.loads((ws.binary.parent / "orangescrum-ee.manifest.json").read_text())
    return LocalBuild(ws, f"{LOCAL_IMAGES}-runtime:latest", manifest)


@pytest.fixture
def stack(local_build: LocalBuild, engine: docker.DockerClient) -> Iterator[Stack]:
    subprocess.run([str(REPO / "scripts" / "make-local-images.sh"), "postgres"], check=True)
    made = Stack(engine, local_build.runtime_image)
    engine.networks.create(made.network)
    yield made
    made.close()


@pytest.fixture(scope="session", name="cakephp_fixture")
def cakephp_fixture_folder() -> Path:
    """The shared CakePHP fixture; its absence is a failure (the tests it serves are required)."""
    found = cakephp_fixture()
    if found is None:
        pytest.fail(
            "the CakePHP fixture (shared/fixtures/cakephp beside this checkout) is missing; "
            "set CAKEPHP_FIXTURE to its folder",
            pytrace=False,
        )
    return found


UNIT = Path(__file__).resolve().parent / "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The folder gives the mark: tests/engine/ needs the Docker engine or outside tools (the
    linters) and carries `engine`, so `pytest -m "not engine"` (or `pytest tests/unit`) runs the
    fast unit tests alone; and they run first. A unit test may not ask for the engine."""
    for item in items:
        if UNIT in item.path.parents:
            if "engine" in getattr(item, "fixturenames", []):
                raise pytest.UsageError(f"{item.nodeid}: a unit test may not use the engine")
        else:
            item.add_marker(pytest.mark.engine)
    items.sort(key=lambda item: item.get_closest_marker("engine") is not None)


@pytest.fixture
def bundle(local_build: LocalBuild, tmp_path: Path) -> Iterator[Bundle]:
    with running_bundle(local_build, tmp_path) as made:
        yield made


@pytest.fixture(scope="module")
def module_bundle(
    local_build: LocalBuild, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bundle]:
    """One bundle for a module's tests that each leave it as they found it (refusals)."""
    with running_bundle(local_build, tmp_path_factory.mktemp("bundle")) as made:
        yield made


@contextlib.contextmanager
def running_bundle(local_build: LocalBuild, tmp_path: Path) -> Iterator[Bundle]:
    """The demo app's bundle with its bundled PostgreSQL, up; down with its volumes after."""
    subprocess.run([str(REPO / "scripts" / "make-local-images.sh"), "postgres"], check=True)
    ws = local_build.workspace
    project = f"durango-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    # what doit passes to compose besides the live state (tasks/deploy/bundle.py compose_env),
    # so that a test's own `docker compose` call starts the same containers
    env = {
        "APP_PORT": str(port),
        "APP_BIND": "127.0.0.1",
        "DB_IMAGE": POSTGRES,
        "APP_IMAGE": local_build.runtime_image,
        "APP_ENV_FILE": str(ws.root / "orangescrum-ee" / ".env.test-bundled"),
    }
    backups = tmp_path / "backups"
    settings = [
        "env_file=orangescrum-ee/.env.test-bundled",
        "compose_profiles=bundled-db",
        f"compose_project={project}",
        f"backup_dir={backups}",
    ]
    compose = bundled_compose(ws.root, project)
    made = Bundle(ws, settings, env, port, compose, backups)
    try:
        made.doit("up")
        yield made
    finally:  # helpers a killed restore left behind hold volumes: remove them first
        helpers = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=io.durango.helper={project}"],
            capture_output=True, text=True,
        ).stdout.split()  # fmt: skip
        if helpers:
            subprocess.run(["docker", "rm", "-f", *helpers], capture_output=True)
        subprocess.run(
            [*compose, "down", "--volumes"], env={**os.environ, **env}, capture_output=True
        )


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("docker-registry")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but Debian's docker-registry is not installed", pytrace=False)
        pytest.skip("docker-registry (Debian package) is not installed")
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    server = subprocess.Popen(
        [binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "registry did not start"
                time.sleep(0.2)
        yield f"127.0.0.1:{port}/team"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def remote_engine(
    tmp_path_factory: pytest.TempPathFactory, engine: docker.DockerClient, busybox_image: str
) -> Iterator[str]:
    if shutil.which("dockerd") is None or os.geteuid() != 0:
        pytest.fail("a second engine needs dockerd and root", pytrace=False)
    root = tmp_path_factory.mktemp("engine2")
    bridge = f"durango-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    subprocess.run(["ip", "addr", "add", "172.31.251.1/24", "dev", bridge], check=True)
    subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
    host = f"tcp://127.0.0.1:{free_port()}"
    daemon = subprocess.Popen(
        [
            "dockerd", "--host", host, "--data-root", str(root / "data"),
            "--exec-root", str(root / "exec"), "--pidfile", str(root / "pid"),
            "--bridge", bridge, "--iptables=false", "--ip-masq=false",
            "--containerd-namespace", bridge, "--containerd-plugins-namespace", f"{bridge}p",
        ],
        stdout=(root / "log").open("w"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                remote = docker.DockerClient(base_url=host)
                remote.ping()
                break
            except (docker.errors.DockerException, OSError):
                assert daemon.poll() is None and time.monotonic() < deadline, (
                    root / "log"
                ).read_text()[-2000:]
                time.sleep(0.5)
        remote.images.load(b"".join(engine.images.get(busybox_image).save(named=True)))
        yield host
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
        subprocess.run(["ip", "link", "del", bridge], check=False)
        shutil.rmtree(root, ignore_errors=True)


UPGRADE = "durango-ci-local-upgrade"
# The demo app's next version: one more migration, slow while a `durango_test_slow` table exists.
UPGRADE_MIGRATION = (
    "CREATE TABLE upgrade_marker (id int);\n"
    "SELECT pg_sleep(CASE WHEN to_regclass('durango_test_slow') IS NULL THEN 0 ELSE 60 END);\n"
)


@pytest.fixture(scope="session")
def upgrade_image(
    tmp_path_factory: pytest.TempPathFactory, engine: docker.DockerClient, local_build: LocalBuild
) -> str:
    """The runtime image of the demo app plus one migration (an upgrade; a long migration)."""
    tmp = tmp_path_factory.mktemp("upgrade")
    app = demo_app_repo(tmp / "app")
    app.write("config/Migrations/20240501000000_AddUpgradeMarker.sql", UPGRADE_MIGRATION)
    app.commit("upgrade")
    ws = Workspace(make_local_project(tmp / "project", app.path, UPGRADE), UPGRADE, app, engine)
    ws.doit("runtime")
    return f"{UPGRADE}-runtime:latest"
