"""Served speed of OrangeScrum CE: its runtime image (FrankenPHP) against the app's own deployment,
Apache 2.4 prefork + mod_php from Debian's packages (bench/apache), with the same app tree and the
same PostgreSQL, in one run; and each server's memory at idle and under load.

Two pages: the login page after the first company has signed up (/users/login: CakePHP boots,
session, CSRF token, the form's view; 200), and a static stylesheet (/css/fonts-local.css). Each
page at concurrency 1 and 8 for a fixed time (h2load, HTTP/1.1 keep-alive, no Accept-Encoding
unless `--accept-encoding`); requests/s and p50/p99 latency from h2load's per-request log, every
answer checked to be 200. Each server is pinned to CPU 1; PostgreSQL and h2load share CPU 0.
The servers take turns, measurement by measurement, for several rounds, so that a slow minute of
the machine falls on all of them; the median is shown with the ratio to Apache. The load average
is recorded before and after each measurement. Both servers write their access log (their
defaults: Apache's combined format, Caddy's JSON lines; each to the container's stdout) unless
`--access-log off` turns both off; `--access-log file` writes each to a file in its container
instead (Apache's /var/log/apache2/access.log, as the app's own image does; FrankenPHP's
ACCESS_LOG=file /data/logs/access.log).

Memory is the container's cgroup (bench/memory.py): at idle (10 s after warm-up) and while the
login page is loaded at concurrency 8.

    python bench/serve.py [--duration 10] [--rounds 3] [--access-log on|off|file] [--quick]
        [--variant FRANKENPHP_NUM_THREADS=8] [--variant ACCESS_LOG=discard,...]
        [--runtime-image IMAGE] [--also LABEL=IMAGE] [--caddyfile LABEL=PATH]

Without `--runtime-image` the app is built first (the local profile, its base image present).
Each `--variant` adds a FrankenPHP server of the same image with that environment; each `--also`
another runtime image of the app (e.g. one built with `builder=local-static`); each
`--caddyfile` the same app built with that file as builder/Caddyfile (a configuration change
measured against the shipped one). `--quick` is the reduced form a test runs so that this script
cannot rot: 3 s per measurement, 1 round.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import docker
import memory
from common import (
    REPO,
    app_env,
    database_network,
    load,
    load_range,
    machine,
    published_port,
    remove_images,
    timed_doit,
    wait_for_status,
)
from docker.models.containers import Container

sys.path.insert(0, str(REPO / "tests"))
from helpers import copy_tree_writable
from orangescrum import Client, clone
from orangescrum import fixture as orangescrum_fixture

LOGIN, CSS = "/users/login", "/css/fonts-local.css"
PAGES = [("login", LOGIN), ("static CSS", CSS)]
SERVER_CPU, OTHER_CPU = "1", "0"
APACHE = "Apache 2.4 + mod_php"
BROWSER_ENCODINGS = "gzip, deflate, br, zstd"
# --access-log: (Apache's ACCESS_LOG, FrankenPHP's ACCESS_LOG)
ACCESS_LOGS = {
    "on": ("stdout", "stdout"),
    "off": ("discard", "discard"),
    "file": ("file", "file /data/logs/access.log"),
}


@dataclass
class Server:
    label: str
    container: Container
    port: int
    runs: dict[tuple[str, int], list[tuple[float, float, float]]] = field(default_factory=dict)
    loads: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    idle: memory.Peak = field(default_factory=memory.Peak)
    busy: list[memory.Peak] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def h2load(url: str, connections: int, seconds: float, encoding: str) -> tuple[float, float, float]:
    """requests/s, p50 and p99 in ms for `seconds` of HTTP/1.1 keep-alive requests.

    h2load (pinned to the other CPU) logs every request; percentiles come from that log, and a
    single answer other than 200 fails the run, so that a fast failure is never measured (a
    request still open when the time is up is logged without a status: not an answer).
    """
    header = ["-H", f"Accept-Encoding: {encoding}"] if encoding else []
    with tempfile.NamedTemporaryFile(prefix="durango-bench-h2load-") as log:
        out = subprocess.run(
            ["taskset", "-c", OTHER_CPU, "h2load", "--h1", "-t1", f"-c{connections}",
             f"-D{int(seconds * 1000)}ms", "--warm-up-time=1", *header,
             f"--log-file={log.name}", url],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        rows = [line.split("\t") for line in Path(log.name).read_text().splitlines()]
    answers = [row for row in rows if int(row[1]) > 0]
    failed = [row[1] for row in answers if row[1] != "200"]
    if not answers or failed:
        sys.exit(f"{url}: {len(answers)} answers; not 200: {failed[:5]}\n{out[-1500:]}")
    found = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    if found is None:
        sys.exit(f"h2load said no rate:\n{out}")
    micros = sorted(int(row[2]) for row in answers)
    p50, p99 = micros[len(micros) // 2], micros[int(len(micros) * 0.99)]
    return float(found.group(1)), p50 / 1000, p99 / 1000


def build_runtime(tmp: Path, caddyfiles: list[str]) -> tuple[str, str, list[tuple[str, str]]]:
    """The real app's runtime image, local profile, and one more per LABEL=PATH of `caddyfiles`
    (the same app with that file as builder/Caddyfile): (image, prefix to remove, [(label,
    image ID)])."""
    from embed_changes import LOCAL_BASE, os_project  # the same project as that benchmark

    app = clone(tmp / "app")
    repository = tmp / "composer-repo"
    copy_tree_writable(orangescrum_fixture() / "composer-repo", repository)
    prefix = f"durango-bench-{uuid.uuid4().hex[:8]}"
    root = os_project(tmp / "project", app, repository, prefix, LOCAL_BASE.split(":")[0])
    timed_doit(root, "runtime")
    image = f"{prefix}-runtime:latest"
    engine = docker.from_env()
    main_id = str(engine.images.get(image).id)
    others = []
    original = (root / "builder" / "Caddyfile").read_text()
    for entry in caddyfiles:
        label, _, path = entry.partition("=")
        (root / "builder" / "Caddyfile").write_text(Path(path).read_text())
        timed_doit(root, "runtime")
        others.append((label, str(engine.images.get(image).id)))
    (root / "builder" / "Caddyfile").write_text(original)
    return main_id, prefix, others


def start(engine: docker.DockerClient, label: str, image: str, network: str,
          env: dict[str, str]) -> Server:  # fmt: skip
    """One server on the benchmark CPU, on a free loopback port, its login page answering."""
    container = engine.containers.run(
        image, detach=True, network=network, cpuset_cpus=SERVER_CPU,
        environment={**app_env(network), "APP_URL": "http://127.0.0.1:8080", **env},
        ports={"8080/tcp": ("127.0.0.1", 0)}, name=f"durango-bench-{uuid.uuid4().hex[:8]}",
    )  # fmt: skip
    try:
        server = Server(label, container, published_port(container))
        wait_for_status(container, server.url(LOGIN), time.monotonic(), ok=(200, 302))
    except BaseException:
        container.remove(force=True, v=True)
        raise
    return server


def app_tree(container: Container, dest: Path) -> None:
    """The app tree the binary runs, out of a running FrankenPHP container: its links into /data
    (the writable paths) become the folders, or copies of the files (config/app_local.php and
    config/install.ini, which the entrypoint wrote), they point at; .frankenphp/ stays out."""
    code, out = container.exec_run(["orangescrum-ee", "php-cli", ".frankenphp/app-path.php"])
    said = out.decode() if isinstance(out, bytes) else ""
    if code:
        sys.exit(f"cannot locate the app in the container: {said}")
    app_dir = said.strip()
    stream, _ = container.get_archive(app_dir)
    archive = dest.with_suffix(".tar")
    with archive.open("wb") as written:
        for chunk in stream:
            written.write(chunk)
    top = Path(app_dir).name
    with tarfile.open(archive) as tar:
        for member in tar:
            rel = Path(member.name).relative_to(top) if member.name != top else Path()
            if rel.parts and rel.parts[0] == ".frankenphp":
                continue
            target = dest / rel
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.issym() and member.linkname.startswith("/data/"):
                _copy_linked(container, member.linkname, target)
            elif member.issym():
                target.symlink_to(member.linkname)
            elif member.isfile():
                source = tar.extractfile(member)
                assert source is not None
                target.write_bytes(source.read())
                target.chmod(0o755 if member.mode & 0o111 else 0o644)


def _copy_linked(container: Container, path: str, target: Path) -> None:
    try:
        stream, stat = container.get_archive(path)
    except docker.errors.NotFound:
        return  # a writable file the app has not written (config/smtp.php)
    if (stat or {}).get("mode", 0) & (1 << 31):  # a folder: its place only, not the instance's data
        target.mkdir(parents=True, exist_ok=True)
        return
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.next()
        source = tar.extractfile(member) if member else None
        if source is not None:
            target.write_bytes(source.read())
            target.chmod(0o644)


def apache_image(frankenphp: Server, tmp: Path) -> str:
    context = tmp / "apache"
    shutil.copytree(REPO / "bench" / "apache", context)
    app_tree(frankenphp.container, context / "app")
    tag = f"durango-bench-apache:{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "build", "-q", "-t", tag, str(context)], check=True,
                   capture_output=True)  # fmt: skip
    return tag


def same_pages(servers: list[Server]) -> None:
    """Every server gives the signed-up login page and the same stylesheet."""
    css = set()
    for server in servers:
        with urllib.request.urlopen(server.url(LOGIN), timeout=30) as page:
            body = page.read().decode(errors="replace")
            if page.status != 200 or not re.search(r"<title>\s*Sign In", body):
                sys.exit(f"{server.label}: {LOGIN} is not the login page: {body[:300]}")
        with urllib.request.urlopen(server.url(CSS), timeout=30) as sheet:
            css.add(sheet.read())
    if len(css) != 1:
        sys.exit(f"the servers send different {CSS}")


def measure(servers: list[Server], seconds: float, rounds: int, encoding: str) -> None:
    """Turns: for each page and concurrency, each round, every server once; memory of the
    login page at concurrency 8."""
    for _, path in PAGES:  # warm opcache, the database connections, the file caches
        for server in servers:
            h2load(server.url(path), 8, 1, encoding)
    time.sleep(2)
    for server in servers:
        with memory.peak(str(server.container.id)) as idle:
            time.sleep(10)
        server.idle = idle
    for page, path in PAGES:
        for connections in (1, 8):
            for n in range(rounds):
                for server in servers:
                    before = load()
                    with memory.peak(str(server.container.id)) as busy:
                        result = h2load(server.url(path), connections, seconds, encoding)
                    if (page, connections) == ("login", 8):
                        server.busy.append(busy)
                    server.runs.setdefault((page, connections), []).append(result)
                    server.loads.setdefault((page, connections), []).extend([before, load()])
                    print(f"#   round {n + 1} {server.label} {page} c{connections}: "
                          f"{result[0]:.0f} req/s, p99 {result[2]:.1f} ms, load "
                          f"{before:.2f} -> {load():.2f}", flush=True)  # fmt: skip


def report(servers: list[Server]) -> None:
    print("| server | page | concurrency | requests/s | vs Apache | p50 | p99 | load (1 min) |")
    print("|---|---|---|---|---|---|---|---|")
    for page, _ in PAGES:
        for connections in (1, 8):
            key = (page, connections)
            baseline = statistics.median(r[0] for r in servers[0].runs[key])
            for server in servers:
                runs = server.runs[key]
                rate = statistics.median(r[0] for r in runs)
                p50 = statistics.median(r[1] for r in runs)
                p99 = statistics.median(r[2] for r in runs)
                print(f"| {server.label} | {page} | {connections} | {rate:.0f} | "
                      f"{rate / baseline:.2f}x | {p50:.1f} ms | {p99:.1f} ms | "
                      f"{load_range(server.loads[key])} |")  # fmt: skip
    print()
    print("| server | idle: resident | idle: usage (with page cache) | login, c8: resident "
          "(peak) | login, c8: usage (kernel's peak) |")  # fmt: skip
    print("|---|---|---|---|---|")
    for server in servers:
        resident = max(p.resident for p in server.busy)
        usage = max(p.usage for p in server.busy)
        print(f"| {server.label} | {server.idle.resident:.0f} MB | {server.idle.usage:.0f} MB | "
              f"{resident:.0f} MB | {usage:.0f} MB |")  # fmt: skip


def servers_wanted(
    args: argparse.Namespace, image: str, others: list[tuple[str, str]]
) -> list[tuple[str, str, dict[str, str]]]:
    """(label, image, environment) of every FrankenPHP server, the first one signs up."""
    log = {"ACCESS_LOG": ACCESS_LOGS[args.access_log][1]}
    wanted = [("FrankenPHP (runtime image)", image, dict(log))]
    for variant in args.variant:
        tuning = dict(item.split("=", 1) for item in variant.split(","))
        wanted.append((f"FrankenPHP {variant}", image, {**log, **tuning}))
    for also in args.also:
        label, _, other = also.partition("=")
        others = [*others, (label, other)]
    for label, other in others:
        wanted.append((f"FrankenPHP {label}", other, dict(log)))
    return wanted


def run(args: argparse.Namespace, engine: docker.DockerClient, image: str,
        others: list[tuple[str, str]], tmp: Path) -> None:  # fmt: skip
    seconds, rounds = (1.0, 1) if args.quick else (args.duration, args.rounds)
    encoding = BROWSER_ENCODINGS if args.accept_encoding else ""
    servers: list[Server] = []
    apache = ""
    try:
        with database_network(engine, cpuset=OTHER_CPU) as network:
            try:
                for label, runtime, env in servers_wanted(args, image, others):
                    servers.append(start(engine, label, runtime, network, env))
                    if len(servers) == 1:
                        assert Client(servers[0].url("")).sign_up()["msg"] == "success"
                apache = apache_image(servers[0], tmp)
                # what the entrypoint derives from APP_URL for FrankenPHP (the app's facts)
                env = {"PHP_WORKERS": str(args.workers), "FULL_BASE_URL": "http://127.0.0.1:8080",
                       "SESSION_COOKIE_SECURE": "false"}  # fmt: skip
                env["ACCESS_LOG"] = ACCESS_LOGS[args.access_log][0]
                servers.insert(0, start(engine, APACHE, apache, network, env))
                same_pages(servers)
                print(f"# {machine()}; {seconds:.0f} s per measurement, {rounds} rounds, "
                      f"median shown; servers pinned to CPU {SERVER_CPU}; access logs "
                      f"{args.access_log}; Accept-Encoding: {encoding or 'none'}; "
                      f"load {load():.2f}", flush=True)  # fmt: skip
                measure(servers, seconds, rounds, encoding)
                report(servers)
            finally:
                for server in servers:
                    server.container.remove(force=True, v=True)
    finally:
        if apache:
            with contextlib.suppress(docker.errors.ImageNotFound):
                engine.images.remove(apache, force=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="servers alternate; median taken")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runtime-image", default="", help="the app's runtime image (else built)")
    parser.add_argument("--also", action="append", default=[], metavar="LABEL=IMAGE",
                        help="another runtime image of the app")  # fmt: skip
    parser.add_argument("--caddyfile", action="append", default=[], metavar="LABEL=PATH",
                        help="another server: the app with this builder/Caddyfile")  # fmt: skip
    parser.add_argument("--access-log", choices=tuple(ACCESS_LOGS), default="on")
    parser.add_argument("--accept-encoding", action="store_true",
                        help=f"send Accept-Encoding: {BROWSER_ENCODINGS}")  # fmt: skip
    parser.add_argument("--workers", type=int, default=8, help="Apache's prefork children")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=VALUE[,...]",
                        help="another FrankenPHP server with this environment")  # fmt: skip
    args = parser.parse_args()
    engine = docker.from_env()
    prefix = ""
    try:
        with tempfile.TemporaryDirectory(prefix="durango-bench-serve-") as tmp:
            image, others = args.runtime_image, list[tuple[str, str]]()
            if not image:
                image, prefix, others = build_runtime(Path(tmp), args.caddyfile)
            elif args.caddyfile:
                sys.exit("--caddyfile builds the app: leave out --runtime-image")
            run(args, engine, image, others, Path(tmp))
    finally:
        if prefix:
            remove_images(prefix)


if __name__ == "__main__":
    main()
