"""Shared set-up for the benchmarks: throw-away projects (on the fixture Dockerfiles, or on the real
ones with a local profile), app repositories, timed doit runs with their peak memory, the floor a
change is compared with, the machine's load, container start-up, and a PostgreSQL for the served
app. Images are named per run and removed afterwards."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.models.containers import Container

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "project"
NO_FACTS = REPO / "tests" / "fixtures" / "no-facts.toml"
BUSYBOX = "durango-local/busybox:latest"
POSTGRES = "durango-local/postgres:15"
DB = {"DB_NAME": "bench", "DB_USERNAME": "bench", "DB_PASSWORD": "bench-only-4d2f"}
SALT = "bench-only-salt-0123456789abcdef0123456789abcdef"
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
}
# The extension list of the tests' local builds: the same base image as theirs (same key).
PHP_EXTENSIONS = (
    "bcmath,ctype,curl,dom,fileinfo,filter,gd,iconv,intl,mbstring,mysqli,opcache,openssl,pdo,"
    "pdo_mysql,pdo_pgsql,pgsql,phar,redis,session,simplexml,sockets,sodium,tokenizer,xml,"
    "xmlreader,xmlwriter,zip,zlib"
)


def machine() -> str:
    cores = os.cpu_count()
    return f"{platform.node()} ({cores} cores, {platform.machine()}, {platform.python_version()})"


def load() -> float:
    """The 1-minute load average: recorded before and after every measurement, because other
    work shares this machine."""
    return os.getloadavg()[0]


def load_range(loads: list[float]) -> str:
    return f"{min(loads):.1f}-{max(loads):.1f}"


def git(path: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=path, check=True, env=GIT_ENV, capture_output=True, text=True
    )
    return done.stdout


def make_app(path: Path, files: int) -> None:
    """A git repository with `files` small PHP files spread over 100 folders."""
    path.mkdir(parents=True)
    for i in range(files):
        folder = path / "src" / f"m{i % 100:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"F{i}.php").write_text(f"<?php // file {i}\nreturn {i};\n")
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    subprocess.run(["git", "add", "-A"], cwd=path, check=True, env=GIT_ENV)
    subprocess.run(["git", "commit", "-qm", "app"], cwd=path, check=True, env=GIT_ENV)


def _checkout(root: Path, folders: dict[Path, str]) -> None:
    """dodo.py, a snapshot of tasks/ and the given folders: edits to this checkout while a
    benchmark runs (hours) do not reach it half-way."""
    root.mkdir(parents=True)
    skip = shutil.ignore_patterns("__pycache__", "orangescrum-ee")  # the bundle's binary too
    for source, name in folders.items():
        shutil.copytree(source, root / name, ignore=skip)
    shutil.copytree(REPO / "tasks", root / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dodo.py", root / "dodo.py")


def make_project(tmp: Path, app: Path, embed_args: str = "") -> tuple[Path, str]:
    """A project on the fixture Dockerfiles (busybox stand-ins: no PHP), images of this run."""
    subprocess.run([str(REPO / "scripts" / "make-local-images.sh"), "busybox"], check=True)
    root = tmp / "project"
    _checkout(root, {FIXTURE / "builder": "builder", FIXTURE / "orangescrum-ee": "orangescrum-ee"})
    prefix = f"durango-bench-{uuid.uuid4().hex[:8]}"
    (root / "pyproject.toml").write_text(
        f"""[tool.durango]
source = "{app}"
base_image = "{prefix}-base"
embed_image = "{prefix}-embed"
runtime_image = "{prefix}-runtime"
runtime_base = "{BUSYBOX}"
base_args = {{ BUSYBOX_IMAGE = "{BUSYBOX}" }}
{embed_args}
"""
    )
    return root, prefix


def project(
    root: Path,
    app: Path,
    prefix: str,
    *,
    builder: str = "local",
    facts: Path | None = None,
    base_image: str = "",
    extra: str = "",
) -> Path:
    """A project with the real builder/ and orangescrum-ee/ building `app` with a local profile.
    The base image is the tests' (durango-ci-<builder>-base: same key, present) unless named."""
    _checkout(root, {REPO / "builder": "builder", REPO / "orangescrum-ee": "orangescrum-ee"})
    (root / "pyproject.toml").write_text(f"""[tool.durango]
builder = "{builder}"
source = "{app}"
app_facts = "{facts or NO_FACTS}"
php_extensions = "{PHP_EXTENSIONS}"
base_image = "{base_image or f"durango-ci-{builder}-base"}"
embed_image = "{prefix}-embed"
runtime_image = "{prefix}-runtime"
{extra}""")
    return root


# The base stage's key of a project, computed by its own tasks/ (what `doit base` would build).
BASE_KEY = """
from pathlib import Path
from tasks.build import base
from tasks.core.pipeline import Pipeline
from tasks.core.settings import load_settings
from tasks.engine.containers import Containers
from tasks.engine.images import Engine
engine = Engine()
pipe = Pipeline(load_settings(Path.cwd()), engine, Containers(engine))
print(base.inputs(pipe).key[:12])
"""


def require_base(root: Path, image: str) -> None:
    """Exit unless `image` (name:tag-less) holds the base this project's key calls for: a
    benchmark never starts a 10-minute base build, nor moves another name's `latest`."""
    done = subprocess.run([sys.executable, "-c", BASE_KEY], cwd=root, capture_output=True,
                          text=True)  # fmt: skip
    key = done.stdout.strip()
    found = subprocess.run(["docker", "image", "inspect", f"{image}:{key}"], capture_output=True)
    if done.returncode or found.returncode:
        sys.exit(f"no base image {image}:{key or '?'} for this checkout's builder/: build it with "
                 f"`doit base builder=<profile> base_image={image}` first")  # fmt: skip


def doit(root: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "doit", *args], cwd=root, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"doit {' '.join(args)} failed:\n{done.stdout[-4000:]}{done.stderr[-2000:]}")
    return done.stdout


# doit in this very process, so that its own peak RSS is ours; at exit (doit ends with
# sys.exit) one line with that peak and the largest child's (git, the binary verify runs, ...).
RSS_PROBE = """
import atexit, resource, runpy, sys
def said():
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"durango-bench-rss {own} {child}", file=sys.stderr)
atexit.register(said)
sys.argv = ["doit", *sys.argv[1:]]
runpy.run_module("doit", run_name="__main__")
"""


@dataclass(frozen=True)
class DoitRun:
    """One timed doit run: its output, wall time, and peak RSS (MB) of doit itself and of the
    largest process it started."""

    out: str
    seconds: float
    rss_mb: float
    child_rss_mb: float

    def stage(self, pattern: str) -> float | None:
        """A stage's own time as doit printed it; None when the stage did not run."""
        found = re.search(pattern, self.out, re.M)
        return float(found.group(1)) if found else None


def timed_doit(root: Path, *args: str) -> DoitRun:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, *args],
        cwd=root, capture_output=True, text=True, env=BENCH_ENV,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"doit {' '.join(args)} failed:\n{done.stdout[-4000:]}{done.stderr[-2000:]}")
    found = re.search(r"^durango-bench-rss (\d+) (\d+)$", done.stderr, re.M)
    own, child = (int(found.group(1)), int(found.group(2))) if found else (0, 0)
    return DoitRun(done.stdout + done.stderr, seconds, own / 1024, child / 1024)


# The floor of a change to a verified binary: what any tool must do at least, i.e. get the
# commit's tree out of git and write a new binary of the same size (copy + hash of the old one).
FLOOR = (
    'set -e; git -C "$1" archive --format=tar HEAD | tar -x -C "$2"; '
    'cp "$3" "$2.bin"; sha256sum "$2.bin" >/dev/null'
)


def floor_seconds(app: Path, binary: Path) -> float:
    """`git archive | tar -x` of the app into a temp folder, plus cp + sha256 of the binary."""
    with tempfile.TemporaryDirectory(prefix="durango-bench-floor-") as tmp:
        target = Path(tmp) / "tree"
        target.mkdir()
        started = time.perf_counter()
        subprocess.run(["sh", "-c", FLOOR, "sh", str(app), str(target), str(binary)], check=True)
        return time.perf_counter() - started


# As on a user's machine: Python caches bytecode (site-packages arrive compiled; the project's
# modules are compiled on the first run). Some CI images set PYTHONDONTWRITEBYTECODE, which would
# recompile the project on every run and measure the compiler instead of the tool.
BENCH_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(cmd: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, env=BENCH_ENV)
    return time.perf_counter() - started


def median_pair(a: list[str], b: list[str], cwd: Path, rounds: int) -> tuple[float, float]:
    """Median wall time of two commands, interleaved so both see the same machine state."""
    timed(a, cwd), timed(b, cwd)  # warm-up: bytecode written, file caches filled
    times_a, times_b = [], []
    for _ in range(rounds):
        times_a.append(timed(a, cwd))
        times_b.append(timed(b, cwd))
    return statistics.median(times_a), statistics.median(times_b)


def peak_rss_mb(cmd: list[str], cwd: Path) -> float:
    """Peak resident memory of one child process (the only child waited for by a fresh python)."""
    probe = (
        "import resource, subprocess, sys; "
        f"subprocess.run({cmd!r}, cwd={str(cwd)!r}, check=True, capture_output=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024


def remove_images(prefix: str) -> None:
    out = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    ours = [ref for ref in out if ref.startswith(prefix)]
    if ours:
        subprocess.run(["docker", "rmi", "-f", *ours], capture_output=True, check=False)


# The database's address on each network database_network made: the app gets the IP, not the
# name, because on this shared engine (swarm mode, hundreds of containers) its embedded DNS
# failed lookups under load, which a benchmark of the app must not measure.
DB_ADDRESS: dict[str, str] = {}


def app_env(network: str) -> dict[str, str]:
    """What the served app needs to reach the database of `database_network`."""
    return {"DB_HOST": DB_ADDRESS.get(network, f"{network}-db"), "SECURITY_SALT": SALT, **DB}


@contextlib.contextmanager
def database_network(engine: docker.DockerClient, cpuset: str | None = None) -> Iterator[str]:
    """A network with an empty PostgreSQL on it (`<network>-db`), both removed afterwards."""
    network = f"durango-bench-{uuid.uuid4().hex[:8]}"
    engine.networks.create(network)
    try:
        db = engine.containers.run(
            POSTGRES, detach=True, network=network, name=f"{network}-db", cpuset_cpus=cpuset,
            environment={"POSTGRES_USER": DB["DB_USERNAME"],
                         "POSTGRES_PASSWORD": DB["DB_PASSWORD"], "POSTGRES_DB": DB["DB_NAME"]},
        )  # fmt: skip
        try:
            db.reload()
            DB_ADDRESS[network] = db.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
            yield network
        finally:
            DB_ADDRESS.pop(network, None)
            db.remove(force=True, v=True)
    finally:
        engine.networks.get(network).remove()


def published_port(container: Container) -> int:
    container.reload()
    published = container.ports["8080/tcp"] or [{"HostPort": "0"}]
    return int(published[0]["HostPort"])


def wait_for_status(
    container: Container, url: str, started: float, ok: tuple[int, ...] = (200,), limit: float = 300
) -> float:
    """Seconds from `started` to the first answer of `url` with an `ok` status (redirects not
    followed); the container's log when it exits first."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    while time.monotonic() - started < limit:
        try:
            with opener.open(url, timeout=5) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError:
            status = 0
        if status in ok:
            return time.monotonic() - started
        if status == 0:
            container.reload()
            if container.status == "exited":
                sys.exit(f"{url}: the container exited:\n{container.logs().decode()[-3000:]}")
        time.sleep(0.05)
    sys.exit(f"{url}: no {ok} within {limit:.0f} s:\n{container.logs().decode()[-3000:]}")


def time_to_200(
    engine: docker.DockerClient,
    image: str,
    network: str,
    volume: str,
    path: str,
    ok: tuple[int, ...] = (200,),
) -> float:
    """`docker run` to the first `ok` answer of `path`; with `volume`, that volume is the app
    cache (/data/cache: the bundle's app-cache volume), else the container starts with none."""
    started = time.monotonic()
    mounts = {volume: {"bind": "/data/cache", "mode": "rw"}} if volume else {}
    container: Container = engine.containers.run(
        image, detach=True, network=network, volumes=mounts,
        environment={**app_env(network), "APP_URL": "http://127.0.0.1:8080"},
        ports={"8080/tcp": ("127.0.0.1", 0)},
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{published_port(container)}{path}"
        return wait_for_status(container, url, started, ok)
    finally:
        container.remove(force=True, v=True)
