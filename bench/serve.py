"""Served speed: the CakePHP fixture in our runtime container vs Debian's php8.2-fpm + nginx with
the same app tree, opcache on in both, against one real PostgreSQL, in one run.

Two pages: the health endpoint (queries the database) and the home page (in production mode the
skeleton renders its 404 error template there: router, view, layout, error handler). A fixed
number of requests at concurrency 1 and 8 (h2load, HTTP/1.1 keep-alive); requests/s and p50/p99
latency. Each server gets the same single CPU (cpuset); the database and h2load share the other.

    python bench/serve.py [--requests 5000] [--quick]
        [--runtime-image durango-ci-cakephp-runtime:latest]
        [--embed-image durango-ci-cakephp-embed:latest]

The images are the ones the CakePHP tests build (tests/test_cakephp.py). `--quick` is the
reduced form CI runs so that this script cannot rot: 100 requests, no figures to read.
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
# label, path, the status every answer must have. The skeleton's home page renders the 404
# error template (layout, view, error handler) when debug is off, as in production.
PAGES = [("health (database)", "/home/healthcheck", 200), ("home (404 template)", "/", 404)]
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


def load(url: str, status: int, connections: int, requests: int) -> tuple[float, float, float]:
    """requests/s, p50 and p99 in ms for a fixed number of requests over HTTP/1.1 keep-alive.

    h2load (pinned to the other CPU) logs every request; percentiles come from that log, and a
    single answer with another status fails the run, so that a fast failure is never measured.
    """
    with tempfile.NamedTemporaryFile(prefix="durango-h2load-") as log:
        out = subprocess.run(
            ["taskset", "-c", OTHER_CPU, "h2load", "--h1", "-t1", f"-c{connections}",
             f"-n{requests}", f"--log-file={log.name}", url],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        rows = [line.split("\t") for line in Path(log.name).read_text().splitlines()]
    failed = [row[1] for row in rows if row[1] != str(status)]
    if len(rows) != requests or failed:
        sys.exit(f"{url}: {len(rows)} of {requests} answered; not {status}: {failed[:5]}\n{out}")
    rate = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))  # type: ignore[union-attr]
    micros = sorted(int(row[2]) for row in rows)
    return rate, micros[len(micros) // 2] / 1000, micros[int(len(micros) * 0.99)] / 1000


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
    parser.add_argument("--requests", type=int, default=5000, help="per page and concurrency")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runtime-image", default="durango-ci-cakephp-runtime:latest")
    parser.add_argument("--embed-image", default="durango-ci-cakephp-embed:latest")
    parser.add_argument("--workers", type=int, default=8, help="php-fpm workers")
    parser.add_argument("--frankenphp-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the FrankenPHP container (tuning)")  # fmt: skip
    args = parser.parse_args()
    requests = 100 if args.quick else args.requests
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
        print(f"# {machine()}; {requests} requests per run; servers pinned to CPU {SERVER_CPU}")
        print("| server | page | concurrency | requests/s | p50 | p99 |")
        print("|---|---|---|---|---|---|")
        for label, port in ports.items():
            for page, path, status in PAGES:
                url = f"http://127.0.0.1:{port}{path}"
                load(url, status, 8, 200)  # warm opcache and the database connections
                for connections in (1, 8):
                    rate, p50, p99 = load(url, status, connections, requests)
                    print(f"| {label} | {page} | {connections} | {rate:.0f} | {p50:.1f} ms"
                          f" | {p99:.1f} ms |", flush=True)  # fmt: skip
    finally:
        for container in started:
            container.remove(force=True, v=True)
        engine.networks.get(network).remove()
        for image in images:
            engine.images.remove(image, force=True)


if __name__ == "__main__":
    main()
