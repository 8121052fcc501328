"""OrangeScrum CE itself, shipped: built offline from its artifact repository, deployed with the
bundle and nothing but documented settings, and used as a person would: sign-up, login (by
HTTP and in a real browser), a task with attachments, a thumbnail and a PDF, the queue and the
recurring task, data kept across a recreate, a new release and an upgrade from v0.1.0.

The app is the fixture's git bundle (shared/fixtures/orangescrum-ce), used in place. Screenshots
go to test-artifacts/ of the checkout."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
from browser import Browser
from helpers import (
    POSTGRES,
    REPO,
    AppRepo,
    Run,
    Stack,
    Workspace,
    free_port,
    git,
    make_local_project,
    sql,
    wait_healthy,
)
from orangescrum import ADMIN, COMPANY, PUSH_JOB, Client, clone, copy_without, fixture

PREFIX = "durango-ci-os"
ARTIFACTS = REPO / "test-artifacts"
PHP_PROBLEMS = re.compile(r"PHP (Fatal error|Parse error|Warning|Notice|Deprecated)|Fatal error:")


@pytest.fixture(scope="session")
def os_build(
    tmp_path_factory: pytest.TempPathFactory, engine: docker.DockerClient
) -> Iterator[Workspace]:
    """The real app built by the local profile, its dependencies from the artifact repository
    (the lock's download locations pointed there in the build's copy only), runtime image
    ready."""
    if not (fixture() / "app.bundle").is_file():
        pytest.fail(f"the OrangeScrum fixture is missing at {fixture()}", pytrace=False)
    tmp = tmp_path_factory.mktemp("orangescrum")
    app = AppRepo(clone(tmp / "orangescrum"))
    config = f'composer_repository = "{fixture() / "composer-repo"}"\ncomposer_packagist = false\n'
    facts = REPO / "orangescrum-ee" / "app.toml"
    root = make_local_project(tmp / "project", app.path, PREFIX, config, facts=facts)
    ws = Workspace(root, PREFIX, app, engine)
    ws.doit("verify")
    ws.doit("runtime")
    yield ws


@dataclass
class OsBundle:
    """The bundle of one test module: the bundled database, the app, the scheduler."""

    ws: Workspace
    project: str
    port: int
    env_file: Path

    @property
    def settings(self) -> list[str]:
        return [f"env_file={self.env_file}", "compose_profiles=bundled-db",
                f"compose_project={self.project}"]  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def doit(self, *args: str, check: bool = True) -> Run:
        return self.ws.doit(*args, *self.settings, check=check)

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        bundle = self.ws.root / "orangescrum-ee"
        cmd = ["docker", "compose", "-p", self.project, "-f", str(bundle / "docker-compose.yaml"),
               "--env-file", str(self.env_file), "--profile", "bundled-db", *args]  # fmt: skip
        env = {**os.environ, "APP_IMAGE": f"{PREFIX}-runtime:latest",
               "APP_ENV_FILE": str(self.env_file)}  # fmt: skip
        return subprocess.run(cmd, capture_output=True, text=True, env=env, check=check)

    def sql(self, query: str) -> str:
        done = self.compose(
            "exec", "-T", "orangescrum-db", "psql", "-U", "orangescrum", "-d", "orangescrum",
            "-XAtc", query,
        )  # fmt: skip
        return done.stdout.strip()

    def in_app(self, script: str, stdin: str = "") -> str:
        done = subprocess.run(
            [*self._compose_cmd(), "exec", "-T", "orangescrum-app", "sh", "-c", script],
            input=stdin, capture_output=True, text=True, check=True,
            env={**os.environ, "APP_IMAGE": f"{PREFIX}-runtime:latest",
                 "APP_ENV_FILE": str(self.env_file)},
        )  # fmt: skip
        return done.stdout

    def _compose_cmd(self) -> list[str]:
        bundle = self.ws.root / "orangescrum-ee"
        return ["docker", "compose", "-p", self.project, "-f", str(bundle / "docker-compose.yaml"),
                "--env-file", str(self.env_file), "--profile", "bundled-db"]  # fmt: skip

    def logs(self, service: str = "orangescrum-app") -> str:
        return self.compose("logs", "--no-color", service).stdout


def documented_env(tmp: Path, port: int) -> Path:
    """The env file a new user writes: .env.example with its change-me values replaced, the
    offline database image and a port of this test."""
    text = (REPO / "orangescrum-ee" / ".env.example").read_text()
    values = {
        "DB_PASSWORD": "os-test-password-5d2c",
        "SECURITY_SALT": "os-test-salt-0123456789abcdef0123456789abcdef",
        "DB_IMAGE": POSTGRES,
        "APP_PORT": str(port),
        "APP_URL": f"http://127.0.0.1:{port}",
        "APP_IMAGE": f"{PREFIX}-runtime:latest",
    }
    for name, value in values.items():
        text = re.sub(rf"^{name}=.*$", f"{name}={value}", text, flags=re.M)
    assert "change-me" not in "\n".join(
        line for line in text.splitlines() if not line.startswith("#")
    )
    path = tmp / "orangescrum.env"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def os_bundle(os_build: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OsBundle]:
    port = free_port()
    made = OsBundle(
        os_build, f"durango-test-os{uuid.uuid4().hex[:6]}", port,
        documented_env(tmp_path_factory.mktemp("os-env"), port),
    )  # fmt: skip
    try:
        made.doit("up")
        yield made
    finally:
        made.compose("down", "--volumes", check=False)


# --- built offline ---------------------------------------------------------------------------


def test_the_real_app_builds_offline_and_its_own_lock_is_untouched(os_build: Workspace) -> None:
    script = (
        "cat /go/src/deps/composer.lock; echo '\n---'; "
        "cat /go/src/deps/vendor/composer/installed.json"
    )
    inside = os_build.engine.containers.run(
        f"{PREFIX}-embed:latest", ["sh", "-c", script], remove=True
    ).decode()
    build_lock, installed = inside.split("\n---", 1)
    urls = [p["dist"]["url"] for p in json.loads(build_lock)["packages"]]
    assert len(urls) == 100 and all(u.startswith("/go/src/deps/repository/") for u in urls)
    assert len(json.loads(installed)["packages"]) == 100
    assert git(os_build.app.path, "status", "--porcelain") == ""
    lock = json.loads((os_build.app.path / "composer.lock").read_text())
    assert all("api.github.com" in p["dist"]["url"] for p in lock["packages"])
    binary = os_build.binary
    assert 150e6 < binary.stat().st_size < 350e6
    manifest = json.loads(binary.with_name(binary.name + ".manifest.json").read_text())
    assert manifest["http_check"]["url_path"] == "/users/login"


def test_a_package_missing_from_the_repository_is_one_line_and_changes_nothing(
    os_build: Workspace, tmp_path: Path
) -> None:
    repo = copy_without(fixture() / "composer-repo", tmp_path / "repo", "cakephp-chronos-2.4.4.zip")
    before = os_build.engine.images.get(f"{PREFIX}-embed:latest").id
    run = os_build.doit("embed", f"composer_repository={repo}", check=False)
    assert run.code != 0
    failure = [line for line in run.out.splitlines() if line.startswith("durango:")]
    assert len(failure) == 1 and "cakephp/chronos 2.4.4" in failure[0], run.out[-2000:]
    assert "add it to that repository" in failure[0]
    assert os_build.engine.images.get(f"{PREFIX}-embed:latest").id == before


# --- deployed with documented settings only ------------------------------------------------------


def test_documented_settings_give_a_healthy_bundle_migrated_and_seeded_once(
    os_bundle: OsBundle,
) -> None:
    assert os_bundle.sql("SELECT count(*) FROM phinxlog") == "6"
    assert os_bundle.sql("SELECT count(*) FROM email_templating_phinxlog") == "4"
    assert os_bundle.sql("SELECT count(*) FROM actions") == "71"
    assert os_bundle.sql("SELECT count(*) FROM roles") == "5"
    assert int(os_bundle.sql("SELECT count(*) FROM pg_tables WHERE schemaname='public'")) >= 111
    marker = os_bundle.in_app("cat /data/files/config/install.ini")
    assert "install_time" in marker and 'smtp = "skip"' in marker
    log = os_bundle.logs()
    assert "Database seeding: done (71 rows in actions" in log
    assert '"level":"error"' not in log and "read-only file system" not in log, log[-3000:]
    caddy = os_bundle.in_app("ls /data/files/caddy")
    assert "data" in caddy or "config" in caddy


def test_the_first_company_signs_up_and_a_fresh_session_logs_in(os_bundle: OsBundle) -> None:
    first = Client(os_bundle.url)
    assert first.sign_up()["msg"] == "success"
    board = first.dashboard()
    assert COMPANY in board.text
    fresh = Client(os_bundle.url)
    login = fresh.get("/users/login")
    assert login.status_code == 200 and re.search(r"<title>\s*Sign In", login.text)
    cookie = login.headers.get("Set-Cookie", "")
    assert "secure" not in cookie.lower(), cookie  # http: SESSION_COOKIE_SECURE follows APP_URL
    assert fresh.log_in().status_code == 200


def test_a_real_browser_loads_the_login_page_and_the_dashboard_cleanly(
    os_bundle: OsBundle,
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with Browser() as browser:
        page = browser.goto(os_bundle.url + "/users/login", timeout=60)
        assert page.ok, page.summary()
        browser.screenshot(ARTIFACTS / "orangescrum-login.png")
        browser.fill_and_submit(
            {"#txt_UserId": ADMIN["email"], "#txt_Password": ADMIN["password"]}, "#submit_Pass"
        )
        board = browser.goto(os_bundle.url + "/dashboard", timeout=90)
        assert board.ok, board.summary()
        assert browser.evaluate(f"document.body.innerText.includes({COMPANY!r})")
        browser.screenshot(ARTIFACTS / "orangescrum-dashboard.png")
    assert (ARTIFACTS / "orangescrum-dashboard.png").stat().st_size > 10_000


def _png() -> bytes:
    """A small real PNG, a colour gradient (ImageMagick makes the app's thumbnail from it)."""
    import struct
    import zlib

    width, height = 400, 300
    rows = b"".join(
        b"\0" + bytes(v for x in range(width) for v in (x % 256, y % 256, 128))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def _project_and_user(os_bundle: OsBundle) -> tuple[str, int]:
    return os_bundle.sql("SELECT uniq_id FROM projects ORDER BY id LIMIT 1"), int(
        os_bundle.sql("SELECT id FROM users ORDER BY id LIMIT 1")
    )


ATTACHED: dict[str, bytes] = {}


def test_attachments_are_stored_with_a_thumbnail_and_the_project_pdf_is_made(
    os_bundle: OsBundle,
) -> None:
    client = Client(os_bundle.url)
    client.log_in()
    note, image = b"attached notes 42\n", _png()
    files = [
        client.upload("notes.txt", note, "text/plain"),
        client.upload("pic.png", image, "image/png"),
    ]
    project, user = _project_and_user(os_bundle)
    client.create_task(project, user, files)
    for stored, content in zip(files, (note, image), strict=True):
        name = stored.split("|")[0]
        got = client.get(f"/easycases/download/{name}")
        assert got.status_code == 200 and got.content == content, got.status_code
        ATTACHED[name] = content
    thumb = client.get(f"/files/case_files/thumb_{files[1].split('|')[0]}")
    assert thumb.status_code == 200 and thumb.content[:8] == b"\x89PNG\r\n\x1a\n"  # ImageMagick
    pdf = client.project_pdf(project)  # wkhtmltopdf
    assert pdf.status_code == 200 and pdf.content[:4] == b"%PDF", pdf.status_code
    assert pdf.headers["Content-Type"].startswith("application/pdf")


def test_the_scheduler_runs_the_queue_worker_and_the_recurring_task(os_bundle: OsBundle) -> None:
    """A job pushed on the app's file queue is taken by the worker the scheduler starts every
    minute (the queue empties, nothing else reads it); the recurring task runs on demand as a
    one-shot job container, its output in the log."""
    queue = "/data/files/tmp/queue/enqueue.app.default"
    pushed = os_bundle.in_app(
        f"cat > /data/tmp/push.php && orangescrum-ee php-cli /data/tmp/push.php && wc -c < {queue}",
        PUSH_JOB,
    )
    assert pushed.split()[0] == "pushed", pushed
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        emptied = os_bundle.in_app(f"wc -c < {queue}").strip() == "0"
        if emptied and "job queue-worker: exit" in os_bundle.logs("orangescrum-scheduler"):
            break
        time.sleep(3)
    else:
        log = os_bundle.logs("orangescrum-scheduler")
        raise AssertionError("the queue worker did not take the job:\n" + log[-3000:])
    once = os_bundle.compose(
        "run", "--rm", "-T", "-e", "APP_ROLE=job", "-e", "APP_JOB=recurring-task",
        "orangescrum-scheduler",
    )  # fmt: skip
    out = once.stdout + once.stderr
    assert "job recurring-task: Recurring tasks created successfully." in out, out[-2000:]
    assert "job recurring-task: exit 0" in out


def test_files_accounts_and_the_install_survive_a_recreate_and_a_new_release(
    os_bundle: OsBundle,
) -> None:
    assert ATTACHED, "runs after the attachment test"
    os_bundle.compose("up", "-d", "--wait", "--force-recreate", "orangescrum-app")
    client = Client(os_bundle.url)
    client.log_in()
    for name, content in ATTACHED.items():
        assert client.get(f"/easycases/download/{name}").content == content
    before = hashlib.sha256(os_bundle.ws.binary.read_bytes()).hexdigest()
    os_bundle.ws.app.write("webroot/release.txt", "release 2\n")
    os_bundle.ws.app.commit("a new release")
    os_bundle.doit("up")
    assert hashlib.sha256(os_bundle.ws.binary.read_bytes()).hexdigest() != before
    client = Client(os_bundle.url)
    client.log_in()  # the account, and no redirect to the install wizard
    assert client.get("/release.txt").text == "release 2\n"
    for name, content in ATTACHED.items():
        assert client.get(f"/easycases/download/{name}").content == content
    assert os_bundle.sql("SELECT count(*) FROM phinxlog") == "6"


def test_the_app_log_has_no_php_fatal_error_or_warning(os_bundle: OsBundle) -> None:
    logs = os_bundle.logs() + os_bundle.logs("orangescrum-scheduler")
    logs += os_bundle.in_app("cat /data/logs/*.log 2>/dev/null || true")
    problems = [line for line in logs.splitlines() if PHP_PROBLEMS.search(line)]
    assert not problems, "\n".join(problems[:20])


# --- replicas and upgrades ---------------------------------------------------------------------


def test_three_replicas_starting_together_migrate_and_seed_once(
    os_build: Workspace, engine: docker.DockerClient
) -> None:
    stack = Stack(engine, f"{PREFIX}-runtime:latest")
    engine.networks.create(stack.network)
    try:
        db = stack.database()
        apps = [stack.app({"APP_URL": "http://127.0.0.1:8080"}) for _ in range(3)]
        for app, port in apps:
            # the login page answers (a 302 to the sign-up page: no company yet)
            wait_healthy(app, port, timeout=240, path="/users/login", ok=(200, 302))
        logs = [app.logs().decode() for app, _ in apps]
        assert sum("InitialOssBaseline: migrated" in log for log in logs) == 1
        assert sum("Database seeding: done" in log for log in logs) == 1
        assert sum("Database seeding: skipped (seeded already" in log for log in logs) == 2
        assert sql(db, "SELECT count(*) FROM phinxlog") == "6"
    finally:
        stack.close()


def test_an_upgrade_from_v010_migrates_once_and_keeps_the_data(
    os_build: Workspace, tmp_path: Path
) -> None:
    port = free_port()
    old = OsBundle(os_build, f"durango-test-osup{uuid.uuid4().hex[:6]}", port,
                   documented_env(tmp_path, port))  # fmt: skip
    try:
        old.doit("up", "ref=v0.1.0-locked")
        assert old.sql("SELECT count(*) FROM phinxlog") == "5"
        client = Client(old.url)
        client.sign_up()
        assert COMPANY in client.dashboard().text
        old.doit("up", "ref=main")
        log = old.logs()
        assert log.count("CreateUserPreferences: migrated") == 1, log[-3000:]
        assert old.sql("SELECT count(*) FROM phinxlog") == "6"
        assert old.sql("SELECT to_regclass('user_preferences') IS NOT NULL") == "t"  # the new table
        again = Client(old.url)
        assert COMPANY in again.log_in().text  # the account and its company, kept
        assert old.sql("SELECT count(*) FROM users") == "1"
    finally:
        old.compose("down", "--volumes", check=False)


def test_bad_facts_are_one_line_and_change_nothing(os_build: Workspace, tmp_path: Path) -> None:
    """An external program the runtime image lacks fails the runtime build in one line; the
    image `latest` stays the one that works."""
    facts = (
        (REPO / "orangescrum-ee" / "app.toml")
        .read_text()
        .replace(
            'exec = ["convert", "wkhtmltopdf"]', 'exec = ["convert", "wkhtmltopdf", "no-such-tool"]'
        )
    )
    bad = tmp_path / "app.toml"
    bad.write_text(facts)
    os_build.doit("runtime")
    before = os_build.engine.images.get(f"{PREFIX}-runtime:latest").id
    run = os_build.doit("runtime", f"app_facts={bad}", check=False)
    failure = [line for line in run.out.splitlines() if line.startswith("durango:")]
    assert run.code != 0 and len(failure) == 1 and "no-such-tool" in failure[0], run.out[-2000:]
    assert os_build.engine.images.get(f"{PREFIX}-runtime:latest").id == before


def test_the_serve_benchmark_runs_in_its_reduced_form(os_build: Workspace) -> None:
    """bench/serve.py cannot rot: its reduced form runs here against the app's Apache deployment
    (its figures are in docs/BENCHMARKS.md)."""
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "serve.py"), "--quick",
         "--runtime-image", f"{PREFIX}-runtime:latest"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split("|") for line in done.stdout.splitlines() if line.startswith("| ")]
    served = [row for row in rows if len(row) == 10 and row[1].strip() != "server"]
    assert len(served) == 8, done.stdout  # two servers, two pages, concurrency 1 and 8
    assert all(float(row[4]) > 0 for row in served)
