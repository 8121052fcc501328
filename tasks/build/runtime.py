"""Stage 5, runtime: the small image that runs the binary, from the deployment bundle.

Key: every file of orangescrum-ee/ that its .dockerignore lets through (the binary among them,
by content), the Dockerfile, the runtime base image argument and that image's ID. `.env*` never
enters.
"""

from __future__ import annotations

from tasks.build.content import context_files, file_digests
from tasks.build.image_stage import ImageInputs, base_image_ids, stage_task
from tasks.core.errors import BuildError, EngineError
from tasks.core.pipeline import Pipeline, TaskDict

DOCKERFILE = "Dockerfile"
BINARY_IN_IMAGE = "/usr/local/bin/orangescrum-ee"


def inputs(pipe: Pipeline) -> ImageInputs:
    """Not memoised: extract may replace the binary during the run."""
    settings = pipe.settings
    if not (settings.bundle_dir / DOCKERFILE).is_file():
        raise BuildError(f"runtime: {settings.bundle_dir / DOCKERFILE} is missing")
    files = context_files(settings.bundle_dir, DOCKERFILE)
    build_args = {"RUNTIME_BASE_IMAGE": settings.runtime_base}
    text = (settings.bundle_dir / DOCKERFILE).read_text()
    digests = file_digests(files, pipe.hashes)
    upstream = base_image_ids(pipe.engine, text, build_args)
    return ImageInputs(
        "runtime", settings.runtime_image, DOCKERFILE, files, digests, build_args, upstream,
        check=lambda image_id: runs_the_binary(pipe, image_id),
    )  # fmt: skip


def runs_the_binary(pipe: Pipeline, image_id: str) -> None:
    """The new image can run the binary: every library it needs is there (a Debian-linked binary
    on a bare base fails here, with the loader's words, not at the first deployment)."""
    try:
        pipe.containers.run_once(image_id, [BINARY_IN_IMAGE, "version"], {})
    except EngineError as exc:
        raise BuildError(
            f"runtime: the image built on {pipe.settings.runtime_base} cannot run the binary "
            f"({exc}); pick a runtime_base that has what `doit verify` lists as its linkage"
        ) from None


DOC = "runtime image from orangescrum-ee/ (key: binary content, Dockerfile, context)"


def task(pipe: Pipeline) -> TaskDict:
    return stage_task(pipe, DOC, lambda: inputs(pipe), ["extract"])
