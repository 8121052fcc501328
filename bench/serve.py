"""Served speed: the CakePHP fixture in our runtime container vs Debian's php8.2-fpm + nginx with
the same app tree, opcache on in both, against one real PostgreSQL, in one run.

Two pages: the health endpoint (queries the database) and the rendered home template. `wrk` at
concurrency 1 and 8; requests/s and p50/p99 latency. Each server gets the same single CPU
(cpuset); the database and wrk share the other.

    python bench/serve.py [--seconds 10] [--quick]
        [--runtime-image durango-ci-cakephp-runtime:latest]
        [--embed-image durango-ci-cakephp-embed:latest]

The images are the ones the CakePHP tests build (tests/test_cakephp.py). `--quick` is the
reduced form CI runs so that this script cannot rot: two-second runs, no figures to read.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import docker
from common import REPO, machine
from docker.models.containers import Container

POSTGRES = "durango-local/postgres:15"
DB = {"DB_NAME": "bench", "DB_USERNAME": "bench", "DB_PASSWORD": "bench-only-4d2f"}
SALT = "bench-only-salt-0123456789abcdef0123456789abcdef"
PAGES = {"health (database)": "/home/healthcheck", "home (template)": "/"}
SERVER_CPU, OTHER_CPU = "1", "0"


def wait_for(url: str, timeout: float = 180) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    sys.exit(f"{url} did not answer 200 within {timeout}s")


def wrk(url: str, connections: int, seconds: int) -> tuple[float, str, str]:
    """requests/s, p50, p99 (wrk pinned to the other CPU)."""
    out = subprocess.run(
        ["taskset", "-c", OTHER_CPU, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
         "--latency", url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    return rate, p50, p99


def fpm_image(engine: docker.DockerClient, embed_image: str, tmp: Path) -> str:
    """php-fpm + nginx with the app tree the binary embeds (vendor and autoloader included)."""
    context = tmp / "fpm"
    shutil.copytree(REPO / "bench" / "fpm", context)
    holder = engine.containers.create(embed_image, ["true"])
    try:
        tar = tmp / "app.tar"
        with tar.open("wb") as out:
            for chunk in holder.get_archive("/go/src/app/dist/app")[0]:
                out.write(chunk)
        subprocess.run(["tar", "-xf", str(tar), "-C", str(context)], check=True)
    finally:
        holder.remove(force=True, v=True)
    for folder in ("tmp", "logs"):
        (context / "app" / folder).mkdir(exist_ok=True)
    tag = f"durango-bench-fpm:{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "build", "-q", "-t", tag, str(context)], check=True,
                   capture_output=True)  # fmt: skip
    return tag


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runtime-image", default="durango-ci-cakephp-runtime:latest")
    parser.add_argument("--embed-image", default="durango-ci-cakephp-embed:latest")
    parser.add_argument("--workers", type=int, default=8, help="php-fpm workers")
    parser.add_argument("--frankenphp-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the FrankenPHP container (tuning)")  # fmt: skip
    args = parser.parse_args()
    seconds = 2 if args.quick else args.seconds
    engine = docker.from_env()
    network = f"durango-bench-{uuid.uuid4().hex[:8]}"
    engine.networks.create(network)
    started: list[Container] = []
    images: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="durango-serve-") as tmp:
            images.append(fpm_image(engine, args.embed_image, Path(tmp)))
        db = engine.containers.run(
            POSTGRES, detach=True, network=network, name=f"{network}-db", cpuset_cpus=OTHER_CPU,
            environment={"POSTGRES_USER": DB["DB_USERNAME"],
                         "POSTGRES_PASSWORD": DB["DB_PASSWORD"], "POSTGRES_DB": DB["DB_NAME"]},
        )  # fmt: skip
        started.append(db)
        env = {"DB_HOST": f"{network}-db", "SECURITY_SALT": SALT, **DB}
        servers = {"FrankenPHP (runtime image)": args.runtime_image, "php-fpm + nginx": images[0]}
        ports = {}
        tuning = dict(item.split("=", 1) for item in args.frankenphp_env)
        for label, image in servers.items():
            extra = tuning if image == args.runtime_image else {"PHP_WORKERS": str(args.workers)}
            container = engine.containers.run(
                image, detach=True, network=network, cpuset_cpus=SERVER_CPU,
                environment={**env, **extra},
                ports={"8080/tcp": ("127.0.0.1", 0)},
            )  # fmt: skip
            started.append(container)
            container.reload()
            published = container.ports["8080/tcp"] or [{"HostPort": "0"}]
            ports[label] = int(published[0]["HostPort"])
            wait_for(f"http://127.0.0.1:{ports[label]}/home/healthcheck")
        print(f"# {machine()}; {seconds}s per run; servers pinned to CPU {SERVER_CPU}")
        print("| server | page | concurrency | requests/s | p50 | p99 |")
        print("|---|---|---|---|---|---|")
        for label, port in ports.items():
            for page, path in PAGES.items():
                url = f"http://127.0.0.1:{port}{path}"
                wrk(url, 1, 1)  # warm opcache and the database connection
                for connections in (1, 8):
                    rate, p50, p99 = wrk(url, connections, seconds)
                    print(f"| {label} | {page} | {connections} | {rate:.0f} | {p50} | {p99} |",
                          flush=True)  # fmt: skip
    finally:
        for container in started:
            container.remove(force=True, v=True)
        engine.networks.get(network).remove()
        for image in images:
            engine.images.remove(image, force=True)


if __name__ == "__main__":
    main()
