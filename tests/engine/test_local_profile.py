"""The local builder profile makes a genuine FrankenPHP from Debian's packages and the Go module
proxy, with the demo app embedded; `doit verify` proves it. An app change only relinks."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import docker
from helpers import (
    LOCAL_IMAGES,
    PHP_EXTENSIONS,
    REPO,
    LocalBuild,
    Workspace,
    demo_app_repo,
    make_local_project,
)


def test_local_profile_builds_a_frankenphp_with_the_configured_php(
    local_build: LocalBuild, tmp_path: Path
) -> None:
    """Observed from the binary itself, not from what verify wrote."""
    binary = local_build.workspace.binary
    version = subprocess.run([str(binary), "version"], capture_output=True, text=True).stdout
    assert version.startswith("FrankenPHP v1.12.7 PHP 8.2.") and "Caddy v2.11.4" in version
    modules = subprocess.run(
        [str(binary), "list-modules"], capture_output=True, text=True, check=True
    ).stdout
    assert "frankenphp" in modules.split()
    probe = tmp_path / "probe.php"
    probe.write_text("<?php echo json_encode([get_loaded_extensions(), PHP_ZTS]);")
    out = subprocess.run([str(binary), "php-cli", str(probe)], capture_output=True, text=True)
    loaded, zts = json.loads(out.stdout)
    loaded = {name.lower() for name in loaded}
    configured = set(PHP_EXTENSIONS.split(",")) - {"opcache"} | {"zend opcache"}
    assert configured <= loaded  # mysqli and pdo_mysql too: the setting chose them
    assert zts == 1
    cake = subprocess.run(
        [str(binary), "php-cli", "bin/cake.php", "version"], capture_output=True, text=True
    )
    assert cake.stdout.strip() == "demo-app 1.0.0", cake.stderr
    # verify is keyed on the binary: a second run does nothing
    assert local_build.workspace.doit("verify").executed == []


def test_an_app_change_is_appended_without_a_link_a_compile_or_an_image_build(
    local_build: LocalBuild, tmp_path: Path, engine: docker.DockerClient
) -> None:
    app = demo_app_repo(tmp_path / "demo-app")
    ws = Workspace(make_local_project(tmp_path / "project", app.path), LOCAL_IMAGES, app, engine)
    ws.doit("verify")
    version = f"1.0.{uuid.uuid4().int % 100000}"  # new content every run
    (app.path / "VERSION").write_text(version + "\n")
    app.commit("bump version")

    started = time.monotonic()
    run = ws.doit("verify")
    seconds = time.monotonic() - started
    assert run.executed == ["archive", "extract", "verify"], run.out
    assert run.uptodate == ["base", "embed"]
    assert not [line for line in run.out.splitlines() if line.startswith(("base | ", "embed | "))]
    assert "= base binary of" in run.out  # the extract stage appended the app
    out = subprocess.run(
        [str(ws.binary), "php-cli", "bin/cake.php", "version"], capture_output=True, text=True
    ).stdout
    assert out.strip() == f"demo-app {version}"
    print(f"app change: archive + extract + verify in {seconds:.1f}s")


def test_builder_compose_file_builds_embed_on_base() -> None:
    """builder/docker-compose.yaml, for builds without doit: each profile's embed service builds
    app-embed.Dockerfile on that profile's base image."""
    config = json.loads(
        subprocess.run(
            ["docker", "compose", "-f", str(REPO / "builder" / "docker-compose.yaml"),
             "--profile", "local", "--profile", "static", "config", "--format", "json"],
            capture_output=True, text=True, check=True,
        ).stdout
    )["services"]  # fmt: skip
    for profile, base_dockerfile in (("local", "base-local.Dockerfile"),
                                     ("static", "base-build.Dockerfile")):  # fmt: skip
        base, embed = config[f"base-{profile}"], config[f"embed-{profile}"]
        assert base["build"]["dockerfile"] == base_dockerfile
        assert embed["build"]["dockerfile"] == "app-embed.Dockerfile"
        assert embed["build"]["args"]["BASE_IMAGE"] == base["image"]
        assert f"base-{profile}" in embed["depends_on"]
