"""OrangeScrum CE served by FrankenPHP worker threads (facts `[server] worker = "cakephp"`): the
same sign-up, login, attachment and browser checks as classic mode, and two people signed in at
once, their requests interleaved on one worker thread, each seeing only their own identity.

The app keeps the signed-in user in constants (`define('SES_ID', …)` in AppController), which
PHP keeps for a worker's whole life: the shipped worker boots again after any request that
defined one (`new_constants = "restart"`). The last test shows what happens without that:
`new_constants = "keep"` serves the second person pages built for the first (xfail, strict: it
passes, and fails the suite, the day the app stops keeping request state in constants).

The app is the fixture's git bundle (shared/fixtures/orangescrum-ce), used in place."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
from browser import Browser
from helpers import POSTGRES, REPO, AppRepo, Workspace, free_port, make_local_project
from orangescrum import ADMIN, COMPANY, Client, clone, fixture

PREFIX = os.environ.get("WORKER_TEST_PREFIX", "durango-ci-osw")  # images and compose projects
ARTIFACTS = REPO / "test-artifacts"
SECOND = {"email": "bea@example.com", "password": ADMIN["password"], "name": "Bea"}
# the page's own record of whom it was built for (templates/Projects/manage.php)
PAGE_USER = re.compile(r"let user_ids = '([^']*)'")
PHP_PROBLEMS = re.compile(
    r"PHP (Fatal error|Parse error|Warning|Notice)|Fatal error:|already defined"
)


def worker_facts(tmp: Path, new_constants: str = "restart") -> Path:
    """The bundle's facts with the commented `[server]` example switched on."""
    text = (REPO / "orangescrum-ee" / "app.toml").read_text()
    text = re.sub(r"^# (worker = |boot_url_env = )", r"\1", text, flags=re.M)
    text = text.replace('# new_constants = "restart"', f'new_constants = "{new_constants}"')
    path = tmp / f"app-{new_constants}.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def worker_build(
    tmp_path_factory: pytest.TempPathFactory, engine: docker.DockerClient
) -> Iterator[Workspace]:
    """The real app built by the local profile with worker mode on, runtime image ready."""
    if not (fixture() / "app.bundle").is_file():
        pytest.fail(f"the OrangeScrum fixture is missing at {fixture()}", pytrace=False)
    tmp = tmp_path_factory.mktemp("orangescrum-worker")
    app = AppRepo(clone(tmp / "orangescrum"))
    config = f'composer_repository = "{fixture() / "composer-repo"}"\ncomposer_packagist = false\n'
    root = make_local_project(tmp / "project", app.path, PREFIX, config, facts=worker_facts(tmp))
    ws = Workspace(root, PREFIX, app, engine)
    ws.doit("runtime")
    yield ws


@dataclass
class WorkerBundle:
    ws: Workspace
    project: str
    port: int
    env_file: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def doit(self, *args: str) -> None:
        self.ws.doit(*args, f"env_file={self.env_file}", "compose_profiles=bundled-db",
                     f"compose_project={self.project}")  # fmt: skip

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

    def logs(self) -> str:
        log = self.compose("logs", "--no-color", "orangescrum-app").stdout
        app = self.compose("exec", "-T", "orangescrum-app", "sh", "-c",
                           "cat /data/logs/*.log 2>/dev/null || true", check=False)  # fmt: skip
        return log + app.stdout


def worker_env(tmp: Path, port: int) -> Path:
    """.env.example with its change-me values replaced; two worker threads (the PDF export's
    own page fetch needs a second one while the first waits for it); restart reasons logged."""
    text = (REPO / "orangescrum-ee" / ".env.example").read_text()
    values = {
        "DB_PASSWORD": "osw-test-password-7a1e",
        "SECURITY_SALT": "osw-test-salt-0123456789abcdef0123456789abcdef",
        "DB_IMAGE": POSTGRES,
        "APP_PORT": str(port),
        "APP_URL": f"http://127.0.0.1:{port}",
        "APP_IMAGE": f"{PREFIX}-runtime:latest",
    }
    for name, value in values.items():
        text = re.sub(rf"^{name}=.*$", f"{name}={value}", text, flags=re.M)
    text += "\nFRANKENPHP_WORKERS=2\nFRANKENPHP_WORKER_DEBUG=1\n"
    path = tmp / "orangescrum-worker.env"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def bundle(
    worker_build: Workspace, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerBundle]:
    port = free_port()
    made = WorkerBundle(
        worker_build, f"{PREFIX}-b{uuid.uuid4().hex[:6]}", port,
        worker_env(tmp_path_factory.mktemp("osw-env"), port),
    )  # fmt: skip
    try:
        made.doit("up")
        yield made
    finally:
        made.compose("down", "--volumes", check=False)


def second_person(bundle: WorkerBundle) -> int:
    """A second member of the company and of its first project, with the owner's password
    (as an invitation accepted would leave them); their user id."""

    def copy(table: str, changed: dict[str, str], source: str) -> str:
        columns = bundle.sql(
            "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM "
            f"information_schema.columns WHERE table_name = '{table}' AND column_name NOT IN "
            f"('id', {', '.join(repr(c) for c in changed)})"
        )
        names = ", ".join(changed)
        values = ", ".join(changed.values())
        return bundle.sql(
            f"INSERT INTO {table} ({names}, {columns}) SELECT {values}, {columns} FROM {table} "
            f"WHERE {source} RETURNING id"
        ).splitlines()[0]

    user = copy("users", {"uniq_id": "md5('bea')", "email": f"'{SECOND['email']}'",
                          "name": f"'{SECOND['name']}'"}, "id = 1")  # fmt: skip
    copy("company_users", {"user_id": user}, "user_id = 1")
    copy("project_users", {"user_id": user}, "user_id = 1")
    return int(user)


def signed_in(base: str, email: str, password: str) -> Client:
    client = Client(base)
    page = client.get("/users/login")
    token = re.search(r'name="_csrfToken"[^>]*value="([^"]+)"', page.text)
    assert page.status_code == 200 and token, page.status_code
    posted = client.session.post(
        base + "/users/login",
        data={"_csrfToken": token.group(1), "email": email, "password": password},
        allow_redirects=False,
        timeout=60,
    )
    assert posted.status_code == 302, posted.status_code
    client.dashboard()
    return client


def interleaved_identities(base: str, second: int, rounds: int = 6) -> list[tuple[int, str]]:
    """Both people signed in, their pages asked for in turn: (whose request, the user id the
    page was built for) for each."""
    people = [(1, signed_in(base, ADMIN["email"], ADMIN["password"])),
              (second, signed_in(base, SECOND["email"], SECOND["password"]))]  # fmt: skip
    seen = []
    for _ in range(rounds):
        for user, client in people:
            page = client.get("/projects/manage")
            assert page.status_code == 200, (user, page.status_code)
            seen += [(user, found) for found in set(PAGE_USER.findall(page.text))]
    return seen


# --- the server runs the worker ----------------------------------------------------------------


def test_the_embedded_caddyfile_sends_php_requests_to_the_worker(bundle: WorkerBundle) -> None:
    done = bundle.compose("exec", "-T", "orangescrum-app", "sh", "-c",
                          'cat "$FRANKENPHP_APP_DIR"/.frankenphp/Caddyfile 2>/dev/null || '
                          "cat /data/cache/frankenphp-*/app-*/.frankenphp/Caddyfile")  # fmt: skip
    block = done.stdout[done.stdout.index("php_server {") :]
    assert "file .frankenphp/cakephp-worker.php" in block and "match *" in block, block[:400]
    assert Client(bundle.url).get("/users/login").status_code in (200, 302)


# --- the classic-mode checks, in worker mode ---------------------------------------------------


def test_the_first_company_signs_up_and_a_fresh_session_logs_in(bundle: WorkerBundle) -> None:
    first = Client(bundle.url)
    page = first.get("/users/signup")
    assert re.search(r"<title>\s*Sign Up", page.text), bundle.logs()[-4000:]
    assert first.sign_up()["msg"] == "success"
    assert COMPANY in first.dashboard().text
    fresh = Client(bundle.url)
    login = fresh.get("/users/login")
    assert login.status_code == 200 and re.search(r"<title>\s*Sign In", login.text)
    assert "secure" not in login.headers.get("Set-Cookie", "").lower()
    assert fresh.log_in().status_code == 200
    # the worker ran the requests: it booted again after each that defined constants
    assert "cakephp-worker: booting again: the request defined constants" in bundle.logs()


def test_two_people_interleaved_never_see_each_others_identity(bundle: WorkerBundle) -> None:
    second = second_person(bundle)
    seen = interleaved_identities(bundle.url, second)
    assert len(seen) == 12 and all(str(user) == found for user, found in seen), seen
    # the login page, without a session, carries no one's identity either
    anonymous = Client(bundle.url).get("/users/login")
    assert anonymous.status_code == 200 and not PAGE_USER.search(anonymous.text)


def test_attachments_are_stored_with_a_thumbnail_and_the_project_pdf_is_made(
    bundle: WorkerBundle,
) -> None:
    client = Client(bundle.url)
    client.log_in()
    note = b"attached in worker mode\n"
    files = [client.upload("notes.txt", note, "text/plain")]
    project = bundle.sql("SELECT uniq_id FROM projects ORDER BY id LIMIT 1")
    client.create_task(project, 1, files)
    name = files[0].split("|")[0]
    got = client.get(f"/easycases/download/{name}")
    assert got.status_code == 200 and got.content == note, got.status_code
    pdf = client.project_pdf(project)  # wkhtmltopdf fetches the app's own page meanwhile
    assert pdf.status_code == 200 and pdf.content[:4] == b"%PDF", pdf.status_code


def test_a_real_browser_loads_the_login_page_and_the_dashboard_cleanly(
    bundle: WorkerBundle,
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with Browser() as browser:
        page = browser.goto(bundle.url + "/users/login", timeout=60)
        assert page.ok, page.summary()
        browser.fill_and_submit(
            {"#txt_UserId": ADMIN["email"], "#txt_Password": ADMIN["password"]}, "#submit_Pass"
        )
        board = browser.goto(bundle.url + "/dashboard", timeout=90)
        assert board.ok, board.summary()
        assert browser.evaluate(f"document.body.innerText.includes({COMPANY!r})")
        browser.screenshot(ARTIFACTS / "orangescrum-worker-dashboard.png")


def test_the_app_log_has_no_php_error_and_no_constant_defined_twice(
    bundle: WorkerBundle,
) -> None:
    problems = [line for line in bundle.logs().splitlines() if PHP_PROBLEMS.search(line)]
    assert not problems, "\n".join(problems[:20])


# --- what breaks without the constant guard --------------------------------------------------


class IdentityLeak(AssertionError):
    """A page built for another person than the one who asked for it."""


@pytest.mark.xfail(
    raises=IdentityLeak,
    strict=True,
    reason="OrangeScrum keeps the signed-in user in constants (AppController::initLoggedinUser "
    "define('SES_ID'), TenantMiddleware define('SES_COMP')): a worker that keeps them serves "
    "the second person pages built for the first",
)
def test_with_new_constants_kept_two_people_still_see_only_themselves(
    bundle: WorkerBundle, tmp_path: Path
) -> None:
    bundle.doit("up", f"app_facts={worker_facts(tmp_path, 'keep')}")
    second = int(bundle.sql(f"SELECT id FROM users WHERE email = '{SECOND['email']}'"))
    seen = interleaved_identities(bundle.url, second)
    if not all(str(user) == found for user, found in seen):
        raise IdentityLeak(f"(whose request, the user the page was built for): {seen}")
