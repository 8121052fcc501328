"""The dynamic `local` binary vs the fully static `local-static` one, for the CakePHP fixture, in
one run: relink time after an app-only change, binary size, runtime image size, container start
to healthy; with `--cold`, also the base image built with BuildKit's cache unused.

    python bench/profiles.py [--rounds 3] [--cold]

The profiles' base images must exist (the tests' durango-ci-local-base and
durango-ci-local-static-base, or `doit base builder=<profile>` with those names). `--cold` builds
each base again under a throw-away name with every step run (about 13 and 8 minutes here) and
removes it afterwards.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import docker
from common import REPO, database_network, machine, remove_images
from embed_changes import git, project
from startup import time_to_200

sys.path.insert(0, str(REPO / "tests"))
from helpers import cakephp_fixture, copy_tree_writable

PROFILES = ("local", "local-static")
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


def doit(root: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "doit", *args], cwd=root,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode:
        sys.exit(f"doit {' '.join(args)} failed:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    return done.stdout


def seconds(pattern: str, out: str) -> float:
    found = re.search(pattern, out, re.M)
    return float(found.group(1)) if found else 0.0


def cold_base(root: Path) -> float:
    name = f"durango-bench-cold-{uuid.uuid4().hex[:8]}"
    try:
        done = subprocess.run([sys.executable, "-c", COLD_BASE, name], cwd=root,
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode:
            sys.exit(f"cold base build failed:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
        return seconds(r"^cold base: ([\d.]+)", done.stdout)
    finally:
        remove_images(name)


def measure(builder: str, fixture: Path, tmp: Path, args: argparse.Namespace,
            engine: docker.DockerClient, network: str) -> str:  # fmt: skip
    app = tmp / "app"
    copy_tree_writable(fixture / "app", app)
    git(app, "init", "-q", "-b", "main")
    git(app, "add", "-A")
    git(app, "commit", "-qm", "app")
    root, prefix = project(tmp, app, fixture / "composer-repo", builder=builder)
    try:
        cold = f"{cold_base(root):.0f} s" if args.cold else "not measured"
        doit(root, "runtime")
        (app / "src" / "Controller" / "PagesController.php").open("a").write("\n// change\n")
        git(app, "commit", "-qam", "app-only change")
        out = doit(root, "runtime")
        relink = seconds(r"^embed: built \S+ \(\w+\) in ([\d.]+)s", out)
        binary = (root / "orangescrum-ee" / "orangescrum-app" / "orangescrum-ee").stat().st_size
        image = f"{prefix}-runtime:latest"
        size = engine.images.get(image).attrs["Size"]
        time_to_200(engine, image, network, "")  # the first start migrates and seeds
        start = statistics.median(
            time_to_200(engine, image, network, "") for _ in range(args.rounds)
        )
        return (f"| {builder} | {cold} | {relink:.1f} s | {binary / 1e6:.1f} MB | "
                f"{size / 1e6:.1f} MB | {start:.1f} s |")  # fmt: skip
    finally:
        remove_images(prefix)  # every key's tag, not only latest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="also time a cache-less base build")
    args = parser.parse_args()
    fixture = cakephp_fixture()
    if fixture is None:
        sys.exit("no CakePHP fixture: set CAKEPHP_FIXTURE")
    engine = docker.from_env()
    print(f"# {machine()}; the CakePHP fixture; start to healthy: median of {args.rounds}")
    print("| profile | base, cold | relink (embed after an app-only change) | binary "
          "| runtime image | start to healthy |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    with database_network(engine) as network:
        for builder in PROFILES:
            with tempfile.TemporaryDirectory(prefix="durango-profiles-") as tmp:
                print(measure(builder, fixture, Path(tmp), args, engine, network), flush=True)


if __name__ == "__main__":
    main()
