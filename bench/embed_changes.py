"""App-only change vs lock change, each to a verified binary, for the CakePHP fixture and for the
fixture padded to about 20,000 files / 160 MB (the size of a large OrangeScrum tree).

Uses the local profile (its base image must exist: `doit base builder=local`, or the tests'
durango-ci-local-base) and the fixture's artifact repository, with no network for the embed
step. For each app: a first build, then an app-only commit, then a commit that adds a package
to composer.json/composer.lock; each stage's own time comes from doit's output.

    python bench/embed_changes.py [--fixture DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

from common import GIT_ENV, REPO, machine, remove_images

sys.path.insert(0, str(REPO / "tests"))
from helpers import PHP_EXTENSIONS, cakephp_fixture, copy_tree_writable

BASE = "durango-ci-local-base"
# Each stage's own time, as doit prints it.
PATTERNS = {
    "archive": r"archive: .* in ([\d.]+)s",
    "embed": r"embed: built \S+ \(\w+\) in ([\d.]+)s",
    "extract": r"extract: .* in ([\d.]+)s",
    "verify": r"verify: .*\(([\d.]+)s\)",
}
COLUMNS = ["archive", "embed", "of which composer", "extract", "verify"]


def git(path: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=path, check=True, env=GIT_ENV, capture_output=True)


def pad(app: Path, files: int, megabytes: int) -> None:
    """About `files` files and `megabytes` MB: a fifth PHP classes (scanned by the autoloader),
    the rest assets."""
    classes = files // 5
    size = megabytes * 1_000_000 // files
    for i in range(files):
        if i < classes:
            folder = app / "src" / "Padding" / f"G{i % 50:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            body = f"// {secrets.token_hex(size // 2 - 80)}\n" if size > 200 else ""
            (folder / f"C{i}.php").write_text(
                f"<?php\nnamespace App\\Padding\\G{i % 50:02d};\n{body}final class C{i} {{}}\n"
            )
        else:
            folder = app / "webroot" / "assets" / f"a{i % 200:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"f{i}.bin").write_bytes(secrets.token_bytes(size))


def stage_times(out: str) -> dict[str, float]:
    """Seconds per column; the dependency step's own time from BuildKit (0 when reused)."""
    times = {}
    for stage, pattern in PATTERNS.items():
        found = re.search(pattern, out, re.M)
        times[stage] = float(found.group(1)) if found else 0.0
    step = re.search(r"^embed \| #(\d+) \[.*\] RUN .*install-deps", out, re.M)
    done = step and re.search(rf"^embed \| #{step.group(1)} DONE ([\d.]+)s$", out, re.M)
    times["of which composer"] = float(done.group(1)) if done else 0.0
    return times


def run_doit(root: Path, *args: str) -> tuple[dict[str, float], float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "doit", "verify", *args], cwd=root, capture_output=True, text=True
    )
    wall = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"doit verify failed:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    return stage_times(done.stdout), wall


def measure(label: str, fixture: Path, tmp: Path, files: int, megabytes: int) -> list[str]:
    app = tmp / "app"
    copy_tree_writable(fixture / "app", app)
    if files:
        pad(app, files, megabytes)
    git(app, "init", "-q", "-b", "main")
    git(app, "add", "-A")
    git(app, "commit", "-qm", "app")
    count = int(subprocess.run(["git", "ls-files"], cwd=app, capture_output=True, text=True)
                .stdout.count("\n"))  # fmt: skip
    repository = tmp / "composer-repo"
    copy_tree_writable(fixture / "composer-repo", repository)
    root, prefix = project(tmp, app, repository, 'embed_network = "none"\n')
    rows = []
    try:
        first, wall = run_doit(root)
        rows.append(row(label, count, "first build", first, wall))
        (app / "src" / "Controller" / "PagesController.php").open("a").write("\n// change\n")
        git(app, "commit", "-qam", "app-only change")
        app_only, wall = run_doit(root)
        rows.append(row(label, count, "app-only change", app_only, wall))
        add_package(app, repository)
        git(app, "add", "-A")
        git(app, "commit", "-qm", "lock change")
        lock, wall = run_doit(root)
        rows.append(row(label, count, "lock change", lock, wall))
    finally:
        remove_images(prefix)  # every key's tag, not only latest
    return rows


def project(
    tmp: Path, app: Path, repository: Path, extra: str = "", builder: str = "local"
) -> tuple[Path, str]:
    """A checkout of this project building `app` with a local profile; (root, image prefix)."""
    prefix = f"durango-bench-{uuid.uuid4().hex[:8]}"
    root = tmp / "project"
    root.mkdir()
    for folder in ("builder", "orangescrum-ee"):
        shutil.copytree(
            REPO / folder, root / folder, ignore=shutil.ignore_patterns("orangescrum-ee")
        )
    shutil.copy(REPO / "dodo.py", root / "dodo.py")
    (root / "tasks").symlink_to(REPO / "tasks")
    (root / "pyproject.toml").write_text(f"""[tool.durango]
builder = "{builder}"
source = "{app}"
php_extensions = "{PHP_EXTENSIONS}"
base_image = "durango-ci-{builder}-base"
embed_image = "{prefix}-embed"
runtime_image = "{prefix}-runtime"
composer_repository = "{repository}"
composer_packagist = false
{extra}""")
    return root, prefix


def add_package(app: Path, repository: Path) -> None:
    """A small package added to the artifact repository, then required (lock updated) with the
    base image's own composer, offline."""
    with zipfile.ZipFile(repository / "bench-hello-1.0.0.zip", "w") as archive:
        archive.writestr(
            "composer.json",
            json.dumps({"name": "bench/hello", "version": "1.0.0",
                        "autoload": {"psr-4": {"Bench\\Hello\\": "src/"}}}),
        )  # fmt: skip
        archive.writestr("src/Hello.php", "<?php\nnamespace Bench\\Hello;\nfinal class Hello {}\n")
    script = (
        "export COMPOSER_HOME=/tmp/ch COMPOSER_ALLOW_SUPERUSER=1 && "
        "composer config -g repo.packagist false && "
        'composer config -g repositories.t \'{"type":"artifact","url":"/composer-repo"}\' && '
        "cd /app && composer require bench/hello:1.0.0 --no-install --no-scripts -q"
    )
    subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-v", f"{app}:/app",
         "-v", f"{repository}:/composer-repo", f"{BASE}:latest", "sh", "-c", script],
        check=True, capture_output=True,
    )  # fmt: skip


def row(label: str, files: int, change: str, times: dict[str, float], wall: float) -> str:
    cells = " | ".join(f"{times[c]:.1f} s" for c in COLUMNS)
    return f"| {label} ({files} files) | {change} | {cells} | {wall:.1f} s |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fixture", type=Path, default=cakephp_fixture())
    args = parser.parse_args()
    if args.fixture is None:
        sys.exit("no CakePHP fixture: pass --fixture or set CAKEPHP_FIXTURE")
    print(f"# {machine()}")
    print("| app | change | " + " | ".join(COLUMNS) + " | whole `doit verify` |")
    print("|---|---|" + "---|" * (len(COLUMNS) + 1))
    for label, files, megabytes in (("fixture", 0, 0), ("padded", 20000, 160)):
        with tempfile.TemporaryDirectory(prefix="durango-bench-") as tmp:
            for line in measure(label, args.fixture, Path(tmp), files, megabytes):
                print(line, flush=True)


if __name__ == "__main__":
    main()
