"""Served speed: the CakePHP fixture in our runtime container vs Debian's php8.2-fpm + nginx with
the same app tree, opcache on in both, against one real PostgreSQL, in one run.

Two pages: the health endpoint (queries the database) and the home page (in production mode the
skeleton renders its 404 error template there: router, view, layout, error handler). A fixed
number of requests at concurrency 1 and 8 (h2load, HTTP/1.1 keep-alive); requests/s and p50/p99
latency. Each server gets the same single CPU (cpuset); the database and h2load share the other.
The servers take turns, page by page, for several rounds, so that a slow minute of the machine
falls on all of them; the median of the rounds is shown, with the ratio to php-fpm. Each
`--variant` adds another FrankenPHP server with that environment (thread counts, access log), so
settings are compared in the same run.

    python bench/serve.py [--requests 2000] [--rounds 3] [--quick]
        [--variant ACCESS_LOG=discard] [--variant FRANKENPHP_MAX_THREADS=auto,ACCESS_LOG=discard]
        [--runtime-image durango-ci-cakephp-runtime:latest]
        [--embed-image durango-ci-cakephp-embed:latest]

The images are the ones the CakePHP tests build (tests/test_cakephp.py). `--quick` is the
reduced form CI runs so that this script cannot rot: 100 requests, no figures to read.
"""

from __future__ import annotations

import argparse
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
from pathlib import Path

import docker
from common import REPO, app_env, database_network, machine
from docker.models.containers import Container

# label, path, the status every answer must have. The skeleton's home page renders the 404
# error template (layout, view, error handler) when debug is off, as in production.
PAGES = [("health (database)", "/home/healthcheck", 200), ("home (404 template)", "/", 404)]
SERVER_CPU, OTHER_CPU = "1", "0"
FPM = "php-fpm + nginx"


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


def start_server(
    engine: docker.DockerClient, image: str, network: str, env: dict[str, str]
) -> tuple[Container, int]:
    """One server on the benchmark CPU, published on a free loopback port, answering."""
    container = engine.containers.run(
        image, detach=True, network=network, cpuset_cpus=SERVER_CPU, environment=env,
        ports={"8080/tcp": ("127.0.0.1", 0)},
    )  # fmt: skip
    container.reload()
    published = container.ports["8080/tcp"] or [{"HostPort": "0"}]
    port = int(published[0]["HostPort"])
    wait_for(f"http://127.0.0.1:{port}/home/healthcheck")
    return container, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="per page and concurrency")
    parser.add_argument("--rounds", type=int, default=3, help="servers alternate; median taken")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runtime-image", default="durango-ci-cakephp-runtime:latest")
    parser.add_argument("--embed-image", default="durango-ci-cakephp-embed:latest")
    parser.add_argument("--workers", type=int, default=8, help="php-fpm workers")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=VALUE[,...]",
                        help="another FrankenPHP server with this environment")  # fmt: skip
    args = parser.parse_args()
    requests, rounds = (100, 1) if args.quick else (args.requests, args.rounds)
    engine = docker.from_env()
    started: list[Container] = []
    images: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="durango-serve-") as tmp:
            images.append(fpm_image(engine, args.embed_image, Path(tmp)))
        with database_network(engine, cpuset=OTHER_CPU) as network:
            try:
                measure(engine, network, images[0], args, requests, rounds, started)
            finally:
                for container in started:
                    container.remove(force=True, v=True)
    finally:
        for image in images:
            engine.images.remove(image, force=True)


def measure(engine: docker.DockerClient, network: str, fpm: str, args: argparse.Namespace,
            requests: int, rounds: int, started: list[Container]) -> None:  # fmt: skip
    """Start the servers (appended to `started`), load them in turns, print the table."""
    env = app_env(network)
    servers = {FPM: (fpm, {"PHP_WORKERS": str(args.workers)}),
               "FrankenPHP (defaults)": (args.runtime_image, {})}  # fmt: skip
    for variant in args.variant:
        tuning = dict(item.split("=", 1) for item in variant.split(","))
        servers[f"FrankenPHP {variant}"] = (args.runtime_image, tuning)
    ports = {}
    for label, (image, extra) in servers.items():
        container, ports[label] = start_server(engine, image, network, {**env, **extra})
        started.append(container)
    results: dict[tuple[str, str, int], list[tuple[float, float, float]]] = {}
    for page, path, status in PAGES:
        for port in ports.values():  # warm opcache and the database connections
            load(f"http://127.0.0.1:{port}{path}", status, 8, 200)
        for connections in (1, 8):
            for _ in range(rounds):
                for label, port in ports.items():
                    url = f"http://127.0.0.1:{port}{path}"
                    measured = load(url, status, connections, requests)
                    results.setdefault((label, page, connections), []).append(measured)
    print(f"# {machine()}; {requests} requests per run, {rounds} rounds, median shown; "
          f"servers pinned to CPU {SERVER_CPU}")  # fmt: skip
    print("| server | page | concurrency | requests/s | vs php-fpm | p50 | p99 |")
    print("|---|---|---|---|---|---|---|")
    for page, _, _ in PAGES:
        for connections in (1, 8):
            baseline = statistics.median(r[0] for r in results[(FPM, page, connections)])
            for label in ports:
                runs = results[(label, page, connections)]
                rate = statistics.median(r[0] for r in runs)
                p50 = statistics.median(r[1] for r in runs)
                p99 = statistics.median(r[2] for r in runs)
                print(f"| {label} | {page} | {connections} | {rate:.0f} | "
                      f"{rate / baseline:.2f}x | {p50:.1f} ms | {p99:.1f} ms |")  # fmt: skip


if __name__ == "__main__":
    main()
