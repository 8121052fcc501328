"""Stage 5, runtime: the small image that runs the binary, from the deployment bundle.

The context is an allow-list: exactly the files the runtime Dockerfile's COPY/ADD lines name
(the binary among them, by content), never the bundle's env files, tenants, secrets or backups;
a Dockerfile that would copy the whole folder, or one of those, is refused. Key: those files,
the Dockerfile, the runtime base image argument and that image's ID. No digest of a file outside
the allow-list (a secret) ever reaches a key or a label.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

from tasks.build.app import facts, facts_path
from tasks.build.content import ContextFile, context_files, file_digests, read_by
from tasks.build.image_stage import ImageInputs, base_image_ids, stage_task
from tasks.core.errors import BuildError, EngineError
from tasks.core.pipeline import Pipeline, TaskDict
from tasks.formats import app_facts
from tasks.formats.dockerfile import copied_sources

DOCKERFILE = "Dockerfile"
BINARY_LABEL = "io.durango.binary"  # set by the runtime Dockerfile: where the binary is
# What a runtime image must never carry, whatever its Dockerfile says.
NEVER_SENT = (".env", ".env.*", "tenants/*", "secrets/*", "backups/*", "*.pem", "*.key")


def allowed_files(pipe: Pipeline, text: str) -> list[ContextFile]:
    """The files the Dockerfile copies in, and nothing else (BuildError when it asks for the
    whole folder or for a secret)."""
    bundle = pipe.settings.bundle_dir
    sources = copied_sources(text)
    if sources is None or any(s.removeprefix("./") in (".", "", "*") for s in sources):
        raise BuildError(
            f"runtime: {bundle / DOCKERFILE} copies the whole bundle folder; name each file it "
            "needs (the runtime context is an allow-list: env files and secrets never enter it)"
        )
    files = read_by(text, context_files(bundle, DOCKERFILE) + generated_files(pipe))
    secret = [f.arcname for f in files if any(fnmatch.fnmatch(f.arcname, p) for p in NEVER_SENT)]
    if secret:
        raise BuildError(
            f"runtime: {bundle / DOCKERFILE} copies {', '.join(secret)}, which never enters an "
            "image (env files and secrets reach the container at run time)"
        )
    return files


def generated_files(pipe: Pipeline) -> list[ContextFile]:
    """The app's facts in the forms the image reads: the entrypoint's shell, the PHP side's
    JSON, the health path the image's health check asks."""
    found = facts(pipe)
    made = {
        "app-facts.sh": app_facts.shell(found),
        "app-facts.json": app_facts.json_form(found),
        "health-path": found.health_path.encode(),
    }
    return [ContextFile(name, Path(os.devnull), data) for name, data in made.items()]


def inputs(pipe: Pipeline) -> ImageInputs:
    """Not memoised: extract may replace the binary during the run."""
    settings = pipe.settings
    if not (settings.bundle_dir / DOCKERFILE).is_file():
        raise BuildError(f"runtime: {settings.bundle_dir / DOCKERFILE} is missing")
    text = (settings.bundle_dir / DOCKERFILE).read_text()
    files = allowed_files(pipe, text)
    build_args = {"RUNTIME_BASE_IMAGE": settings.runtime_base}
    digests = file_digests(files, pipe.hashes)
    upstream = base_image_ids(pipe.engine, text, build_args)
    return ImageInputs(
        "runtime", settings.runtime_image, DOCKERFILE, files, digests, build_args, upstream,
        check=lambda image_id: runs_the_binary(pipe, image_id),
    )  # fmt: skip


# The binary's path comes as $0: a missing file is said as such, not taken for a missing library.
RUN_BINARY = 'if [ ! -e "$0" ]; then echo "no file $0"; exit 3; fi; exec "$0" version'


def runs_the_binary(pipe: Pipeline, image_id: str) -> None:
    """The new image can run the binary where its label says it is: every library it needs is
    there (a Debian-linked binary on a bare base fails here, with the loader's words, not at the
    first deployment)."""
    found = pipe.engine.image(image_id)
    binary = (found.labels if found else {}).get(BINARY_LABEL, "")
    if not binary:
        raise BuildError(
            f"runtime: the image sets no {BINARY_LABEL} label; the runtime Dockerfile must say "
            "where it puts the binary (LABEL io.durango.binary=/usr/local/bin/orangescrum-ee)"
        )
    try:
        pipe.containers.run_once(image_id, ["sh", "-c", RUN_BINARY, binary], {})
        check_programs(pipe, image_id)
    except EngineError as exc:
        if f"no file {binary}" in str(exc):
            raise BuildError(
                f"runtime: the image has no binary at {binary} (its {BINARY_LABEL} label); "
                "the runtime Dockerfile copies it elsewhere, or not at all"
            ) from None
        raise BuildError(
            f"runtime: the image built on {pipe.settings.runtime_base} cannot run the binary "
            f"({exc}); pick a runtime_base that has what `doit verify` lists as its linkage"
        ) from None


# Each program the app runs, found or not: `name=path` or `name=`.
FIND_PROGRAMS = 'for p in "$@"; do printf "%s=%s\\n" "$p" "$(command -v "$p" || true)"; done'


def programs_in(pipe: Pipeline, image_id: str) -> dict[str, str]:
    """Where the image has each program the app's facts say it runs ("" when it has not)."""
    wanted = list(facts(pipe).programs)
    if not wanted:
        return {}
    out = pipe.containers.run_once(image_id, ["sh", "-c", FIND_PROGRAMS, "sh", *wanted], {})
    found = dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)
    return {name: found.get(name, "") for name in wanted}


def check_programs(pipe: Pipeline, image_id: str) -> None:
    missing = [name for name, where in programs_in(pipe, image_id).items() if not where]
    if missing:
        raise BuildError(
            f"runtime: the image built on {pipe.settings.runtime_base} lacks {', '.join(missing)}, "
            f"which the app runs ({facts_path(pipe)}: programs.exec); install them in the "
            "runtime Dockerfile (debian-app-packages.txt) or remove them from the facts knowingly"
        )


DOC = "runtime image from orangescrum-ee/ (key: binary content, Dockerfile, copied files)"


def task(pipe: Pipeline) -> TaskDict:
    return stage_task(pipe, DOC, lambda: inputs(pipe), ["extract"])
