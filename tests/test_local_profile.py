"""The local builder profile makes a genuine FrankenPHP from Debian's packages and the Go module
proxy, with the demo app embedded; `doit verify` proves it. An app change only relinks."""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from pathlib import Path

import docker
from helpers import LOCAL_IMAGES, REPO, LocalBuild, Workspace, demo_app_repo, make_local_project


def test_local_profile_builds_a_frankenphp_that_verify_accepts(local_build: LocalBuild) -> None:
    manifest = local_build.manifest
    binary = local_build.workspace.binary
    assert "FrankenPHP" in manifest["versions"]["frankenphp"]
    assert manifest["versions"]["php"].startswith("8.2.")
    assert manifest["versions"]["php_zts"] is True
    for extension in ("pdo_pgsql", "pgsql", "intl", "mbstring", "redis", "sodium", "zip", "gd"):
        assert extension in manifest["extensions"]
    assert manifest["http_check"]["status"] in (200, 503)
    assert manifest["size"] == binary.stat().st_size > 10_000_000
    modules = subprocess.run(
        [str(binary), "list-modules"], capture_output=True, text=True, check=True
    ).stdout
    assert "frankenphp" in modules.split()
    version = subprocess.run(
        [str(binary), "php-cli", "bin/cake.php", "version"], capture_output=True, text=True
    )
    assert version.stdout.strip() == "demo-app 1.0.0", version.stderr
    # verify is keyed on the binary: a second run does nothing
    assert local_build.workspace.doit("verify").executed == []


def test_app_change_relinks_without_rebuilding_php(
    local_build: LocalBuild, tmp_path: Path, engine: docker.DockerClient
) -> None:
    app = demo_app_repo(tmp_path / "demo-app")
    ws = Workspace(make_local_project(tmp_path / "project", app.path), LOCAL_IMAGES, app, engine)
    version = f"1.0.{uuid.uuid4().int % 100000}"  # new content every run: a real relink
    (app.path / "VERSION").write_text(version + "\n")
    app.commit("bump version")

    started = time.monotonic()
    run = ws.doit("verify")
    seconds = time.monotonic() - started
    try:
        assert run.executed == ["archive", "embed", "extract", "verify"], run.out
        assert run.uptodate == ["base"]
        embed_log = [line for line in run.out.splitlines() if line.startswith("embed | ")]
        assert any("relink:" in line for line in embed_log)
        assert not any("php-src" in line or "configure" in line for line in embed_log)
        out = subprocess.run(
            [str(ws.binary), "php-cli", "bin/cake.php", "version"], capture_output=True, text=True
        ).stdout
        assert out.strip() == f"demo-app {version}"
        print(f"app change: embed + extract + verify in {seconds:.0f}s")
    finally:
        # this content is never built again: drop its embed image so runs do not pile them up
        with contextlib.suppress(docker.errors.NotFound):
            relinked = engine.images.get(f"{LOCAL_IMAGES}-embed:latest")
            engine.images.remove(str(relinked.id), force=True)


def test_builder_compose_file_builds_the_same_dockerfiles() -> None:
    config = subprocess.run(
        [
            "docker",
            "compose",
            "-f",
            str(REPO / "builder" / "docker-compose.yaml"),
            "--profile",
            "local",
            "--profile",
            "static",
            "config",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for dockerfile in ("base-local.Dockerfile", "base-build.Dockerfile", "app-embed.Dockerfile"):
        assert dockerfile in config
