"""What the tests share: project workspaces, app repositories, a bundle stack of containers,
ports and HTTP. Fixtures live in conftest.py and build on these; test modules import only from
here, never from each other."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import docker
from docker.models.containers import Container

REPO = Path(__file__).resolve().parent.parent
FIXTURE_PROJECT = Path(__file__).resolve().parent / "fixtures" / "project"
NO_FACTS = Path(__file__).resolve().parent / "fixtures" / "no-facts.toml"
BUSYBOX = "durango-local/busybox:latest"
STAGES = ["archive", "base", "embed", "extract", "runtime"]
LOCAL_IMAGES = "durango-ci-local"  # stable names: later runs reuse the images through their keys
# The extension list every local test build uses: one base image for all of them, and a set that
# differs from the Dockerfile's default (mysqli, pdo_mysql), so the setting is proven to choose.
PHP_EXTENSIONS = (
    "bcmath,ctype,curl,dom,fileinfo,filter,gd,iconv,intl,mbstring,mysqli,opcache,openssl,pdo,"
    "pdo_mysql,pdo_pgsql,pgsql,phar,redis,session,simplexml,sockets,sodium,tokenizer,xml,"
    "xmlreader,xmlwriter,zip,zlib"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.invalid",
    }
    done = subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def ctrl_c_as_from_a_terminal() -> None:
    """For a doit the tests interrupt with SIGINT: a shell that ran the tests as a background job
    (`cmd &` without job control) left SIGINT ignored, and Python keeps an inherited ignore, so
    the child would never see the user's Ctrl-C that the test stands for."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class AppRepo:
    """A real git repository standing in for the application source."""

    path: Path

    def write(self, rel: str, text: str) -> None:
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def commit(self, message: str = "change") -> str:
        git(self.path, "add", "-A")
        git(self.path, "commit", "-q", "--allow-empty", "-m", message)
        return git(self.path, "rev-parse", "HEAD")


def new_app_repo(path: Path, files: dict[str, str]) -> AppRepo:
    """A git repository with `files` in its first commit."""
    repo = AppRepo(path)
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    for rel, text in files.items():
        repo.write(rel, text)
    repo.commit("initial")
    return repo


@dataclass
class Run:
    """One doit invocation: exit code, output, and which stages ran or were up to date."""

    code: int
    out: str

    @property
    def executed(self) -> list[str]:
        return re.findall(r"^\.  (\S+)$", self.out, re.M)

    @property
    def uptodate(self) -> list[str]:
        return re.findall(r"^-- (\S+)$", self.out, re.M)


@dataclass
class Workspace:
    """A project checkout wired to fixture Dockerfiles and per-test image names."""

    root: Path
    prefix: str
    app: AppRepo
    engine: docker.DockerClient

    @property
    def binary(self) -> Path:
        return self.root / "orangescrum-ee" / "orangescrum-app" / "orangescrum-ee"

    def image(self, stage: str) -> str:
        return f"{self.prefix}-{stage}"

    def doit(self, *args: str, env: dict[str, str] | None = None, check: bool = True) -> Run:
        done = subprocess.run(
            [sys.executable, "-m", "doit", *args],
            cwd=self.root,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=2400,  # a cold base image takes 10 to 15 minutes on two busy cores
        )
        run = Run(done.returncode, done.stdout + done.stderr)
        if check and run.code != 0:
            raise AssertionError(f"doit {' '.join(args)} failed ({run.code}):\n{run.out}")
        return run

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "doit", *args],
            cwd=self.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=ctrl_c_as_from_a_terminal,
        )

    def edit(self, rel: str, append: str) -> None:
        path = self.root / rel
        path.write_text(path.read_text() + append)


def new_project(root: Path, pyproject: str, copied: dict[Path, str]) -> Path:
    """A checkout of this project: dodo.py, tasks/ (linked), the given folders, pyproject."""
    root.mkdir(parents=True)
    for source, name in copied.items():
        shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("orangescrum-ee"))
    shutil.copy(REPO / "dodo.py", root / "dodo.py")
    (root / "tasks").symlink_to(REPO / "tasks")
    (root / "pyproject.toml").write_text(f"[tool.durango]\n{pyproject}")
    return root


def make_workspace(
    tmp_path: Path, app: AppRepo, engine: docker.DockerClient, extra_config: str = ""
) -> Workspace:
    """A project whose Dockerfiles are fast fixtures on busybox, images named for this test."""
    prefix = f"durango-test-{uuid.uuid4().hex[:8]}"
    pyproject = f"""source = "{app.path}"
base_image = "{prefix}-base"
embed_image = "{prefix}-embed"
runtime_image = "{prefix}-runtime"
runtime_base = "{BUSYBOX}"
base_args = {{ BUSYBOX_IMAGE = "{BUSYBOX}" }}
{extra_config}
"""
    fixture = {
        FIXTURE_PROJECT / "builder": "builder",
        FIXTURE_PROJECT / "orangescrum-ee": "orangescrum-ee",
    }
    return Workspace(new_project(tmp_path / "project", pyproject, fixture), prefix, app, engine)


def remove_images(engine: docker.DockerClient, prefix: str) -> None:
    """Remove every image with a tag starting with `prefix` (all its tags); tolerate images that
    another run on the same engine removes meanwhile."""
    for entry in engine.api.images():
        tags = entry.get("RepoTags") or []
        if any(tag.startswith(prefix) for tag in tags):
            for tag in tags:
                with contextlib.suppress(docker.errors.NotFound):
                    engine.images.remove(tag, force=True)


def make_local_project(
    root: Path,
    app: Path,
    image_prefix: str = LOCAL_IMAGES,
    extra_config: str = "",
    builder: str = "local",
    facts: Path | None = None,
) -> Path:
    """A checkout of this project (real builder/ and orangescrum-ee/) building `app` with a local
    profile. Every such project of one profile shares one base image (same name, same key). The
    app's facts: `facts`, else the app's own app.toml (the demo app's), else none."""
    facts = facts or (app / "app.toml" if (app / "app.toml").is_file() else NO_FACTS)
    facts_line = f'app_facts = "{facts}"'
    pyproject = f"""builder = "{builder}"
source = "{app}"
{facts_line}
php_extensions = "{PHP_EXTENSIONS}"
base_image = "durango-ci-{builder}-base"
embed_image = "{image_prefix}-embed"
runtime_image = "{image_prefix}-runtime"
{extra_config}
"""
    real = {REPO / "builder": "builder", REPO / "orangescrum-ee": "orangescrum-ee"}
    return new_project(root, pyproject, real)


def demo_app_repo(path: Path) -> AppRepo:
    """examples/demo-app as the root of a git repository of its own, so tests can commit to it."""
    shutil.copytree(REPO / "examples" / "demo-app", path)
    git(path, "init", "-q", "-b", "main")
    repo = AppRepo(path)
    repo.commit("demo app")
    return repo


@dataclass
class LocalBuild:
    """The local profile built once per session: binary verified, runtime image ready."""

    workspace: Workspace
    runtime_image: str
    manifest: dict


def bundled_compose(root: Path, project: str) -> list[str]:
    """`docker compose` on a workspace's bundle with the bundled-db test variant."""
    bundle = root / "orangescrum-ee"
    return [
        "docker", "compose", "-p", project, "-f", str(bundle / "docker-compose.yaml"),
        "--env-file", str(bundle / ".env.test-bundled"), "--profile", "bundled-db",
    ]  # fmt: skip


POSTGRES = "durango-local/postgres:15"
DB = {"user": "orangescrum_test", "password": "test-only-3f9a1c", "name": "orangescrum_test"}
SALT = "test-only-salt-0123456789abcdef0123456789abcdef"


def status(port: int, path: str) -> int:
    """The status of GET path, redirects not followed (a redirect's target may be the app's
    public URL, which this host does not serve)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


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
            container.remove(force=True, v=True)
        self.engine.networks.get(self.network).remove()


def sql(db: Container, query: str) -> str:
    code, out = db.exec_run(["psql", "-U", DB["user"], "-d", DB["name"], "-Atc", query])
    assert code == 0 and isinstance(out, bytes), out
    return out.decode().strip()


def wait_ready_db(
    db: Container, user: str = DB["user"], password: str = DB["password"], timeout: float = 60
) -> None:
    """Until the database server accepts connections over TCP (the image's first-start server,
    which creates the database, listens on no TCP port and then shuts down)."""
    deadline = time.monotonic() + timeout
    query = ["psql", "-h", "127.0.0.1", "-U", user, "-d", "postgres", "-XAtc", "SELECT 1"]
    while db.exec_run(query, environment={"PGPASSWORD": password})[0] != 0:
        assert time.monotonic() < deadline, "database did not start"
        time.sleep(0.5)


def wait_healthy(
    container: Container,
    port: int,
    timeout: float = 120,
    path: str = "/home/healthcheck",
    ok: tuple[int, ...] = (200,),
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container.reload()
        if container.status == "exited":
            raise AssertionError(f"app exited:\n{container.logs().decode()}")
        try:
            if status(port, path) in ok:
                return
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"app not healthy in {timeout}s:\n{container.logs().decode()}")


def wait_exit(container: Container, timeout: float = 120) -> tuple[int, str]:
    status = container.wait(timeout=timeout)
    return int(status["StatusCode"]), container.logs().decode()


def assert_migrated_and_seeded(db: Container) -> None:
    assert sql(db, "SELECT count(*) FROM phinxlog") == "3"
    assert sql(db, "SELECT count(*) FROM gitsync_phinxlog") == "1"
    assert sql(db, "SELECT count(*) FROM actions") == "12"


# --- A genuine CakePHP 5 application (test data used in place, never copied into this repo) ----


def cakephp_fixture() -> Path | None:
    """The fixture folder (app/ + composer-repo/): $CAKEPHP_FIXTURE, else shared/fixtures/cakephp
    beside this checkout or one of its parents."""
    if os.environ.get("CAKEPHP_FIXTURE"):
        candidates = [Path(os.environ["CAKEPHP_FIXTURE"])]
    else:
        candidates = [parent / "shared" / "fixtures" / "cakephp" for parent in REPO.parents]
    return next((c for c in candidates if (c / "app" / "composer.lock").is_file()), None)


def copy_tree_writable(source: Path, dest: Path) -> None:
    """A writable copy (the fixture's files are read-only)."""
    shutil.copytree(source, dest, copy_function=shutil.copy)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)


def cakephp_app_repo(path: Path, fixture: Path) -> AppRepo:
    """The fixture app as its own git repository (its .gitignore applies, as for a user)."""
    copy_tree_writable(fixture / "app", path)
    git(path, "init", "-q", "-b", "main")
    repo = AppRepo(path)
    repo.commit("cakephp app")
    return repo


def doit_time(run: Run) -> float:
    """Seconds doit reported for a stage's build (`<stage>: built <tag> (<id>) in 12.3s`)."""
    return sum(float(m) for m in re.findall(r": built \S+ \(\w+\) in ([\d.]+)s", run.out))


@dataclass
class Bundle:
    ws: Workspace
    settings: list[str]
    env: dict[str, str]
    port: int
    compose: list[str]
    backups: Path

    def doit(self, *args: str, check: bool = True):
        return self.ws.doit(*args, *self.settings, env=self.env, check=check)

    def app_exec(self, script: str) -> str:
        done = subprocess.run(
            [*self.compose, "exec", "-T", "orangescrum-app", "sh", "-c", script],
            capture_output=True,
            text=True,
            env={**os.environ, **self.env},
            check=True,
        )
        return done.stdout

    def latest(self) -> Path:
        return (self.backups / "latest").resolve()

    def compose_run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.compose, *args],
            capture_output=True,
            text=True,
            env={**os.environ, **self.env},
            check=check,
        )

    def sql(self, query: str) -> str:
        """A query in the bundled database, as its owner."""
        user = "orangescrum_test"
        done = self.compose_run(
            "exec", "-T", "orangescrum-db", "psql", "-U", user, "-d", user, "-XAtc", query
        )
        return done.stdout.strip()

    @property
    def project(self) -> str:
        return next(s.split("=", 1)[1] for s in self.settings if s.startswith("compose_project="))

    def uploads(self) -> str:
        """sha256 of every file in the uploads volume, sorted (read through a throw-away
        container, so it works while the app is stopped)."""
        script = "cd /v && find . -type f | sort | xargs -r sha256sum"
        volume = f"{self.project}_app-uploads:/v:ro"
        return subprocess.run(
            ["docker", "run", "--rm", "-v", volume, BUSYBOX, "sh", "-c", script],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip

    def started(self) -> str:
        """When each of the bundle's containers last started."""
        ids = self.compose_run("ps", "-q").stdout.split()
        return subprocess.run(
            ["docker", "inspect", "-f", "{{.Name}} {{.State.StartedAt}}", *ids],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip


class Writer(threading.Thread):
    """Inserts rows through the app until stopped; remembers when each insert was committed."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.committed: list[tuple[str, datetime]] = []

    def run(self) -> None:
        n = 0
        while not self.stop.is_set() and n < 5000:
            name = f"writer-{n}"
            status, _ = http(self.port, "/api/actions", {"name": name})
            if status == 201:
                self.committed.append((name, datetime.now(timezone.utc)))
            n += 1


# --- data safety: the live generation's database and volumes, compared whole ------------------

DATA_VOLUMES = ("app-uploads", "app-logs", "app-files", "app-sessions")
# The web server's own state on the files volume (Caddy's autosave, storage-clean timestamps):
# every start of the app rewrites it, so it is the one thing state comparisons leave out.
SERVER_STATE = "./caddy"


def live_values(bundle: Bundle) -> dict[str, str]:
    """The project's live state (.durango/live/<project>.env): {} before its first restore."""
    path = bundle.ws.root / ".durango" / "live" / f"{bundle.project}.env"
    if not path.is_file():
        return {}
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def live_volume(bundle: Bundle, short: str) -> str:
    key = "VOLUME_" + short.upper().replace("-", "_")
    return live_values(bundle).get(key) or f"{bundle.project}_{short}"


def live_database(bundle: Bundle) -> str:
    return live_values(bundle).get("DB_NAME") or DB["name"]


def db_container(bundle: Bundle) -> str:
    return bundle.compose_run("ps", "-aq", "orangescrum-db").stdout.strip()


def db_sql(bundle: Bundle, query: str, database: str = "postgres") -> str:
    """A query as the bundled server's superuser (the test's user), in any database."""
    done = subprocess.run(
        ["docker", "exec", db_container(bundle), "psql", "-U", DB["user"], "-d", database,
         "-XAtc", query],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def live_sql(bundle: Bundle, query: str) -> str:
    """A query in the database the app uses now (a restore may have switched it)."""
    return db_sql(bundle, query, live_database(bundle))


def volume_listing(name: str) -> str:
    """Every path of a volume with owner, mode, size and the sha256 of each file (the web
    server's own state left out), read through a throw-away container."""
    script = (
        f"cd /v && find . ! -path '{SERVER_STATE}' ! -path '{SERVER_STATE}/*' "
        "-exec stat -c '%n %u:%g %a %s' {} + | sort && "
        f"find . -type f ! -path '{SERVER_STATE}/*' -exec sha256sum {{}} + | sort"
    )
    return subprocess.run(
        ["docker", "run", "--rm", "-v", f"{name}:/v:ro", BUSYBOX, "sh", "-c", script],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def data_state(bundle: Bundle) -> tuple[str, dict[str, str]]:
    """What must come back exactly: the rows of actions in the live database, and every file of
    every data volume the app uses now."""
    rows = live_sql(bundle, "SELECT string_agg(name, ',' ORDER BY id) FROM actions")
    return rows, {short: volume_listing(live_volume(bundle, short)) for short in DATA_VOLUMES}


def project_volumes(project: str) -> set[str]:
    out = subprocess.run(
        ["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={project}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return set(out.split())


def databases(bundle: Bundle) -> set[str]:
    return set(db_sql(bundle, "SELECT datname FROM pg_database").split())


def wait_until(check: object, timeout: float = 120, what: str = "the event") -> None:
    """Poll `check()` (a callable) every 50 ms until it is true."""
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what} never came"
        time.sleep(0.05)


def restore_copying(bundle: Bundle) -> bool:
    """A restore's COPY is running: data flowing into a database (not a dump's COPY out)."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY % FROM stdin%'"
    return db_sql(bundle, query) not in ("0", "")


def doit_popen(bundle: Bundle, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "doit", *args, *bundle.settings],
        cwd=bundle.ws.root,
        env={**os.environ, **bundle.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def big_data(bundle: Bundle, rows: int = 400000, upload_mb: int = 150) -> None:
    """Enough data that each phase of a backup or restore takes seconds."""
    bundle.sql(
        "CREATE TABLE padding AS SELECT g, md5(g::text) || repeat(md5((g * 7)::text), 8) AS t "
        f"FROM generate_series(1, {rows}) g"
    )
    bundle.app_exec(f"head -c {upload_mb}000000 /dev/urandom > /data/uploads/big.bin")
