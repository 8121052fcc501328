"""Errors a user meets print one clear line and exit non-zero; interrupts and concurrent runs
never leave a half-written artefact or a corrupted state."""

from __future__ import annotations

import hashlib
import signal
import time
from pathlib import Path

import pytest
from helpers import STAGES, Run, Workspace


def durango_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("durango: ")]


def assert_one_clear_error(run, *needles: str) -> None:
    assert run.code != 0, run.out
    assert "Traceback" not in run.out, run.out
    errors = [line for line in durango_lines(run.out) if "warning" not in line]
    assert len(errors) == 1, run.out
    for needle in needles:
        assert needle in errors[0], run.out


def test_missing_source_path(workspace: Workspace) -> None:
    run = workspace.doit("source=/nonexistent/app", check=False)
    assert_one_clear_error(run, "archive failed", "/nonexistent/app does not exist")


def test_source_not_a_git_repository(workspace: Workspace, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    run = workspace.doit(f"source={plain}", check=False)
    assert_one_clear_error(run, "is not inside a git repository")


def test_unknown_ref(workspace: Workspace) -> None:
    run = workspace.doit("ref=v9.9", check=False)
    assert_one_clear_error(run, "ref 'v9.9' is not a commit")


def test_unknown_setting_is_named(workspace: Workspace) -> None:
    run = workspace.doit("sorce=../app", check=False)
    assert run.code != 0
    assert "command line: unknown setting sorce; did you mean source?" in run.out
    assert "Traceback" not in run.out


def test_no_docker_engine_names_the_address(workspace: Workspace, tmp_path: Path) -> None:
    socket = tmp_path / "no-engine.sock"
    run = workspace.doit(env={"DOCKER_HOST": f"unix://{socket}"}, check=False)
    assert_one_clear_error(run, "base failed", f"no Docker engine answers at unix://{socket}")
    assert run.executed == ["archive", "base"]


def test_failing_dockerfile_step_shows_step_and_log_and_is_retried(workspace: Workspace) -> None:
    dockerfile = workspace.root / "builder" / "base-build.Dockerfile"
    good = dockerfile.read_text()
    dockerfile.write_text(good + "RUN echo the-step-said-this && exit 3\n")

    run = workspace.doit(check=False)
    assert_one_clear_error(run, "base failed", "RUN echo the-step-said-this", "exit code: 3")
    assert "    | the-step-said-this" in run.out
    assert "embed" not in run.executed

    retry = workspace.doit(check=False)
    assert "base" in retry.executed  # a failed stage is not recorded as done

    dockerfile.write_text(good)
    assert workspace.doit().executed == ["base", "embed", "extract", "runtime"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_extraction_leaves_the_destination_untouched(
    built: Workspace, sig: signal.Signals
) -> None:
    """Interrupted while the binary is written (its temp file appeared and grows): the
    destination is as it was, no temp file is left, and the next run makes it whole."""
    assert built.doit("embed", "embed_args=PAD_MB=600").executed == ["embed"]
    assert built.doit("extract", "embed_args=PAD_MB=600").executed == ["extract"]  # copied out
    built.app.write("webroot/index.php", "<?php echo 'interrupted';\n")
    built.app.commit("to append again")
    assert built.doit("archive").executed == ["archive"]
    before = _sha(built.binary)

    proc = built.popen("extract", "embed_args=PAD_MB=600")
    parts: list[Path] = []
    deadline = time.monotonic() + 60
    while not parts and time.monotonic() < deadline and proc.poll() is None:
        parts = [p for p in built.binary.parent.glob(".*.tmp") if p.stat().st_size > 0]
        time.sleep(0.005)
    assert parts, "the binary was written before it could be interrupted"
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)

    assert proc.returncode != 0, out
    assert _sha(built.binary) == before
    assert list(built.binary.parent.glob(".*.tmp")) == []
    rerun = built.doit("extract", "embed_args=PAD_MB=600")
    assert rerun.executed == ["extract"]
    assert built.binary.stat().st_size > 600 * 1024 * 1024


def test_two_doits_at_once_build_each_stage_once(workspace: Workspace) -> None:
    runs = [workspace.popen(), workspace.popen()]  # started together: either may win
    outs = [proc.communicate(timeout=300)[0] for proc in runs]
    assert all(proc.returncode == 0 for proc in runs), outs
    executed = [Run(0, out).executed for out in outs]
    for stage in STAGES:
        assert sum(ran.count(stage) for ran in executed) == 1, (stage, executed)
    assert sum("another doit is running" in out for out in outs) == 1
    assert workspace.doit().executed == []
