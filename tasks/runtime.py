"""Stage 5, runtime: the small image that runs the binary, from the deployment bundle.

Key: every file of orangescrum-ee/ that its .dockerignore lets through (the binary among them,
by content), the Dockerfile, the runtime base image argument and that image's ID. `.env*` never
enters.
"""

from __future__ import annotations

from tasks.content import context_files, file_digests
from tasks.errors import BuildError
from tasks.images import ImageInputs, base_image_ids, stage_task
from tasks.pipeline import Pipeline, TaskDict

DOCKERFILE = "Dockerfile"


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
        "runtime", settings.runtime_image, DOCKERFILE, files, digests, build_args, upstream
    )


DOC = "runtime image from orangescrum-ee/ (key: binary content, Dockerfile, context)"


def task(pipe: Pipeline) -> TaskDict:
    return stage_task(pipe, DOC, lambda: inputs(pipe), ["extract"])
