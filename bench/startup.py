"""Start-up: container start to first 200, with the app extracted afresh (a new container, no
cache volume: what every start cost before) and with the app cache volume of an earlier start
(what every later start costs now), for the CakePHP fixture and a 20,000-file version of it.

    python bench/startup.py [--rounds 3]

Builds the two runtime images with the local profile (its base image must exist), starts them
against one migrated and seeded PostgreSQL, and times `docker run` to the first 200 of
/home/healthcheck.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import docker
from common import REPO, app_env, database_network, machine, remove_images
from docker.models.containers import Container
from embed_changes import git, pad, project

sys.path.insert(0, str(REPO / "tests"))
from helpers import cakephp_fixture, copy_tree_writable


def runtime_image(fixture: Path, tmp: Path, files: int) -> tuple[str, int]:
    """Build the fixture (padded to `files`) to a runtime image; (image, files in the app)."""
    app = tmp / "app"
    copy_tree_writable(fixture / "app", app)
    if files:
        pad(app, files, 160)
    git(app, "init", "-q", "-b", "main")
    git(app, "add", "-A")
    git(app, "commit", "-qm", "app")
    count = len(subprocess.run(["git", "ls-files"], cwd=app, capture_output=True, text=True)
                .stdout.splitlines())  # fmt: skip
    root, prefix = project(tmp, app, fixture / "composer-repo")
    done = subprocess.run([sys.executable, "-m", "doit", "runtime"], cwd=root,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode:
        sys.exit(done.stdout[-3000:] + done.stderr[-2000:])
    return f"{prefix}-runtime:latest", count


def time_to_200(engine: docker.DockerClient, image: str, network: str, volume: str) -> float:
    started = time.monotonic()
    mounts = {volume: {"bind": "/data/cache", "mode": "rw"}} if volume else {}
    container: Container = engine.containers.run(
        image, detach=True, network=network, volumes=mounts,
        environment=app_env(network),
        ports={"8080/tcp": ("127.0.0.1", 0)},
    )  # fmt: skip
    try:
        container.reload()
        published = container.ports["8080/tcp"] or [{"HostPort": "0"}]
        url = f"http://127.0.0.1:{published[0]['HostPort']}/home/healthcheck"
        while time.monotonic() - started < 300:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        return time.monotonic() - started
            except OSError:
                container.reload()
                if container.status == "exited":
                    sys.exit(container.logs().decode()[-2000:])
            time.sleep(0.05)
        sys.exit("no 200 within 300 s")
    finally:
        container.remove(force=True, v=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    fixture = cakephp_fixture()
    if fixture is None:
        sys.exit("no CakePHP fixture: set CAKEPHP_FIXTURE")
    engine = docker.from_env()
    print(f"# {machine()}")
    print("| app | fresh extraction (before) | app cache volume reused (now) |")
    print("|---|---|---|")
    with database_network(engine) as network:
        for label, files in (("fixture", 0), ("padded", 20000)):
            with tempfile.TemporaryDirectory(prefix="durango-startup-") as tmp:
                image, count = runtime_image(fixture, Path(tmp), files)
                volume = f"{network}-cache-{files}"
                time_to_200(engine, image, network, volume)  # migrates, seeds, fills the cache
                fresh = [time_to_200(engine, image, network, "") for _ in range(args.rounds)]
                warm = [time_to_200(engine, image, network, volume) for _ in range(args.rounds)]
                print(f"| {label} ({count} files) | {statistics.median(fresh):.1f} s | "
                      f"{statistics.median(warm):.1f} s |", flush=True)  # fmt: skip
                engine.volumes.get(volume).remove(force=True)
                remove_images(image.split("-runtime:")[0])  # every key's tag


if __name__ == "__main__":
    main()
