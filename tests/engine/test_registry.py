"""A registry as the team's build cache: machine A builds and pushes, machine B (same inputs,
no local images) pulls instead of building, and a registry that is down never fails a build.
The registry is Debian's docker-registry on loopback."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from helpers import AppRepo, Workspace, free_port, git, make_workspace, remove_images


@pytest.fixture
def configured(
    tmp_path: Path, app_repo: AppRepo, engine: docker.DockerClient, busybox_image: str
) -> Iterator[Callable[..., Workspace]]:
    """Fixture workspaces with extra [tool.durango] lines; their images go at teardown."""
    made: list[Workspace] = []

    def make(extra: str = "") -> Workspace:
        made.append(make_workspace(tmp_path / str(len(made)), app_repo, engine, extra))
        return made[-1]

    yield make
    for ws in made:
        remove_images(engine, ws.prefix)


def test_second_machine_pulls_instead_of_building(
    engine: docker.DockerClient, registry: str, configured: Callable[..., Workspace]
) -> None:
    ws = configured(f'registry = "{registry}"')
    first = ws.doit()
    assert f"pushed {registry}/{ws.image('base')}:" in first.out
    pushed = {s: engine.images.get(f"{ws.image(s)}:latest").id for s in ("base", "runtime")}

    remove_images(engine, ws.prefix)  # machine B: same checkout, no images
    second = ws.doit()

    assert "building" not in second.out, second.out
    assert f"base: pulled {registry}/{ws.image('base')}:" in second.out
    for stage, image_id in pushed.items():
        assert engine.images.get(f"{ws.image(stage)}:latest").id == image_id
    assert ws.doit().executed == []


def test_registry_down_builds_locally_and_says_so_once(
    configured: Callable[..., Workspace],
) -> None:
    down = f"127.0.0.1:{free_port()}/team"
    ws = configured(f'registry = "{down}"')
    run = ws.doit()
    assert run.executed == ["archive", "base", "embed", "extract", "runtime"]
    assert run.out.count(f"registry cache {down} unreachable") == 1, run.out


def test_registry_required_turns_a_failed_push_into_a_failure(
    configured: Callable[..., Workspace],
) -> None:
    down = f"127.0.0.1:{free_port()}/team"
    extra = f'registry = "{down}"\nregistry_required = "yes"'
    ws = configured(extra)
    run = ws.doit(check=False)
    assert run.code != 0
    assert "durango: base failed:" in run.out and "Traceback" not in run.out


def test_publish_pushes_the_runtime_image_with_human_tags(
    app_repo: AppRepo, registry: str, configured: Callable[..., Workspace]
) -> None:
    ws = configured(f'registry = "{registry}"')
    ws.doit("publish")
    host, team = registry.split("/")
    url = f"http://{host}/v2/{team}/{ws.image('runtime')}/tags/list"
    commit = git(app_repo.path, "rev-parse", "HEAD")
    tags = json.loads(urllib.request.urlopen(url).read())["tags"]
    assert commit[:12] in tags and "latest" in tags

    git(app_repo.path, "tag", "v2.1")
    ws.doit("publish")
    assert "v2.1" in json.loads(urllib.request.urlopen(url).read())["tags"]


def test_publish_without_a_registry_is_one_clear_error(
    configured: Callable[..., Workspace],
) -> None:
    ws = configured()
    run = ws.doit("publish", check=False)
    assert run.code != 0 and "publish needs a registry" in run.out
    assert "Traceback" not in run.out
