"""The pipeline drives a remote Docker engine (DOCKER_HOST=tcp://...): contexts are uploaded, the
binary comes back over the API, nothing assumes a shared filesystem. The test starts a second
engine with its own data root and bridge, reachable only on loopback."""

from __future__ import annotations

import shutil
from pathlib import Path

import docker
import pytest
from helpers import AppRepo, make_workspace, remove_images


def test_whole_pipeline_on_a_remote_engine_gives_the_same_binary(
    tmp_path: Path, app_repo: AppRepo, engine: docker.DockerClient, remote_engine: str
) -> None:
    local = make_workspace(tmp_path / "local", app_repo, engine)
    remote = make_workspace(tmp_path / "remote", app_repo, engine)
    try:
        local.doit()
        run = remote.doit(env={"DOCKER_HOST": remote_engine})
        assert run.executed == ["archive", "base", "embed", "extract", "runtime"], run.out
        # Same inputs, same keys. (The fixture's binary is a tar of the app whose folder mtimes
        # are the build's time, so bytes differ between any two cold builds.)
        assert remote.binary.stat().st_size == local.binary.stat().st_size

        assert b"hello v1" in remote.binary.read_bytes()
        # The base key is pure content, so it is the same on both engines; embed and runtime
        # are keyed on the base image's ID, which each engine mints for itself.
        remote_client = docker.DockerClient(base_url=remote_engine)
        here = engine.images.get(f"{local.image('base')}:latest").labels["io.durango.key"]
        there = remote_client.images.get(f"{remote.image('base')}:latest")
        assert there.labels["io.durango.key"] == here
        assert remote.doit(env={"DOCKER_HOST": remote_engine}).executed == []
    finally:
        remove_images(engine, local.prefix)


@pytest.mark.parametrize("with_registry", [False, True], ids=["no-registry", "registry"])
def test_a_fresh_ci_runner_with_restored_state(
    tmp_path: Path,
    app_repo: AppRepo,
    engine: docker.DockerClient,
    remote_engine: str,
    registry: str,
    with_registry: bool,
) -> None:
    """What a new CI runner rebuilds when .doit.db and .durango/ come back from the cache: a new
    checkout, a second engine with nothing built. Image IDs belong to an engine and package/
    and the binary are not cached, so without the registry every stage runs again; with it,
    every image stage is pulled by its key and nothing is built."""
    extra = f'registry = "{registry}"' if with_registry else ""
    first = make_workspace(tmp_path / "first", app_repo, engine, extra)
    fresh = make_workspace(tmp_path / "fresh", app_repo, engine, extra)
    try:
        first.doit()
        shutil.copy(first.root / "pyproject.toml", fresh.root / "pyproject.toml")  # same names
        shutil.copy(first.root / ".doit.db", fresh.root / ".doit.db")
        shutil.copytree(first.root / ".durango", fresh.root / ".durango")
        run = fresh.doit(env={"DOCKER_HOST": remote_engine})
        assert run.executed == ["archive", "base", "embed", "extract", "runtime"], run.out
        built = [stage for stage in ("base", "embed", "runtime") if f"{stage}: building" in run.out]
        pulled = [stage for stage in ("base", "embed", "runtime") if f"{stage}: pulled" in run.out]
        if with_registry:
            assert (built, pulled) == ([], ["base", "embed", "runtime"])
            assert fresh.binary.read_bytes() == first.binary.read_bytes()  # the same image
        else:
            assert (built, pulled) == (["base", "embed", "runtime"], [])
    finally:
        remove_images(engine, first.prefix)
        if with_registry:
            remove_images(engine, registry)
