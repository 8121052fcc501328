"""A genuine CakePHP 5 application (the shared fixture: cakephp/migrations on phinx, a plugin with
its own migration, seeds, pg_config files) built offline with its Composer dependencies from an
artifact repository, then deployed through the bundle against a real PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import time
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from http.cookiejar import CookieJar
from pathlib import Path

import docker
import pytest
from docker.models.images import Image
from helpers import (
    LOCAL_IMAGES,
    POSTGRES,
    REPO,
    SALT,
    AppRepo,
    Run,
    Stack,
    Workspace,
    assert_migrated_and_seeded,
    bundled_compose,
    cakephp_app_repo,
    copy_tree_writable,
    doit_time,
    free_port,
    http,
    make_local_project,
    remove_images,
    sql,
    wait_healthy,
)

CAKEPHP_IMAGES = "durango-ci-cakephp"

# Pages the tests add to the app: a session counter, an upload sink, a fatal error, a writer.
PROBES = {
    "webroot/probe-session.php": (
        "<?php session_start(); $_SESSION['n'] = ($_SESSION['n'] ?? 0) + 1;\n"
        "header('Content-Type: text/plain'); echo $_SESSION['n'];\n"
    ),
    "webroot/probe-upload.php": (
        "<?php header('Content-Type: application/json'); $f = $_FILES['file'] ?? [];\n"
        "echo json_encode(['error' => $f['error'] ?? -1, 'size' => $f['size'] ?? 0,\n"
        "    'sha256' => ($f['error'] ?? 1) === 0 ? hash_file('sha256', $f['tmp_name']) : null]);\n"
    ),
    "webroot/probe-fatal.php": "<?php durango_probe_undefined_function_7f3a();\n",
    "webroot/probe-write.php": (
        "<?php $name = basename($_GET['name']);\n"
        "file_put_contents(__DIR__ . '/files/' . $name, $_GET['content']);\n"
        "file_put_contents(dirname(__DIR__) . '/logs/error.log',\n"
        "    date('c') . \" probe: wrote $name\\n\", FILE_APPEND);\n"
        "echo 'ok';\n"
    ),
}


@dataclass
class CakeBuild:
    workspace: Workspace
    runtime_image: str
    first_run: Run
    fixture: Path


def cake_project(tmp: Path, app: AppRepo, fixture: Path, prefix: str, extra: str = "") -> Path:
    """A project building the CakePHP app with no network for the embed step, its packages
    from the fixture's artifact repository instead of Packagist."""
    config = (
        f'composer_repository = "{fixture / "composer-repo"}"\n'
        "composer_packagist = false\n"
        'embed_network = "none"\n' + extra
    )
    facts = Path(__file__).resolve().parents[1] / "fixtures" / "cakephp-app.toml"
    return make_local_project(tmp, app.path, prefix, config, facts=facts)


@pytest.fixture(scope="session")
def cakephp(
    tmp_path_factory: pytest.TempPathFactory, engine: docker.DockerClient, cakephp_fixture: Path
) -> CakeBuild:
    tmp = tmp_path_factory.mktemp("cakephp")
    app = cakephp_app_repo(tmp / "app", cakephp_fixture)
    for rel, text in PROBES.items():
        app.write(rel, text)
    app.commit("test probes")
    root = cake_project(tmp / "project", app, cakephp_fixture, CAKEPHP_IMAGES)
    ws = Workspace(root, CAKEPHP_IMAGES, app, engine)
    first = ws.doit("verify")
    ws.doit("runtime")
    return CakeBuild(ws, f"{CAKEPHP_IMAGES}-runtime:latest", first, cakephp_fixture)


@pytest.fixture
def cake_stack(cakephp: CakeBuild, stack: Stack) -> Stack:
    stack.image = cakephp.runtime_image
    return stack


def test_cakephp_builds_offline_from_an_artifact_repository(cakephp: CakeBuild) -> None:
    binary = cakephp.workspace.binary
    version = subprocess.run(
        [str(binary), "php-cli", "bin/cake.php", "version"],
        capture_output=True,
        text=True,
        env={**os.environ, "SECURITY_SALT": SALT},
    )
    assert version.stdout.strip() == "5.0.11", version.stdout + version.stderr
    # dependencies came from the artifact repository in their own step, scripts off, plugins on
    # (or an earlier run on this engine built the same key: doit finds that image up to date)
    out = cakephp.first_run.out
    assert any(
        said in out
        for said in ("deps: composer install: 28 packages", "dependencies reused", "\n-- embed\n")
    ), out
    app_dir = Path(
        subprocess.run(
            [str(binary), "php-cli", ".frankenphp/app-path.php"], capture_output=True, text=True
        ).stdout.strip()
    )
    # the vendor plugins are listed (the app's own, in plugins/, are found by CakePHP there)
    assert "Migrations" in (app_dir / "vendor" / "cakephp-plugins.php").read_text()
    assert not (app_dir / "config" / "app_local.php").exists()  # post-install-cmd never ran
    manifest = json.loads(binary.with_name("orangescrum-ee.manifest.json").read_text())
    assert {"mysqli", "pdo_mysql", "opcache", "pdo_pgsql"} <= set(manifest["extensions"])


def test_bundle_migrates_seeds_and_serves_the_cakephp_app(cake_stack: Stack) -> None:
    db = cake_stack.database()
    app, port = cake_stack.app()
    wait_healthy(app, port)
    assert http(port, "/home/healthcheck") == (200, '{"status":"ok","database":"up"}')
    assert_migrated_and_seeded(db)
    assert sql(db, "SELECT state FROM durango_seed") == "done"
    assert sql(db, "INSERT INTO actions (name) VALUES ('added') RETURNING id").startswith("13")
    app.restart()
    wait_healthy(app, port)
    logs = app.logs().decode()
    assert logs.count("Database seeding: done") == 1
    assert "Database seeding: skipped (seeded already" in logs
    assert sql(db, "SELECT count(*) FROM actions") == "13"


def test_three_cakephp_replicas_migrate_and_seed_exactly_once(cake_stack: Stack) -> None:
    db = cake_stack.database()
    started = [cake_stack.app() for _ in range(3)]
    for app, port in started:
        wait_healthy(app, port)
    logs = [app.logs().decode() for app, _ in started]
    assert sum("Database seeding: done" in log for log in logs) == 1
    assert sum("Database seeding: skipped (seeded already" in log for log in logs) == 2
    assert sql(db, "SELECT count(*) FROM actions") == "12"
    assert sql(db, "SELECT count(*) FROM phinxlog") == "3"


def test_sessions_uploads_and_fatal_errors_in_the_runtime_container(cake_stack: Stack) -> None:
    cake_stack.database()
    app, port = cake_stack.app()
    wait_healthy(app, port)
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    counts = [
        opener.open(f"http://127.0.0.1:{port}/probe-session.php", timeout=10).read().decode()
        for _ in range(3)
    ]
    assert counts == ["1", "2", "3"]  # the session persists with its cookie

    payload = secrets.token_bytes(3 * 1024 * 1024)
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/probe-upload.php",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
    assert answer == {
        "error": 0,
        "size": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }

    assert http(port, "/probe-fatal.php")[0] == 500
    deadline = time.monotonic() + 10
    while "durango_probe_undefined_function_7f3a" not in app.logs().decode():
        assert time.monotonic() < deadline, app.logs().decode()[-2000:]
        time.sleep(0.5)
    assert "Fatal error" in app.logs().decode()


# --- the dependency step: reused for app changes, rerun for lock changes; token never stored ----


def make_package_zip(folder: Path, name: str, version: str) -> Path:
    """A tiny Composer package as an artifact zip (composer.json with a version, one class)."""
    zip_path = folder / f"{name.replace('/', '-')}-{version}.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr(
            "composer.json",
            json.dumps(
                {
                    "name": name,
                    "version": version,
                    "autoload": {"psr-4": {"DurangoTest\\Hello\\": "src/"}},
                }
            ),
        )
        archive.writestr(
            "src/Greeting.php",
            "<?php\nnamespace DurangoTest\\Hello;\nfinal class Greeting {\n"
            "    public static function text(): string { return 'hello from a new package'; }\n}\n",
        )
    return zip_path


def require_package(
    engine: docker.DockerClient, base_image: str, app: Path, repository: Path, package: str
) -> None:
    """`composer require` the package into the app's composer.json and lock (with no package,
    install vendor/ from the lock), offline, with the composer and PHP of the base image (same
    extensions as the binary)."""
    command = f"composer require {package} --no-install" if package else "composer install --no-dev"
    script = (
        "export COMPOSER_HOME=/tmp/ch COMPOSER_ALLOW_SUPERUSER=1 && "
        "composer config -g repo.packagist false && "
        'composer config -g repositories.t \'{"type":"artifact","url":"/composer-repo"}\' && '
        f"cd /app && {command} --no-scripts --no-interaction -q"
    )
    engine.containers.run(
        base_image,
        ["sh", "-c", script],
        volumes={
            str(app): {"bind": "/app", "mode": "rw"},
            str(repository): {"bind": "/composer-repo"},
        },
        network_mode="none",
        remove=True,
    )


def deps_step_seconds(run: Run) -> float:
    """How long BuildKit spent on the dependency step (0 when it reused the layer)."""
    step = re.search(r"^embed \| #(\d+) \[.*\] RUN .*install-deps", run.out, re.M)
    assert step, run.out[-3000:]
    if re.search(rf"^embed \| #{step.group(1)} CACHED$", run.out, re.M):
        return 0.0
    done = re.search(rf"^embed \| #{step.group(1)} DONE ([\d.]+)s$", run.out, re.M)
    assert done, run.out[-3000:]
    return float(done.group(1))


@dataclass
class DepsRuns:
    workspace: Workspace
    app_change: Run
    info_before_lock_change: str
    lock_change: Run
    token: str


@pytest.fixture(scope="module")
def deps_runs(
    cakephp: CakeBuild, tmp_path_factory: pytest.TempPathFactory, engine: docker.DockerClient
) -> Iterator[DepsRuns]:
    """A second checkout of the app: one app-only commit, then one lock change, both built with
    a fake Composer token given as composer_auth."""
    tmp = tmp_path_factory.mktemp("deps")
    app = AppRepo(tmp / "app")
    shutil.copytree(cakephp.workspace.app.path, app.path)
    token = f"fake-token-{uuid.uuid4().hex[:12]}"
    auth = tmp / "auth.json"
    auth.write_text(
        json.dumps({"http-basic": {"repo.example.invalid": {"username": "ci", "password": token}}})
    )
    repository = tmp / "composer-repo"
    copy_tree_writable(cakephp.fixture / "composer-repo", repository)
    prefix = f"{CAKEPHP_IMAGES}-deps"
    root = cake_project(
        tmp / "project",
        app,
        cakephp.fixture,
        prefix,
        f'composer_auth = "{auth}"\n',
    )
    ws = Workspace(root, prefix, app, engine)
    try:
        ws.doit("verify")  # same inputs as the session build: BuildKit's layers are reused
        controller = "src/Controller/PagesController.php"
        app.write(controller, (app.path / controller).read_text() + f"\n// change {uuid.uuid4()}\n")
        app.commit("app-only change")
        app_change = ws.doit("verify")

        make_package_zip(repository, "durango-test/hello", "1.0.0")
        base_image = f"{LOCAL_IMAGES}-base:latest"
        require_package(engine, base_image, app.path, repository, "durango-test/hello:1.0.0")
        app.commit("require durango-test/hello")
        ws.doit("archive", f"composer_repository={repository}")
        info = ws.doit("info", "embed", f"composer_repository={repository}", check=False).out
        lock_change = ws.doit("verify", f"composer_repository={repository}")
        yield DepsRuns(ws, app_change, info, lock_change, token)
    finally:
        remove_images(engine, f"{prefix}-embed")


def test_app_only_commit_reuses_dependencies_and_is_faster_than_a_lock_change(
    deps_runs: DepsRuns,
) -> None:
    app_change, lock_change = deps_runs.app_change, deps_runs.lock_change
    # An app-only commit never touches the embed image: the app is appended to its binary.
    assert re.search(r"^-- embed$", app_change.out, re.M), app_change.out
    assert "deps: composer install" not in app_change.out
    assert "deps/composer.lock changed" in deps_runs.info_before_lock_change
    assert "deps: composer install: 29 packages" in lock_change.out
    assert deps_step_seconds(lock_change) > 0.3
    times = doit_time(app_change), doit_time(lock_change)
    print(f"embed: app-only {times[0]:.1f}s, lock change {times[1]:.1f}s")
    hello = subprocess.run(
        [
            str(deps_runs.workspace.binary),
            "php-cli",
            "vendor/durango-test/hello/src/Greeting.php",
        ],
        capture_output=True,
        text=True,
    )
    assert hello.returncode == 0, hello.stderr


def embed_layers(engine: docker.DockerClient, image: Image) -> list[Path]:
    """The folders of the layers the embed stage put on its base image, read on this host
    (overlay2: UpperDir is the top layer, LowerDir the rest, top first). Saving the whole image
    instead would export several GB, the base's build tree included."""
    inputs = json.loads(image.labels["io.durango.inputs"])
    base = engine.images.get(inputs["upstream"]["base image"])
    added = len(image.attrs["RootFS"]["Layers"]) - len(base.attrs["RootFS"]["Layers"])
    driver = image.attrs["GraphDriver"]
    assert driver["Name"] == "overlay2", f"this check reads overlay2 layers, not {driver['Name']}"
    folders = [driver["Data"]["UpperDir"], *driver["Data"]["LowerDir"].split(":")][:added]
    assert added > 0 and all(Path(f).is_dir() for f in folders), folders
    return [Path(f) for f in folders]


def test_composer_token_is_in_no_image_label_cache_key_record_or_log(
    deps_runs: DepsRuns, engine: docker.DockerClient
) -> None:
    token = deps_runs.token.encode()
    ws = deps_runs.workspace
    image = engine.images.get(f"{ws.prefix}-embed:latest")
    assert token not in json.dumps(image.attrs).encode()  # labels, env, build args
    assert token not in json.dumps(image.history()).encode()
    for folder in embed_layers(engine, image):  # every file the embed stage added
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert token not in path.read_bytes(), path
    assert token not in (deps_runs.app_change.out + deps_runs.lock_change.out).encode()
    for path in [ws.root / ".doit.db", *sorted((ws.root / ".durango").rglob("*"))]:
        if path.is_file():
            assert token not in path.read_bytes(), path


def test_two_clean_builds_of_one_commit_give_the_same_binary(
    cakephp: CakeBuild, tmp_path: Path, engine: docker.DockerClient
) -> None:
    prefix = f"{CAKEPHP_IMAGES}-again-{uuid.uuid4().hex[:6]}"
    root = cake_project(
        tmp_path / "project",
        cakephp.workspace.app,
        cakephp.fixture,
        prefix,
        "embed_no_cache = true\n",
    )
    ws = Workspace(root, prefix, cakephp.workspace.app, engine)
    try:
        run = ws.doit("extract")
        assert "deps: composer install: 28 packages" in run.out  # really built again
        first = hashlib.sha256(cakephp.workspace.binary.read_bytes()).hexdigest()
        second = hashlib.sha256(ws.binary.read_bytes()).hexdigest()
        assert first == second
    finally:
        remove_images(engine, f"{prefix}-embed")


# --- persistence: what the app writes survives recreation and a backup/restore round trip ----


def compose_logs(compose: list[str], env: dict[str, str]) -> str:
    return subprocess.run(
        [*compose, "logs", "orangescrum-app"],
        capture_output=True, text=True, env={**os.environ, **env}, check=True,
    ).stdout  # fmt: skip


def test_app_writes_survive_recreate_and_a_backup_restore(
    cakephp: CakeBuild, tmp_path: Path
) -> None:
    subprocess.run([str(REPO / "scripts" / "make-local-images.sh"), "postgres"], check=True)
    ws = cakephp.workspace
    project = f"durango-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {
        "APP_PORT": str(port),
        "APP_BIND": "127.0.0.1",
        "DB_IMAGE": POSTGRES,
        "APP_IMAGE": cakephp.runtime_image,
    }
    settings = [
        "env_file=orangescrum-ee/.env.test-bundled",
        "compose_profiles=bundled-db",
        f"compose_project={project}",
        f"backup_dir={tmp_path / 'backups'}",
    ]
    compose = bundled_compose(ws.root, project)

    def in_app(script: str) -> str:
        return subprocess.run(
            [*compose, "exec", "-T", "orangescrum-app", "sh", "-c", script],
            capture_output=True, text=True, env={**os.environ, **env}, check=True,
        ).stdout  # fmt: skip

    try:
        ws.doit("up", *settings, env=env)
        assert http(port, "/probe-write.php?name=kept.txt&content=uploaded-1")[1] == "ok"
        deadline = time.monotonic() + 10
        while "probe: wrote kept.txt" not in compose_logs(compose, env):
            assert time.monotonic() < deadline, "the app's log line never reached the container log"
            time.sleep(0.5)
        subprocess.run(
            [*compose, "up", "--detach", "--wait", "--force-recreate"],
            env={**os.environ, **env}, check=True, capture_output=True,
        )  # fmt: skip
        assert in_app("cat /data/uploads/kept.txt") == "uploaded-1"
        assert "probe: wrote kept.txt" in in_app("cat /data/logs/error.log")

        ws.doit("backup", *settings, env=env)
        in_app("rm /data/uploads/kept.txt && : > /data/logs/error.log")
        ws.doit("restore", "--confirm", "--drop-database", *settings, env=env)
        assert in_app("cat /data/uploads/kept.txt") == "uploaded-1"
        assert "probe: wrote kept.txt" in in_app("cat /data/logs/error.log")
        assert http(port, "/probe-write.php?name=after.txt&content=2")[1] == "ok"
    finally:
        subprocess.run(
            [*compose, "down", "--volumes"], env={**os.environ, **env}, capture_output=True
        )


def test_an_app_that_commits_vendor_builds_with_no_network_and_no_composer(
    cakephp: CakeBuild, tmp_path: Path, engine: docker.DockerClient
) -> None:
    app = AppRepo(tmp_path / "app")
    shutil.copytree(cakephp.workspace.app.path, app.path)
    require_package(
        engine, f"{LOCAL_IMAGES}-base:latest", app.path, cakephp.fixture / "composer-repo", ""
    )
    (app.path / ".gitignore").write_text("/tmp/*\n/logs/*\n")  # vendor/ is part of the commit
    app.commit("vendor committed")
    prefix = f"{CAKEPHP_IMAGES}-vendor-{uuid.uuid4().hex[:6]}"
    root = make_local_project(tmp_path / "project", app.path, prefix, 'embed_network = "none"\n')
    ws = Workspace(root, prefix, app, engine)
    try:
        run = ws.doit("verify")
        # said by the step, or BuildKit reused that step from an earlier run of the same vendor/
        said = ("vendor/ is committed with the app; composer not run", "dependencies reused")
        assert any(line in run.out for line in said), run.out
        assert "deps: composer install" not in run.out
    finally:
        remove_images(engine, f"{prefix}-embed")
