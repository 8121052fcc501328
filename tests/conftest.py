"""Fixtures that build real things: a local base image, git repos, project workspaces.

A workspace is a copy of the project layout (dodo.py, tasks/, builder/, orangescrum-ee/) whose
Dockerfiles are fast fixtures on a local busybox image, with image names unique to the test, so
tests never see each other's images. Tests run `python -m doit` in it, as a user would.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURE_PROJECT = Path(__file__).resolve().parent / "fixtures" / "project"
BUSYBOX = "durango-local/busybox:latest"
STAGES = ["archive", "base", "embed", "extract", "runtime"]


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


@pytest.fixture
def app_repo(tmp_path: Path) -> AppRepo:
    repo = AppRepo(tmp_path / "app")
    repo.path.mkdir()
    git(repo.path, "init", "-q", "-b", "main")
    repo.write("webroot/index.php", "<?php echo 'hello v1';\n")
    repo.write("src/Lib.php", "<?php // library\n")
    repo.write("config/app.php", "<?php return ['debug' => false];\n")
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
            timeout=600,
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
        )

    def edit(self, rel: str, append: str) -> None:
        path = self.root / rel
        path.write_text(path.read_text() + append)


def make_workspace(
    tmp_path: Path, app: AppRepo, engine: docker.DockerClient, extra_config: str = ""
) -> Workspace:
    root = tmp_path / "project"
    root.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(FIXTURE_PROJECT, root)
    shutil.copy(REPO / "dodo.py", root / "dodo.py")
    (root / "tasks").symlink_to(REPO / "tasks")
    prefix = f"durango-test-{uuid.uuid4().hex[:8]}"
    (root / "pyproject.toml").write_text(
        f"""[tool.durango]
source = "{app.path}"
base_image = "{prefix}-base"
embed_image = "{prefix}-embed"
runtime_image = "{prefix}-runtime"
runtime_base = "{BUSYBOX}"
base_args = {{ BUSYBOX_IMAGE = "{BUSYBOX}" }}
{extra_config}
"""
    )
    return Workspace(root, prefix, app, engine)


def remove_images(engine: docker.DockerClient, prefix: str) -> None:
    """Remove every image with a tag starting with `prefix` (all its tags); tolerate images that
    another run on the same engine removes meanwhile."""
    for entry in engine.api.images():
        tags = entry.get("RepoTags") or []
        if any(tag.startswith(prefix) for tag in tags):
            for tag in tags:
                with contextlib.suppress(docker.errors.NotFound):
                    engine.images.remove(tag, force=True)


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


# --- The real builder profile "local": a genuine FrankenPHP built from Debian packages ------------

LOCAL_IMAGES = "durango-ci-local"  # stable names: later runs reuse the images through their keys


def make_local_project(root: Path, app: Path, image_prefix: str = LOCAL_IMAGES) -> Path:
    """A checkout of this project (real builder/ and orangescrum-ee/) building `app` locally."""
    root.mkdir(parents=True)
    for folder in ("builder", "orangescrum-ee"):
        shutil.copytree(
            REPO / folder, root / folder, ignore=shutil.ignore_patterns("orangescrum-ee")
        )
    shutil.copy(REPO / "dodo.py", root / "dodo.py")
    (root / "tasks").symlink_to(REPO / "tasks")
    (root / "pyproject.toml").write_text(
        f"""[tool.durango]
builder = "local"
source = "{app}"
base_image = "{image_prefix}-base"
embed_image = "{image_prefix}-embed"
runtime_image = "{image_prefix}-runtime"
"""
    )
    return root


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


def bundled_compose(root: Path, project: str) -> list[str]:
    """`docker compose` on a workspace's bundle with the bundled-db test variant."""
    bundle = root / "orangescrum-ee"
    return [
        "docker", "compose", "-p", project, "-f", str(bundle / "docker-compose.yaml"),
        "--env-file", str(bundle / ".env.test-bundled"), "--profile", "bundled-db",
    ]  # fmt: skip
