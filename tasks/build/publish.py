"""publish: the runtime image pushed with human tags, the source's tag (or short commit) and
latest, to the registry the settings name. Always runs; builds what is stale first."""

from __future__ import annotations

import git

from tasks.build import runtime
from tasks.build.image_stage import built_image_id, registry_cache
from tasks.build.registry import RegistryCache
from tasks.build.source import resolve_source
from tasks.core.errors import ConfigError
from tasks.core.pipeline import Pipeline, TaskDict, command_task


def publish(pipe: Pipeline) -> None:
    """Push the runtime image with human tags: the source's tag (or short commit) and latest."""
    if registry_cache(pipe) is None:
        raise ConfigError("publish needs a registry: set registry=host/team (docker login first)")
    source = resolve_source(pipe)
    try:
        human = source.repo.git.describe("--tags", "--exact-match", source.commit)
    except git.GitCommandError:
        human = source.commit[:12]
    image_id = built_image_id(pipe.engine, runtime.inputs(pipe))
    required = RegistryCache(pipe.engine, pipe.settings.registry, required=True)
    required.push("publish", pipe.settings.runtime_image, image_id, [human, "latest"])


def task(pipe: Pipeline) -> TaskDict:
    doc = "push the runtime image to the registry as <source tag or commit> and latest"
    return command_task(pipe, doc, lambda: publish(pipe), task_dep=["runtime"])
