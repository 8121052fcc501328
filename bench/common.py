"""Shared set-up for the benchmarks: a throw-away project on the fixture Dockerfiles, an app repo
of a chosen size, timed doit runs, and a PostgreSQL for the served app. Images are named per run
and removed afterwards."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "project"
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


def machine() -> str:
    cores = os.cpu_count()
    return f"{platform.node()} ({cores} cores, {platform.machine()}, {platform.python_version()})"


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


def make_project(tmp: Path, app: Path, embed_args: str = "") -> tuple[Path, str]:
    subprocess.run([str(REPO / "scripts" / "make-local-images.sh"), "busybox"], check=True)
    root = tmp / "project"
    shutil.copytree(FIXTURE, root)
    shutil.copy(REPO / "dodo.py", root / "dodo.py")
    (root / "tasks").symlink_to(REPO / "tasks")
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


def doit(root: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "doit", *args], cwd=root, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"doit {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


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


def app_env(network: str) -> dict[str, str]:
    """What the served app needs to reach the database of `database_network`."""
    return {"DB_HOST": f"{network}-db", "SECURITY_SALT": SALT, **DB}


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
            yield network
        finally:
            db.remove(force=True, v=True)
    finally:
        engine.networks.get(network).remove()
