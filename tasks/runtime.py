"""Stage 5, runtime: the small image that runs the binary, from the deployment bundle.

Key: every file of orangescrum-ee/ that its .dockerignore lets through (the binary among them,
by content), the Dockerfile, the runtime base image argument and that image's ID. `.env*` never
enters.
"""

from __future__ import annotations

from typing import Any

import git

from tasks import archive
from tasks.content import context_files, file_digests
from tasks.errors import BuildError, ConfigError
from tasks.images import ImageInputs, base_image_ids, built_image_id, stage_task
from tasks.pipeline import Pipeline, action
from tasks.registry import RegistryCache

DOCKERFILE = "Dockerfile"


def inputs(pipe: Pipeline) -> ImageInputs:
    """Not memoised: extract may replace the binary during the run."""
    settings = pipe.settings
    if not (settings.bundle_dir / DOCKERFILE).is_file():
        raise BuildError(f"runtime: {settings.bundle_dir / DOCKERFILE} is missing")
    files = context_files(settings.bundle_dir, DOCKERFILE)
    build_args = {"RUNTIME_BASE_IMAGE": settings.runtime_base}
    text = (settings.bundle_dir / DOCKERFILE).read_text()
    return ImageInputs(
        stage="runtime",
        name=settings.runtime_image,
        dockerfile=DOCKERFILE,
        files=files,
        digests=file_digests(files, pipe.hashes),
        build_args=build_args,
        upstream=base_image_ids(pipe.engine, text, build_args),
    )


def task(pipe: Pipeline) -> dict[str, Any]:
    return stage_task(
        pipe,
        "runtime image from orangescrum-ee/ (key: binary content, Dockerfile, context)",
        lambda: inputs(pipe),
        ["extract"],
    )


def publish(pipe: Pipeline) -> None:
    """Push the runtime image with human tags: the source's tag (or short commit) and latest."""
    if pipe.registry is None:
        raise ConfigError("publish needs a registry: set registry=host/team (docker login first)")
    source = archive.resolve_source(pipe)
    try:
        human = source.repo.git.describe("--tags", "--exact-match", source.commit)
    except git.GitCommandError:
        human = source.commit[:12]
    image_id = built_image_id(pipe.engine, inputs(pipe))
    required = RegistryCache(pipe.engine, pipe.settings.registry, required=True)
    required.push("publish", pipe.settings.runtime_image, image_id, [human, "latest"])


def publish_task(pipe: Pipeline) -> dict[str, Any]:
    return {
        "doc": "push the runtime image to the registry as <source tag or commit> and latest",
        "actions": [action(pipe, lambda: publish(pipe))],
        "task_dep": ["runtime"],
        "uptodate": [False],
        "verbosity": 2,
    }
