"""The project's own checks: ruff, mypy, shellcheck on every shell script, hadolint on every
Dockerfile. A failure prints the linter's findings."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def tracked(*patterns: str) -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", *patterns],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if (REPO / line).exists()]


def check(cmd: list[str]) -> None:
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd[:3])} ...:\n{done.stdout}{done.stderr}"


def test_ruff() -> None:
    check([sys.executable, "-m", "ruff", "check", "."])
    check([sys.executable, "-m", "ruff", "format", "--check", "."])


def test_mypy() -> None:
    check([sys.executable, "-m", "mypy"])


def test_shellcheck() -> None:
    scripts = tracked("*.sh", ".ci/run")
    assert scripts
    check(["shellcheck", *scripts])


@pytest.mark.parametrize("dockerfile", tracked("*Dockerfile"))
def test_hadolint(dockerfile: str) -> None:
    check(["hadolint", dockerfile])


def test_actionlint() -> None:
    if shutil.which("actionlint") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but actionlint is not installed", pytrace=False)
        pytest.skip(
            "actionlint not installed (go install github.com/rhysd/actionlint/cmd/actionlint)"
        )
    workflows = tracked(".github/workflows/*.yml")
    assert workflows
    check(["actionlint", *workflows])
