"""Stage 2, base: the slow builder image (PHP, toolchains), built without the app.

Key: the Dockerfile, its build args, the images its FROM lines name (by ID), and the files of
builder/ it copies in (.dockerignore applies). The context holds nothing else, so editing a file
only the embed stage reads does not invalidate this 15-to-30-minute build.
"""

from __future__ import annotations

from tasks.build.content import ContextFile, context_files, file_digests, read_by
from tasks.build.image_stage import ImageInputs, base_image_ids, built_image_id, stage_task
from tasks.core.errors import BuildError
from tasks.core.pipeline import Pipeline, TaskDict


def builder_files(pipe: Pipeline, dockerfile: str) -> list[ContextFile]:
    """builder/ as a build context for one stage: only the files its Dockerfile copies in.

    The context sent to the engine is exactly this list, so the stage cannot read a file its
    key does not cover, and editing a file only another stage copies does not make it stale.
    """
    files = [
        f
        for f in context_files(pipe.settings.builder_dir, dockerfile)
        if f.arcname == dockerfile
        or not (f.arcname.endswith(".Dockerfile") or f.arcname.startswith("package/"))
    ]
    return read_by((pipe.settings.builder_dir / dockerfile).read_text(), files)


def inputs(pipe: Pipeline) -> ImageInputs:
    def compute() -> ImageInputs:
        settings = pipe.settings
        if not (settings.builder_dir / settings.base_dockerfile).is_file():
            raise BuildError(f"base: {settings.builder_dir / settings.base_dockerfile} is missing")
        files = builder_files(pipe, settings.base_dockerfile)
        text = (settings.builder_dir / settings.base_dockerfile).read_text()
        build_args = dict(settings.base_args)
        if settings.php_extensions:  # one setting for every profile's extension list
            names = sorted(set(settings.php_extensions.replace(",", " ").lower().split()))
            build_args["PHP_EXTENSIONS"] = ",".join(names)
        digests = file_digests(files, pipe.hashes)
        upstream = base_image_ids(pipe.engine, text, build_args)
        where = settings.base_image, settings.base_dockerfile
        return ImageInputs("base", *where, files, digests, build_args, upstream)

    result: ImageInputs = pipe.once("base-inputs", compute)
    return result


def image_id(pipe: Pipeline) -> str:
    """The ID of the image this stage's inputs call for (BuildError when not built)."""
    return built_image_id(pipe.engine, inputs(pipe))


DOC = "builder image without the app (key: Dockerfile, build args, builder/ files)"


def task(pipe: Pipeline) -> TaskDict:
    return stage_task(pipe, DOC, lambda: inputs(pipe), [])
