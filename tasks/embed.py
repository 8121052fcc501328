"""Stage 3, embed: the app from package/ built into the binary, on top of the exact base image.

Key: the base image ID, the content of package/, the Dockerfile and its other builder/ files.
The context is builder/ with the app streamed in at package/: no second copy on disk.
"""

from __future__ import annotations

from typing import Any

from tasks import archive, base
from tasks.content import file_digests, tree_files
from tasks.errors import BuildError
from tasks.images import ImageInputs, built_image_id, stage_task
from tasks.pipeline import Pipeline


def inputs(pipe: Pipeline) -> ImageInputs:
    """Not memoised: the base image ID and package/ change during a run."""
    settings = pipe.settings
    if not (settings.builder_dir / settings.embed_dockerfile).is_file():
        raise BuildError(f"embed: {settings.builder_dir / settings.embed_dockerfile} is missing")
    files = base.builder_files(pipe, settings.embed_dockerfile)
    base_inputs = base.inputs(pipe)
    return ImageInputs(
        stage="embed",
        name=settings.embed_image,
        dockerfile=settings.embed_dockerfile,
        files=files,
        digests=file_digests(files, pipe.hashes),
        build_args={**settings.embed_args, "BASE_IMAGE": base_inputs.tag},
        upstream={"base image": base.image_id(pipe), "package": archive.content_key(pipe)},
        extra_files=lambda: tree_files(settings.package_dir, "package"),
    )


def image_id(pipe: Pipeline) -> str:
    return built_image_id(pipe.engine, inputs(pipe))


def task(pipe: Pipeline) -> dict[str, Any]:
    return stage_task(
        pipe,
        "app embedded into the binary (key: base image ID, package/ content, Dockerfile)",
        lambda: inputs(pipe),
        ["archive", "base"],
    )
