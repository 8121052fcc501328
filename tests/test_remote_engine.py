"""The pipeline drives a remote Docker engine (DOCKER_HOST=tcp://...): contexts are uploaded, the
binary comes back over the API, nothing assumes a shared filesystem. The test starts a second
engine with its own data root and bridge, reachable only on loopback."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from helpers import AppRepo, free_port, make_workspace, remove_images


@pytest.fixture
def remote_engine(
    tmp_path_factory: pytest.TempPathFactory, engine: docker.DockerClient, busybox_image: str
) -> Iterator[str]:
    if shutil.which("dockerd") is None or os.geteuid() != 0:
        pytest.fail("a second engine needs dockerd and root", pytrace=False)
    root = tmp_path_factory.mktemp("engine2")
    bridge = f"durango-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    subprocess.run(["ip", "addr", "add", "172.31.251.1/24", "dev", bridge], check=True)
    subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
    host = f"tcp://127.0.0.1:{free_port()}"
    daemon = subprocess.Popen(
        [
            "dockerd", "--host", host, "--data-root", str(root / "data"),
            "--exec-root", str(root / "exec"), "--pidfile", str(root / "pid"),
            "--bridge", bridge, "--iptables=false", "--ip-masq=false",
            "--containerd-namespace", bridge, "--containerd-plugins-namespace", f"{bridge}p",
        ],
        stdout=(root / "log").open("w"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                remote = docker.DockerClient(base_url=host)
                remote.ping()
                break
            except (docker.errors.DockerException, OSError):
                assert daemon.poll() is None and time.monotonic() < deadline, (
                    root / "log"
                ).read_text()[-2000:]
                time.sleep(0.5)
        remote.images.load(b"".join(engine.images.get(busybox_image).save(named=True)))
        yield host
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
        subprocess.run(["ip", "link", "del", bridge], check=False)
        shutil.rmtree(root, ignore_errors=True)


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
