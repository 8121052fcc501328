"""Changes to a verified binary, each against the floor measured in the same run, with the doit
run's peak RSS: OrangeScrum CE (the real app) and the two small apps.

The floor is what any tool must do for a change: get the commit's tree out of git and write a
binary of that size (`git archive | tar -x` into a temp folder, then `cp` + sha256 of the binary).
It is measured before every change, so each row's ratio is to the floor of the same minutes.

OrangeScrum CE (the fixture's app.bundle; its artifact repository, no network for the embed
step; the local profile; the app's own facts, orangescrum-ee/app.toml), per round:
  - cold build: a fresh project, BuildKit's cache unused for the embed stage, the base image
    present: `doit verify runtime` (embed + extract + verify + runtime image);
  - app-only change: a comment in a controller, committed; `doit verify`;
  - lock change: a new package required (composer.json + composer.lock, from the artifact
    repository); `doit verify`;
  - base change: a comment in the project's builder/frankenphp/main.go (a new base key: BuildKit
    relinks FrankenPHP, the dependencies install again on it); `doit verify`;
  - first start: `doit runtime`, then `docker run` to the first 200 of /users/login with a fresh
    app-cache volume (the app extracted), against a migrated database with a signed-up company;
  - restart: a new container on that same volume (the extracted app reused).
The CakePHP fixture and examples/demo-app: the app-only change only (their earlier figures are in
docs/BENCHMARKS.md).

    python bench/embed_changes.py [--rounds 3] [--apps orangescrum,cakephp,demo] [--no-cold]

The local profile's base image must exist (durango-ci-local-base: the tests', or `doit base
builder=local` under that name). The load average is printed before and after every
measurement; other work on the machine shows there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import docker
from common import (
    REPO,
    DoitRun,
    app_env,
    database_network,
    floor_seconds,
    git,
    load,
    load_range,
    machine,
    project,
    published_port,
    remove_images,
    time_to_200,
    timed_doit,
    wait_for_status,
)

sys.path.insert(0, str(REPO / "tests"))
from helpers import cakephp_fixture, copy_tree_writable
from orangescrum import Client, clone
from orangescrum import fixture as orangescrum_fixture

LOCAL_BASE = "durango-ci-local-base:latest"
# Each stage's own time, as doit prints it.
STAGES = {
    "archive": r"^archive: .* in ([\d.]+)s$",
    "base": r"^base: built \S+ \(\w+\) in ([\d.]+)s",
    "embed": r"^embed: built \S+ \(\w+\) in ([\d.]+)s",
    "composer": r"^embed: deps: composer install: \d+ packages in (\d+)s",
    "extract": r"^extract: \S+ = base binary .* in ([\d.]+)s$",
    "verify": r"^verify: .*\(([\d.]+)s\); manifest",
    "runtime": r"^runtime: built \S+ \(\w+\) in ([\d.]+)s",
}
LOGIN = "/users/login"


@dataclass
class Row:
    """One kind of change: its times, the floors measured right before each, peak RSS, loads."""

    app: str
    change: str
    seconds: list[float] = field(default_factory=list)
    floors: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    child_rss: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=dict)
    loads: list[float] = field(default_factory=list)

    def add(self, floor: float, seconds: float, before: float, run: DoitRun | None) -> None:
        self.floors.append(floor)
        self.seconds.append(seconds)
        self.loads += [before, load()]
        print(f"#   {self.app} / {self.change}: {seconds:.2f} s, floor {floor:.2f} s, load "
              f"{before:.2f} -> {self.loads[-1]:.2f}", flush=True)  # fmt: skip
        if run is not None:
            self.rss.append(run.rss_mb)
            self.child_rss.append(run.child_rss_mb)
            for stage, pattern in STAGES.items():
                took = run.stage(pattern)
                if took is not None:
                    self.stages.setdefault(stage, []).append(took)

    def line(self) -> str:
        seconds, floor = statistics.median(self.seconds), statistics.median(self.floors)
        stages = ", ".join(
            f"{name} {statistics.median(values):.1f}" for name, values in self.stages.items()
        )
        rss = f"{max(self.rss):.0f} MB" if self.rss else "-"
        child = f"{max(self.child_rss):.0f} MB" if self.child_rss else "-"
        return (f"| {self.app} | {self.change} | {seconds:.1f} s | {floor:.2f} s | "
                f"{seconds / floor:.1f}x | {rss} | {child} | {stages or '-'} | "
                f"{len(self.seconds)} | {load_range(self.loads)} |")  # fmt: skip


def measure(row: Row, app: Path, binary: Path, step: Callable[[], DoitRun | float]) -> None:
    """The floor, then the change, back to back, with the load before and after."""
    before = load()
    floor = floor_seconds(app, binary)
    result = step()
    if isinstance(result, DoitRun):
        row.add(floor, result.seconds, before, result)
    else:
        row.add(floor, result, before, None)


def commit_app_change(app: Path, path: str, n: int) -> None:
    with (app / path).open("a") as out:
        out.write(f"\n// bench: app-only change {n}\n")
    git(app, "commit", "-qam", f"app-only change {n}")


def add_package(app: Path, repository: Path, n: int) -> None:
    """Package bench/hello<n> added to the artifact repository, then required (composer.json and
    composer.lock updated) with the base image's own composer, offline."""
    name = f"bench/hello{n}"
    with zipfile.ZipFile(repository / f"bench-hello{n}-1.0.0.zip", "w") as archive:
        archive.writestr(
            "composer.json",
            json.dumps({"name": name, "version": "1.0.0",
                        "autoload": {"psr-4": {f"Bench\\Hello{n}\\": "src/"}}}),
        )  # fmt: skip
        php = f"<?php\nnamespace Bench\\Hello{n};\nfinal class Hello {{}}\n"
        archive.writestr("src/Hello.php", php)
    script = (
        "export COMPOSER_HOME=/tmp/ch COMPOSER_ALLOW_SUPERUSER=1 && "
        "composer config -g repo.packagist false && "
        'composer config -g repositories.t \'{"type":"artifact","url":"/composer-repo"}\' && '
        f"cd /app && composer require {name}:1.0.0 --no-install --no-scripts -q"
    )
    subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-v", f"{app}:/app",
         "-v", f"{repository}:/composer-repo", LOCAL_BASE, "sh", "-c", script],
        check=True, capture_output=True,
    )  # fmt: skip
    git(app, "add", "-A")
    git(app, "commit", "-qm", f"lock change {n}")


def change_base(root: Path, n: int) -> None:
    """A new base key with nothing but a relink to do: a comment in our Go command (unique to
    this run: BuildKit's cache must not know it)."""
    with (root / "builder" / "frankenphp" / "main.go").open("a") as out:
        out.write(f"\n// bench: base change {n}, {uuid.uuid4().hex}\n")


def os_project(
    tmp: Path, app: Path, repository: Path, prefix: str, base_image: str, extra: str = ""
) -> Path:
    """A project building OrangeScrum CE offline from the artifact repository, with its facts."""
    settings = (
        f'composer_repository = "{repository}"\ncomposer_packagist = false\n'
        f'embed_network = "none"\n{extra}'
    )
    facts = REPO / "orangescrum-ee" / "app.toml"
    return project(tmp, app, prefix, facts=facts, extra=settings, base_image=base_image)


def signed_up(engine: docker.DockerClient, image: str, network: str, volume: str) -> None:
    """The first start (migrations, seeds) and the first company's sign-up: from then on
    /users/login answers 200 (before, a redirect to the sign-up page)."""
    container = engine.containers.run(
        image, detach=True, network=network,
        volumes={volume: {"bind": "/data/cache", "mode": "rw"}},
        environment={**app_env(network), "APP_URL": "http://127.0.0.1:8080"},
        ports={"8080/tcp": ("127.0.0.1", 0)},
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{published_port(container)}"
        wait_for_status(container, base + LOGIN, time.monotonic(), ok=(200, 302))
        assert Client(base).sign_up()["msg"] == "success"
    finally:
        container.remove(force=True, v=True)


@dataclass
class RealApp:
    """OrangeScrum CE in one project (its own base image name, so that a base change never moves
    the tests' base), a migrated database with a company, and the app-cache volumes made."""

    tmp: Path
    engine: docker.DockerClient
    network: str
    app: Path
    repository: Path
    prefix: str
    root: Path
    volumes: list[str] = field(default_factory=list)

    @property
    def binary(self) -> Path:
        return self.root / "orangescrum-ee" / "orangescrum-app" / "orangescrum-ee"

    def cold_build(self, n: int) -> DoitRun:
        """A fresh project on the present base image: embed (no BuildKit cache), extract,
        verify, runtime."""
        fresh = f"durango-bench-{uuid.uuid4().hex[:8]}"
        base = LOCAL_BASE.split(":")[0]
        root = os_project(self.tmp / f"cold{n}", self.app, self.repository, fresh, base,
                          "embed_no_cache = true\n")  # fmt: skip
        try:
            return timed_doit(root, "verify", "runtime")
        finally:
            remove_images(fresh)
            shutil.rmtree(root, ignore_errors=True)

    def start(self, volume: str) -> float:
        return time_to_200(self.engine, f"{self.prefix}-runtime:latest", self.network, volume,
                           LOGIN)  # fmt: skip

    def round(self, n: int, rows: dict[str, Row], cold: bool) -> None:
        app, binary, root = self.app, self.binary, self.root
        if cold:
            measure(rows["cold"], app, binary, lambda: self.cold_build(n))
        commit_app_change(app, "src/Controller/AppController.php", n)
        measure(rows["app"], app, binary, lambda: timed_doit(root, "verify"))
        add_package(app, self.repository, n)
        measure(rows["lock"], app, binary, lambda: timed_doit(root, "verify"))
        change_base(root, n)
        measure(rows["base"], app, binary, lambda: timed_doit(root, "verify"))
        timed_doit(root, "runtime")
        self.volumes.append(f"{self.network}-cache-{n}")
        volume = self.volumes[-1]
        measure(rows["first"], app, binary, lambda: self.start(volume))
        measure(rows["restart"], app, binary, lambda: self.start(volume))

    def remove_volumes(self) -> None:
        for volume in self.volumes:
            with contextlib.suppress(docker.errors.NotFound):
                self.engine.volumes.get(volume).remove(force=True)


REAL_ROWS = {
    "cold": "cold build (base image present)",
    "app": "app-only change",
    "lock": "lock change",
    "base": "base change (relink)",
    "first": "first start (fresh app cache)",
    "restart": "restart (same app cache)",
}


def orangescrum(tmp: Path, rounds: int, cold: bool, engine: docker.DockerClient) -> list[Row]:
    app = clone(tmp / "app")
    repository = tmp / "composer-repo"
    copy_tree_writable(orangescrum_fixture() / "composer-repo", repository)
    prefix = f"durango-bench-{uuid.uuid4().hex[:8]}"
    root = os_project(tmp / "project", app, repository, prefix, f"{prefix}-base")
    rows = {key: Row("OrangeScrum CE", name) for key, name in REAL_ROWS.items()}
    if not cold:
        del rows["cold"]
    try:
        timed_doit(root, "verify", "runtime")  # the first build, not measured
        with database_network(engine) as network:
            real = RealApp(tmp, engine, network, app, repository, prefix, root)
            try:
                real.volumes.append(f"{network}-warm")
                signed_up(engine, f"{prefix}-runtime:latest", network, real.volumes[-1])
                for n in range(1, rounds + 1):
                    print(f"# OrangeScrum CE, round {n}", flush=True)
                    real.round(n, rows, cold)
            finally:
                real.remove_volumes()
        print(f"# OrangeScrum CE binary: {real.binary.stat().st_size / 1e6:.1f} MB", flush=True)
    finally:
        remove_images(prefix)
    return list(rows.values())


def small_app(label: str, tmp: Path, rounds: int) -> list[Row]:
    """An app-only change to a verified binary of the CakePHP fixture or the demo app."""
    app = tmp / "app"
    prefix = f"durango-bench-{uuid.uuid4().hex[:8]}"
    if label == "CakePHP fixture":
        fixture = cakephp_fixture()
        if fixture is None:
            sys.exit("no CakePHP fixture: set CAKEPHP_FIXTURE")
        copy_tree_writable(fixture / "app", app)
        repository = tmp / "composer-repo"
        copy_tree_writable(fixture / "composer-repo", repository)
        facts = REPO / "tests" / "fixtures" / "cakephp-app.toml"
        extra = (f'composer_repository = "{repository}"\ncomposer_packagist = false\n'
                 'embed_network = "none"\n')  # fmt: skip
        changed = "src/Controller/PagesController.php"
    else:
        shutil.copytree(REPO / "examples" / "demo-app", app)
        facts, extra, changed = app / "app.toml", 'embed_network = "none"\n', "src/Database.php"
    git(app, "init", "-q", "-b", "main")
    git(app, "add", "-A")
    git(app, "commit", "-qm", "app")
    root = project(tmp / "project", app, prefix, facts=facts, extra=extra)
    binary = root / "orangescrum-ee" / "orangescrum-app" / "orangescrum-ee"
    row = Row(label, "app-only change")
    try:
        timed_doit(root, "verify")  # the first build, not measured
        for n in range(1, rounds + 1):
            commit_app_change(app, changed, n)
            measure(row, app, binary, lambda: timed_doit(root, "verify"))
    finally:
        remove_images(prefix)
    print(f"# {label} binary: {binary.stat().st_size / 1e6:.1f} MB", flush=True)
    return [row]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--apps", default="orangescrum,cakephp,demo")
    parser.add_argument("--no-cold", action="store_true", help="leave out the cold builds")
    args = parser.parse_args()
    if not (orangescrum_fixture() / "app.bundle").is_file():
        sys.exit(f"no OrangeScrum fixture at {orangescrum_fixture()}: set ORANGESCRUM_FIXTURE")
    engine = docker.from_env()
    if not engine.images.list(name=LOCAL_BASE):
        sys.exit(f"no {LOCAL_BASE}: build it with `doit base builder=local` under that name")
    print(f"# {machine()}; {args.rounds} rounds; load average before: {load():.2f}")
    rows: list[Row] = []
    wanted = args.apps.split(",")
    jobs = {"orangescrum": lambda tmp: orangescrum(tmp, args.rounds, not args.no_cold, engine),
            "cakephp": lambda tmp: small_app("CakePHP fixture", tmp, args.rounds),
            "demo": lambda tmp: small_app("demo app", tmp, args.rounds)}  # fmt: skip
    for name in wanted:
        with tempfile.TemporaryDirectory(prefix="durango-bench-") as tmp:
            rows += jobs[name](Path(tmp))
    print("| app | change | median | floor | ratio | doit peak RSS | largest child | "
          "stages (median s) | rounds | load (1 min) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row.line())
    print(f"# load average after: {load():.2f}")


if __name__ == "__main__":
    main()
