"""The dynamic `local` binary vs the fully static `local-static` one, for the CakePHP fixture, in
one run: binary and runtime image size, an app-only change to a verified binary, container start
to the first 200, and served speed (requests/s of the health page, which queries PostgreSQL,
and of a static stylesheet, concurrency 1 and 8, each server on CPU 1); with `--cold`, also the
base image built with BuildKit's cache unused. Profiles alternate in every round; medians.

    python bench/profiles.py [--rounds 3] [--duration 10] [--cold]
        [--static-base durango-ci-local-static-base]

OrangeScrum CE itself cannot be the app here: its lock holds cakephp/chronos 2.4.4, which is a
fatal error on PHP 8.4 (local-static's PHP), see docs/BENCHMARKS.md. The profiles' base images
must exist (`doit base builder=<profile>` under the names given); `--cold` builds each base again
under a throw-away name with every step run (13 to 30 minutes here) and removes it afterwards.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import docker
from common import (
    REPO,
    app_env,
    database_network,
    git,
    load,
    load_range,
    machine,
    project,
    published_port,
    remove_images,
    require_base,
    time_to_200,
    timed_doit,
    wait_for_status,
)
from serve import OTHER_CPU, SERVER_CPU, h2load

sys.path.insert(0, str(REPO / "tests"))
from helpers import cakephp_fixture, copy_tree_writable

PAGES = [("health (database)", "/home/healthcheck"), ("static CSS", "/css/cake.css")]
# Built in the project's checkout, so that the key is exactly the one `doit base` computes.
COLD_BASE = """
import dataclasses, sys, time
from pathlib import Path
from tasks.build import base
from tasks.build.image_stage import ensure_image
from tasks.build.source import image_labels
from tasks.core.pipeline import Pipeline
from tasks.core.settings import load_settings
from tasks.engine.containers import Containers
from tasks.engine.images import Engine
engine = Engine()
pipe = Pipeline(load_settings(Path.cwd(), {"base_image": sys.argv[1]}), engine, Containers(engine))
inputs = dataclasses.replace(base.inputs(pipe), no_cache=True)
started = time.monotonic()
ensure_image(pipe.engine, inputs, image_labels(pipe))
print(f"cold base: {time.monotonic() - started:.1f}")
"""


@dataclass
class Profile:
    builder: str
    root: Path
    app: Path
    prefix: str
    cold: str = "not measured"
    changes: list[float] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    served: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    loads: list[float] = field(default_factory=list)

    @property
    def binary(self) -> Path:
        return self.root / "orangescrum-ee" / "orangescrum-app" / "orangescrum-ee"

    @property
    def image(self) -> str:
        return f"{self.prefix}-runtime:latest"


def cold_base(root: Path) -> float:
    name = f"durango-bench-cold-{uuid.uuid4().hex[:8]}"
    try:
        done = subprocess.run([sys.executable, "-c", COLD_BASE, name], cwd=root,
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode:
            sys.exit(f"cold base build failed:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
        found = re.search(r"^cold base: ([\d.]+)", done.stdout, re.M)
        return float(found.group(1)) if found else 0.0
    finally:
        remove_images(name)


def prepare(builder: str, base: str, fixture: Path, tmp: Path) -> Profile:
    app = tmp / builder / "app"
    copy_tree_writable(fixture / "app", app)
    repository = tmp / builder / "composer-repo"
    copy_tree_writable(fixture / "composer-repo", repository)
    git(app, "init", "-q", "-b", "main")
    git(app, "add", "-A")
    git(app, "commit", "-qm", "app")
    prefix = f"durango-bench-{uuid.uuid4().hex[:8]}"
    extra = f'composer_repository = "{repository}"\ncomposer_packagist = false\n'
    facts = REPO / "tests" / "fixtures" / "cakephp-app.toml"
    root = project(tmp / builder / "project", app, prefix, builder=builder, facts=facts,
                   base_image=base, extra=extra)  # fmt: skip
    require_base(root, base)
    return Profile(builder, root, app, prefix)


def change(profile: Profile, n: int) -> None:
    """An app-only commit, then `doit verify`: its wall time."""
    with (profile.app / "src" / "Controller" / "PagesController.php").open("a") as out:
        out.write(f"\n// bench: app-only change {n}\n")
    git(profile.app, "commit", "-qam", f"app-only change {n}")
    before = load()
    profile.changes.append(timed_doit(profile.root, "verify").seconds)
    profile.loads += [before, load()]


def serve(profiles: list[Profile], engine: docker.DockerClient, network: str, seconds: float,
          rounds: int) -> None:  # fmt: skip
    """Both runtime images on CPU 1 against one migrated database, loaded in turns."""
    started = []
    try:
        ports = []
        for profile in profiles:
            container = engine.containers.run(
                profile.image, detach=True, network=network, cpuset_cpus=SERVER_CPU,
                environment={**app_env(network), "APP_URL": "http://127.0.0.1:8080"},
                ports={"8080/tcp": ("127.0.0.1", 0)},
            )  # fmt: skip
            started.append(container)
            ports.append(published_port(container))
            url = f"http://127.0.0.1:{ports[-1]}{PAGES[0][1]}"
            wait_for_status(container, url, time.monotonic())
        for _, path in PAGES:
            for port in ports:  # warm opcache and the file caches
                h2load(f"http://127.0.0.1:{port}{path}", 8, 1, "")
        for page, path in PAGES:
            for connections in (1, 8):
                for _ in range(rounds):
                    for profile, port in zip(profiles, ports, strict=True):
                        before = load()
                        rate = h2load(f"http://127.0.0.1:{port}{path}", connections, seconds, "")
                        profile.served.setdefault((page, connections), []).append(rate[0])
                        profile.loads += [before, load()]
    finally:
        for container in started:
            container.remove(force=True, v=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10, help="seconds per served run")
    parser.add_argument("--cold", action="store_true", help="also time a cache-less base build")
    parser.add_argument("--local-base", default="durango-ci-local-base")
    parser.add_argument("--static-base", default="durango-ci-local-static-base")
    args = parser.parse_args()
    fixture = cakephp_fixture()
    if fixture is None:
        sys.exit("no CakePHP fixture: set CAKEPHP_FIXTURE")
    engine = docker.from_env()
    print(f"# {machine()}; the CakePHP fixture; medians of {args.rounds}; load {load():.2f}")
    with tempfile.TemporaryDirectory(prefix="durango-bench-profiles-") as tmp:
        profiles = [prepare("local", args.local_base, fixture, Path(tmp)),
                    prepare("local-static", args.static_base, fixture, Path(tmp))]  # fmt: skip
        try:
            for profile in profiles:
                if args.cold:
                    profile.cold = f"{cold_base(profile.root):.0f} s"
                timed_doit(profile.root, "verify", "runtime")  # the first build, not measured
            for n in range(1, args.rounds + 1):
                for profile in profiles:
                    change(profile, n)
            for profile in profiles:
                timed_doit(profile.root, "runtime")
            with database_network(engine, cpuset=OTHER_CPU) as network:
                time_to_200(engine, profiles[0].image, network, "", PAGES[0][1])  # migrates
                for _ in range(args.rounds):
                    for profile in profiles:
                        before = load()
                        took = time_to_200(engine, profile.image, network, "", PAGES[0][1])
                        profile.starts.append(took)
                        profile.loads += [before, load()]
                serve(profiles, engine, network, args.duration, args.rounds)
            report(profiles, engine)
        finally:
            for profile in profiles:
                remove_images(profile.prefix)  # every key's tag, not only latest


def report(profiles: list[Profile], engine: docker.DockerClient) -> None:
    served = [f"{page}, c{c}" for page, _ in PAGES for c in (1, 8)]
    print("| profile | base, cold | binary | runtime image | app-only change (doit verify) | "
          "start to first 200 (fresh) | " + " | ".join(f"{s} (req/s)" for s in served) +
          " | load (1 min) |")  # fmt: skip
    print("|---|---|---|---|---|---|" + "---|" * len(served) + "---|")
    baseline = profiles[0]
    for profile in profiles:
        size = engine.images.get(profile.image).attrs["Size"]
        rates = []
        for page, _ in PAGES:
            for connections in (1, 8):
                key = (page, connections)
                rate = statistics.median(profile.served[key])
                ratio = rate / statistics.median(baseline.served[key])
                rates.append(f"{rate:.0f} ({ratio:.2f}x)")
        binary = profile.binary.stat().st_size / 1e6
        change = statistics.median(profile.changes)
        print(f"| {profile.builder} | {profile.cold} | {binary:.1f} MB | {size / 1e6:.1f} MB | "
              f"{change:.1f} s | "
              f"{statistics.median(profile.starts):.1f} s | {' | '.join(rates)} | "
              f"{load_range(profile.loads)} |")  # fmt: skip


if __name__ == "__main__":
    main()
