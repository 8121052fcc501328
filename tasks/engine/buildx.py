"""Builds through `docker buildx build` (BuildKit), which the docker SDK cannot drive.

The context is streamed on stdin (nothing is copied to disk), progress is printed live with the
stage's prefix, and a failing step becomes one BuildError naming the step and the tail of its
log. Nothing is tagged unless the whole build succeeds.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from tasks.core.errors import BuildError, EngineError
from tasks.core.ports import BuildRequest, Built


def summarize_build_failure(stage: str, lines: Sequence[str]) -> str:
    """From buildx plain progress output: the failing step, its error and the tail of its log."""
    failed = None
    for line in lines:
        match = re.match(r"#(\d+) ERROR: (.*)", line)
        if match:
            failed = match
    if failed is None:
        tail = [line for line in lines if line.strip()][-15:]
        return f"{stage}: docker buildx build failed:\n" + "\n".join(f"    | {t}" for t in tail)
    step_id, error = failed.group(1), failed.group(2)
    title = next(
        (line.split(" ", 1)[1] for line in lines if re.match(rf"#{step_id} \[", line)),
        f"#{step_id}",
    )
    log = [m.group(1) for line in lines if (m := re.match(rf"#{step_id} \d+\.\d+ (.*)", line))]
    body = "\n".join(f"    | {entry}" for entry in log[-15:])
    return f"{stage}: build step {title} failed: {error}" + (f"\n{body}" if body else "")


def command(request: BuildRequest, iidfile: Path) -> list[str]:
    """The buildx command line for a request, the context coming on stdin."""
    cmd = ["docker", "buildx", "build", "--progress=plain", "--load"]
    cmd += ["-f", request.dockerfile, "--iidfile", str(iidfile)]
    for tag in request.tags:
        cmd += ["-t", tag]
    for name, value in sorted(request.build_args.items()):
        cmd += ["--build-arg", f"{name}={value}"]
    for name, value in sorted(request.labels.items()):
        cmd += ["--label", f"{name}={value}"]
    for secret_id, where in sorted(request.secrets.items()):
        cmd += ["--secret", f"id={secret_id},{where}"]
    if request.network:
        cmd += ["--network", request.network]
    if request.no_cache:
        cmd.append("--no-cache")
    return [*cmd, "-"]


def build(request: BuildRequest) -> Built:
    """Build from a context streamed on stdin: the new image ID and the build's log."""
    with tempfile.TemporaryDirectory(prefix="durango-build-") as tmp:
        iidfile = Path(tmp, "iid")
        lines = _run(request.stage, command(request, iidfile), request.write_context)
        if not iidfile.exists():
            raise BuildError(summarize_build_failure(request.stage, lines))
        return Built(iidfile.read_text().strip(), lines)


def _run(stage: str, cmd: list[str], write_context: Callable[[IO[bytes]], None]) -> list[str]:
    try:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
    except FileNotFoundError:
        raise EngineError("the docker CLI is not installed (needed for docker buildx)") from None
    assert proc.stdin is not None and proc.stdout is not None
    stdin = proc.stdin
    send_error: list[BaseException] = []

    def send() -> None:
        try:
            write_context(stdin)
        except BrokenPipeError:
            pass  # buildx stopped reading: its own output says why
        except BaseException as exc:  # reported after buildx exits
            send_error.append(exc)
        finally:
            with contextlib.suppress(BrokenPipeError):
                stdin.close()

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    lines: deque[str] = deque(maxlen=4000)
    try:
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            lines.append(line)
            if line.strip():
                print(f"{stage} | {line}", flush=True)
        code = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    sender.join()
    if send_error:
        raise send_error[0]
    if code != 0:
        if any("is not a docker command" in line for line in lines):
            raise EngineError("the docker buildx plugin is not installed")
        raise BuildError(summarize_build_failure(stage, list(lines)))
    return list(lines)
