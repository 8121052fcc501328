"""The local-static profile: a fully static FrankenPHP (PHP 8.4, opcache linked in) built here
from Debian's packages and sources, on the lean runtime image (no package manager, no shared
libraries for the binary), serving the demo app and the CakePHP fixture through the bundle
against a real PostgreSQL. And a runtime base that cannot run a binary fails the build."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
from helpers import (
    REPO,
    AppRepo,
    LocalBuild,
    Stack,
    Workspace,
    assert_migrated_and_seeded,
    cakephp_app_repo,
    demo_app_repo,
    http,
    make_local_project,
    sql,
    wait_healthy,
)

STATIC = "durango-ci-static"
LEAN = "durango-local/lean:1"


@dataclass
class StaticBuild:
    workspace: Workspace
    runtime_image: str
    manifest: dict


def static_build(
    root: Path,
    app: AppRepo,
    prefix: str,
    engine: docker.DockerClient,
    extra: str = "",
    facts: Path | None = None,
) -> StaticBuild:
    """`app` built with the local-static profile: verified binary, runtime image."""
    project = make_local_project(root, app.path, prefix, extra, builder="local-static", facts=facts)
    ws = Workspace(project, prefix, app, engine)
    ws.doit("verify")
    ws.doit("runtime")
    manifest = json.loads(ws.binary.with_name("orangescrum-ee.manifest.json").read_text())
    return StaticBuild(ws, f"{prefix}-runtime:latest", manifest)


@pytest.fixture(scope="session")
def demo_static(
    tmp_path_factory: pytest.TempPathFactory, engine: docker.DockerClient
) -> StaticBuild:
    subprocess.run([str(REPO / "scripts" / "make-local-images.sh"), "lean"], check=True)
    tmp = tmp_path_factory.mktemp("static")
    app = demo_app_repo(tmp / "demo-app")
    return static_build(tmp / "project", app, STATIC, engine)


def test_the_local_static_binary_has_no_dynamic_section(demo_static: StaticBuild) -> None:
    binary = demo_static.workspace.binary
    assert demo_static.manifest["linkage"] == {"static": True, "interpreter": "", "needed": []}
    readelf = subprocess.run(["readelf", "-d", str(binary)], capture_output=True, text=True)
    assert "There is no dynamic section in this file" in readelf.stdout
    assert demo_static.manifest["versions"]["php"].startswith("8.4.")
    probe = binary.parent / "probe.php"
    probe.write_text(
        "<?php echo json_encode([extension_loaded('Zend OPcache'), php_ini_loaded_file()]);"
    )
    try:
        out = subprocess.run([str(binary), "php-cli", str(probe)], capture_output=True, text=True)
    finally:
        probe.unlink()
    opcache, ini = json.loads(out.stdout)
    assert opcache is True and ini.endswith("/.frankenphp/php.ini")
    assert not (Path(ini).parent / "ext").exists()  # opcache is linked in, not a .so beside it


def test_the_lean_runtime_image_is_the_binary_plus_little(
    demo_static: StaticBuild, engine: docker.DockerClient
) -> None:
    image = engine.images.get(demo_static.runtime_image)
    size = int(image.attrs["Size"])
    binary = demo_static.workspace.binary.stat().st_size
    assert size <= binary + 40_000_000, (size, binary)
    assert engine.containers.run(demo_static.runtime_image, ["id", "-u"], entrypoint=[],
                                 remove=True).decode().strip() == "10001"  # fmt: skip


def test_the_demo_app_migrates_seeds_and_serves_from_the_lean_image(
    demo_static: StaticBuild, stack: Stack
) -> None:
    stack.image = demo_static.runtime_image
    db = stack.database()
    app, port = stack.app()
    wait_healthy(app, port)
    assert sql(db, "SELECT count(*) FROM actions") == "12"
    assert sql(db, "SELECT state FROM durango_seed") == "done"
    status, body = http(port, "/api/actions", {"name": "from-static"})
    assert status == 201 and json.loads(body)["id"] == 13


def test_the_cakephp_app_migrates_seeds_and_serves_from_the_lean_image(
    demo_static: StaticBuild, stack: Stack, tmp_path: Path, cakephp_fixture: Path,
    engine: docker.DockerClient,
) -> None:  # fmt: skip
    app = cakephp_app_repo(tmp_path / "cake", cakephp_fixture)
    extra = (
        f'composer_repository = "{cakephp_fixture / "composer-repo"}"\n'
        'composer_packagist = false\nembed_network = "none"\n'
    )
    facts = REPO / "tests" / "fixtures" / "cakephp-app.toml"
    build = static_build(tmp_path / "project", app, f"{STATIC}-cake", engine, extra, facts)
    stack.image = build.runtime_image
    db = stack.database()
    container, port = stack.app()
    wait_healthy(container, port)
    assert http(port, "/home/healthcheck") == (200, '{"status":"ok","database":"up"}')
    assert_migrated_and_seeded(db)


def test_a_runtime_base_without_the_binarys_libraries_fails_the_build(
    local_build: LocalBuild, demo_static: StaticBuild
) -> None:
    """The Debian-linked binary on the lean base: the runtime stage says it cannot run it."""
    ws = local_build.workspace
    misfit = [f"runtime_base={LEAN}", "runtime_image=durango-ci-lean-misfit"]
    run = ws.doit("runtime", *misfit, check=False)
    assert run.code != 0
    assert f"the image built on {LEAN} cannot run the binary" in run.out
    assert "error while loading shared libraries" in run.out
    assert "Traceback" not in run.out
    again = ws.doit("info", "runtime", *misfit, check=False)
    assert "no durango-ci-lean-misfit image built yet" in again.out  # the failed image is gone
